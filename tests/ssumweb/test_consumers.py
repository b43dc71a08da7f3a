"""Websockets through the real ASGI stack: origin check, session auth, project scoping, replay by seq."""
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore

from imaging.models import Sample
from imaging.services import plan_scan
from ssumweb import events
from ssumweb.asgi import application

pytestmark = pytest.mark.usefixtures("close_thread_connections")

PLAN = dict(origin_x_nm=1000, origin_y_nm=1000, size_x_nm=20000, size_y_nm=10000, overlap=0.3, exposure_ms=10,
            contact_setpoint_nm=40)


def session_cookie(user) -> bytes:
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return f"sessionid={session.session_key}".encode()


def communicator(path, user=None, origin=b"http://localhost"):
    headers = [(b"origin", origin)]
    if user is not None:
        headers.append((b"cookie", session_cookie(user)))
    return WebsocketCommunicator(application, path, headers=headers)


@pytest.fixture
def scan(project, operator):
    sample = Sample.objects.create(project=project, name="chip")
    return plan_scan(sample=sample, name="s1", plan=PLAN, user=operator)


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_anonymous_is_refused_with_4401(scan):
    comm = communicator(f"/ws/scans/{scan.pk}/")
    connected, code = await comm.connect()
    assert not connected and code == 4401


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_foreign_origin_is_refused(scan, viewer):
    comm = await sync_to_async(communicator)(f"/ws/scans/{scan.pk}/", viewer, origin=b"http://evil.example")
    connected, _ = await comm.connect()
    assert not connected


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_non_member_gets_4404(scan, outsider):
    comm = await sync_to_async(communicator)(f"/ws/scans/{scan.pk}/", outsider)
    connected, code = await comm.connect()
    assert not connected and code == 4404


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_member_replays_after_seq_then_gets_live_events_once(scan, viewer):
    topic = f"scan.{scan.pk}"
    for i in range(3):
        await sync_to_async(events.publish)(topic, "scan.progress", done=i)  # seq 2, 3, 4 (1 is "planned")
    comm = await sync_to_async(communicator)(f"/ws/scans/{scan.pk}/?after=2", viewer)
    connected, _ = await comm.connect()
    assert connected
    replayed = [await comm.receive_json_from(), await comm.receive_json_from()]
    assert [e["seq"] for e in replayed] == [3, 4]
    assert replayed[-1]["done"] == 2
    await sync_to_async(events.publish)(topic, "scan.state", status="running")
    live = await comm.receive_json_from()
    assert (live["seq"], live["type"], live["status"]) == (5, "scan.state", "running")
    assert await comm.receive_nothing(timeout=0.2)
    await comm.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_what_a_client_sends_is_ignored_and_the_stream_goes_on(scan, viewer):
    comm = await sync_to_async(communicator)(f"/ws/scans/{scan.pk}/?after=1", viewer)
    assert (await comm.connect())[0]
    for junk in ("not json", '{"type": "scan.state"}'):
        await comm.send_to(text_data=junk)
    await comm.send_to(bytes_data=b"\x00\x01")
    await sync_to_async(events.publish)(f"scan.{scan.pk}", "scan.progress", done=1)
    assert (await comm.receive_json_from())["type"] == "scan.progress"
    await comm.disconnect()
