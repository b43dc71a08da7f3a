"""Live camera view: latest-frame semantics with client acknowledgement.

The worker JPEG-encodes each preview once and sends it to the instrument's live group. Each
consumer keeps only the newest frame and sends it when the client has acked the previous one,
so a slow or stalled client never grows server memory and always sees the newest frame.
Each binary message is an 8-byte big-endian seq, an 8-byte float64 capture time, then the JPEG.
"""
from __future__ import annotations

import asyncio
import struct

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from ssumweb.access import role_in
from ssumweb.models import ROLE_RANK, Role

from .control import live_group, worker_group

HEADER = struct.Struct(">Qd")

_serving_loop: asyncio.AbstractEventLoop | None = None


def serving_loop() -> asyncio.AbstractEventLoop | None:
    """The running event loop live viewers last connected on in this process (daphne's), if any.

    A plain thread that sends into the in-memory channel layer must send on this loop: the layer's
    queues are asyncio objects of this loop, and a put from another loop (async_to_sync) neither
    is thread-safe nor wakes this loop, so the frame waits for unrelated I/O (hundreds of ms)."""
    loop = _serving_loop
    return loop if loop is not None and loop.is_running() and not loop.is_closed() else None


@database_sync_to_async
def instrument_role(user, pk: int):
    from .models import Instrument

    project_id = Instrument.objects.filter(pk=pk).values_list("project_id", flat=True).first()
    return None if project_id is None else role_in(user, project_id)


class LiveViewConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        global _serving_loop
        _serving_loop = asyncio.get_running_loop()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        self.instrument_id = int(self.scope["url_route"]["kwargs"]["pk"])
        role = await instrument_role(user, self.instrument_id)
        if role is None:
            await self.close(code=4404)
            return
        self.latest: bytes | None = None
        self.credit = 1  # at most one frame in flight per client
        self.group = live_group(self.instrument_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        # Every member watches (a running scan's frames, a view an operator turned on); only an operator's
        # page turns the camera on, as POST /api/instruments/<id>/live/ lets only operators.
        if ROLE_RANK[role] >= ROLE_RANK[Role.OPERATOR]:
            await self.channel_layer.group_send(worker_group(self.instrument_id),
                                                {"type": "hardware.command", "command": "live", "on": True})

    async def disconnect(self, code):
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        if text_data == "ack":
            self.credit = 1
            await self._flush()

    async def live_frame(self, event):
        self.latest = HEADER.pack(event["seq"], event["t"]) + event["jpeg"]  # overwrite: older frames are dropped
        await self._flush()

    async def _flush(self):
        if self.credit and self.latest is not None:
            self.credit, frame, self.latest = 0, self.latest, None
            await self.send(bytes_data=frame)
