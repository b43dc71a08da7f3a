"""Talking to a hardware worker through the channel layer; the database holds the request itself."""
import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)


def worker_group(instrument_id: int) -> str:
    return f"hardware-{instrument_id}"


def live_group(instrument_id: int) -> str:
    return f"live-{instrument_id}"


def notify_worker(instrument_id: int | None, message: dict) -> None:
    """Wake the instrument's worker (a hint: it also polls the database, so a lost message costs only time)."""
    if instrument_id is None:
        return
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(worker_group(instrument_id), {"type": "hardware.command", **message})
    except Exception:
        log.warning("could not notify the worker of instrument %s", instrument_id, exc_info=True)
