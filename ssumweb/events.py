"""The one way events leave a service: persisted with a per-topic seq, sent after commit.

A topic names one object ("scan.12"); its channel-layer group carries the same name with the
dot replaced (group names allow only a few characters). Events are kept, bounded per topic,
so a browser that reconnects with ?after=<seq> gets exactly what it missed.
"""
from __future__ import annotations

import asyncio
import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import IntegrityError, transaction
from django.db.models import Max

from .models import Event

log = logging.getLogger(__name__)

KEEP_PER_TOPIC = 2000


def topic_for(kind: str, object_id: int) -> str:
    return f"{kind}.{object_id}"


def group_for(topic: str) -> str:
    return "events-" + topic.replace(".", "-")


def publish(topic: str, type: str, **payload) -> Event:
    """Persist one event and send it to the topic's group once the surrounding transaction commits."""
    for _attempt in range(5):
        try:
            with transaction.atomic():
                last = Event.objects.filter(topic=topic).aggregate(m=Max("seq"))["m"] or 0
                event = Event.objects.create(topic=topic, seq=last + 1, type=type, payload=payload)
            break
        except IntegrityError:  # two publishers raced for the same seq: take the next one
            continue
    else:  # pragma: no cover - needs five consecutive races
        raise RuntimeError(f"could not allocate an event seq for {topic}")
    if event.seq % 200 == 0:
        Event.objects.filter(topic=topic, seq__lte=event.seq - KEEP_PER_TOPIC).delete()
    message = event.as_message()
    transaction.on_commit(lambda: send_to_group(topic, message))
    return event


def send_to_group(topic: str, message: dict) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    envelope = {"type": "event.message", "event": message}
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is not None:  # called from code running inside an event loop: schedule, don't block it
        loop.create_task(layer.group_send(group_for(topic), envelope))
        return
    try:
        async_to_sync(layer.group_send)(group_for(topic), envelope)
    except Exception:  # a full or unreachable layer must not undo a committed domain change
        log.warning("could not send %s event for %s", message.get("type"), topic, exc_info=True)


def events_after(topic: str, after: int, limit: int = 1000) -> list[dict]:
    return [e.as_message() for e in Event.objects.filter(topic=topic, seq__gt=after).order_by("seq")[:limit]]
