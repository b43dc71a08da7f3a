"""The scan's state machine as the hardware worker drives it: times kept and published with each state."""
import pytest
from django.utils.dateparse import parse_datetime

from imaging.models import Sample, ScanStatus
from imaging.services import plan_scan, scan_topic, transition
from ssumweb.errors import InvalidTransition
from ssumweb.events import events_after

pytestmark = pytest.mark.django_db


@pytest.fixture
def scan(project, operator):
    sample = Sample.objects.create(project=project, name="chip")
    return plan_scan(sample=sample, name="s", user=operator,
                     plan=dict(origin_x_nm=0, origin_y_nm=0, size_x_nm=4000, size_y_nm=4000, overlap=0.3,
                               exposure_ms=5, contact_setpoint_nm=20))


def test_a_failed_scan_resumed_is_running_again_not_finished(scan):
    started = transition(scan, ScanStatus.RUNNING).started_at
    failed = transition(scan, ScanStatus.FAILED, reason="lost contact")
    assert failed.finished_at is not None
    resumed = transition(scan, ScanStatus.RUNNING)
    assert resumed.finished_at is None and resumed.started_at == started  # it started once
    assert transition(scan, ScanStatus.COMPLETED).finished_at > failed.finished_at


def test_each_state_event_carries_the_times_the_scan_then_has(scan):
    transition(scan, ScanStatus.RUNNING)
    paused = transition(scan, ScanStatus.PAUSED, reason="asked")
    transition(scan, ScanStatus.RUNNING)
    done = transition(scan, ScanStatus.COMPLETED)
    states = [e for e in events_after(scan_topic(scan.pk), 0) if e["type"] == "scan.state"]
    assert [e["status"] for e in states] == ["planned", "running", "paused", "running", "completed"]
    assert states[0]["started_at"] is None and states[0]["finished_at"] is None
    assert parse_datetime(states[2]["paused_at"]) == paused.paused_at
    assert states[3]["paused_at"] is None
    assert parse_datetime(states[4]["started_at"]) == done.started_at
    assert parse_datetime(states[4]["finished_at"]) == done.finished_at


def test_a_completed_scan_moves_no_more(scan):
    transition(scan, ScanStatus.RUNNING)
    transition(scan, ScanStatus.COMPLETED)
    with pytest.raises(InvalidTransition):
        transition(scan, ScanStatus.RUNNING)
