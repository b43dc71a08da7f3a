import pytest
from channels.layers import get_channel_layer

from ssumweb import events
from ssumweb.models import Event


@pytest.mark.django_db
def test_seq_increases_per_topic_and_replay_returns_what_was_missed(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        for i in range(5):
            events.publish("scan.1", "scan.progress", done=i)
        events.publish("scan.2", "scan.progress", done=0)
    assert list(Event.objects.filter(topic="scan.1").values_list("seq", flat=True)) == [1, 2, 3, 4, 5]
    assert Event.objects.get(topic="scan.2").seq == 1
    missed = events.events_after("scan.1", 3)
    assert [m["seq"] for m in missed] == [4, 5]
    assert missed[0] == {**missed[0], "type": "scan.progress", "object": "scan", "id": 1, "done": 3}


@pytest.mark.django_db
def test_events_are_sent_only_after_commit(django_capture_on_commit_callbacks):
    sent = []
    layer = get_channel_layer()
    original = layer.group_send

    async def spy(group, message):
        sent.append((group, message["event"]["seq"]))
        await original(group, message)

    layer.group_send = spy
    try:
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            events.publish("scan.9", "scan.state", status="running")
            assert sent == []  # nothing leaves before the transaction commits
        assert len(callbacks) == 1
        assert sent == [("events-scan-9", 1)]
    finally:
        layer.group_send = original


@pytest.mark.django_db
def test_events_are_bounded_per_topic(django_capture_on_commit_callbacks, monkeypatch):
    monkeypatch.setattr(events, "KEEP_PER_TOPIC", 50)
    with django_capture_on_commit_callbacks(execute=False):
        for _ in range(400):
            events.publish("scan.3", "scan.progress")
    kept = Event.objects.filter(topic="scan.3")
    assert kept.count() <= 250
    assert kept.order_by("-seq").first().seq == 400
