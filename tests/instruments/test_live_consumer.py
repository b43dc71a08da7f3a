"""Live camera view: latest frame per client with acks, so a stalled viewer costs one frame of memory."""
import asyncio
import struct

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from instruments.control import live_group, worker_group
from instruments.models import Instrument
from tests.ssumweb.test_consumers import communicator

pytestmark = pytest.mark.usefixtures("close_thread_connections")

HEADER = struct.Struct(">Qd")


def frame(seq: int) -> dict:
    return {"type": "live.frame", "jpeg": b"\xff\xd8" + bytes([seq % 256]) * 100, "seq": seq, "t": 1000.0 + seq}


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_fast_clients_get_the_newest_frame_and_a_stalled_one_holds_only_one(project, viewer, outsider):
    instrument = await sync_to_async(Instrument.objects.create)(project=project, name="sim")
    path = f"/ws/instruments/{instrument.pk}/live/"
    denied = await sync_to_async(communicator)(path, outsider)
    assert (await denied.connect())[0] is False
    clients = [await sync_to_async(communicator)(path, viewer) for _ in range(3)]
    for client in clients:
        assert (await client.connect())[0]
    fast, slow, stalled = clients
    layer = get_channel_layer()
    received = {id(fast): [], id(slow): []}
    for seq in range(1, 41):
        await layer.group_send(live_group(instrument.pk), frame(seq))
        await asyncio.sleep(0.005)
        for client, acks_every in ((fast, 1), (slow, 8)):
            if seq % acks_every == 0 and await _drain(client, received[id(client)]):
                await client.send_to(text_data="ack")
    await asyncio.sleep(0.1)
    for client in (fast, slow):
        await _drain(client, received[id(client)])
    seqs = {key: [HEADER.unpack(m[:HEADER.size])[0] for m in messages] for key, messages in received.items()}
    assert seqs[id(fast)][-1] == 40 and len(seqs[id(fast)]) >= 30          # keeps up, ends on the newest
    assert seqs[id(slow)] == sorted(seqs[id(slow)]) and len(seqs[id(slow)]) <= 7  # skips, never replays old ones
    assert seqs[id(slow)][-1] == 40                                          # and still sees the newest
    # The stalled client never acked: it was sent exactly one frame, and nothing more piled up for it.
    first = await stalled.receive_from(timeout=1)
    assert HEADER.unpack(first[:HEADER.size])[0] == 1
    assert await stalled.receive_nothing(timeout=0.2)
    for client in clients:
        await client.disconnect()


async def _drain(client, into: list) -> bool:
    got = False
    while not await client.receive_nothing(timeout=0.01):
        into.append(await client.receive_from())
        got = True
    return got


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_viewer_watches_but_only_an_operator_turns_the_camera_on(project, viewer, operator):
    instrument = await sync_to_async(Instrument.objects.create)(project=project, name="sim")
    layer = get_channel_layer()
    worker = await layer.new_channel()
    await layer.group_add(worker_group(instrument.pk), worker)
    path = f"/ws/instruments/{instrument.pk}/live/"
    watcher = await sync_to_async(communicator)(path, viewer)
    assert (await watcher.connect())[0]
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive(worker), timeout=0.2)  # the viewer's page sent the worker nothing
    await layer.group_send(live_group(instrument.pk), frame(1))
    assert HEADER.unpack((await watcher.receive_from(timeout=1))[:HEADER.size])[0] == 1  # yet sees the frames
    driver = await sync_to_async(communicator)(path, operator)
    assert (await driver.connect())[0]
    assert await asyncio.wait_for(layer.receive(worker), timeout=1) == {
        "type": "hardware.command", "command": "live", "on": True}
    for client in (watcher, driver):
        await client.disconnect()
