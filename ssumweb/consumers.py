"""Event streams over websockets: one consumer for every kind of object that publishes events.

Connect to /ws/<kind>/<id>/?after=<seq>: the consumer checks the user may see the object, joins
its group, replays what was persisted after `seq`, then forwards new events, never one twice.
"""
from __future__ import annotations

from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.apps import apps

from . import events
from .access import role_in

# URL kind → (model label, topic kind)
EVENT_SOURCES = {
    "scans": ("imaging.Scan", "scan"),
    "mosaics": ("imaging.Mosaic", "mosaic"),
    "registrations": ("imaging.Registration", "registration"),
    "pair-sets": ("imaging.PairSet", "pairset"),
    "training-runs": ("mlcore.TrainingRun", "trainingrun"),
    "translations": ("mlcore.Translation", "translation"),
    "instruments": ("instruments.Instrument", "instrument"),
    "demo-runs": ("ssumweb.DemoRun", "demorun"),
}

CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404


@database_sync_to_async
def visible_project_role(user, model_label: str, pk: int) -> str | None:
    from .api import project_id_of

    model = apps.get_model(model_label)
    obj = model.objects.filter(pk=pk).first()
    return None if obj is None else role_in(user, project_id_of(obj))


def after_from(scope) -> int:
    values = parse_qs(scope.get("query_string", b"").decode()).get("after", ["0"])
    try:
        return max(0, int(values[0]))
    except ValueError:
        return 0


class EventConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        kind, pk = self.scope["url_route"]["kwargs"]["kind"], int(self.scope["url_route"]["kwargs"]["pk"])
        source = EVENT_SOURCES.get(kind)
        if source is None or await visible_project_role(user, source[0], pk) is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.topic = events.topic_for(source[1], pk)
        self.group = events.group_for(self.topic)
        self.last_seq = after_from(self.scope)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        for message in await database_sync_to_async(events.events_after)(self.topic, self.last_seq):
            await self._send_once(message)

    async def disconnect(self, code):
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        """Clients only listen; whatever they send is ignored (a message that was not JSON crashed the consumer)."""

    async def event_message(self, message):
        await self._send_once(message["event"])

    async def _send_once(self, event: dict) -> None:
        if event["seq"] > self.last_seq:
            self.last_seq = event["seq"]
            await self.send_json(event)
