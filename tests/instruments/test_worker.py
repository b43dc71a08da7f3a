"""The hardware worker on the simulated bench: a scan requested through the services runs to the end,
pauses and resumes, and survives a worker restart with no frame lost or saved twice."""
import time

import numpy as np
import pytest

from imaging.models import Frame, Mosaic, Sample, Scan, ScanStatus
from imaging.services import plan_scan, request_action, scan_topic
from instruments.live_mosaic import preview_name
from instruments.models import Instrument
from instruments.worker import HardwareWorker
from ssumweb.media import absolute
from ssumweb.models import Event, JobStatus

pytestmark = pytest.mark.django_db(transaction=True)


def wait_for(predicate, timeout_s=60.0, what="condition", describe=lambda: ""):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}{describe()}")


def wait_for_status(scan, status, what):
    """Wait for a scan to reach ``status``; a timeout says where the scan stands and what went wrong."""
    def describe():
        now = Scan.objects.get(pk=scan.pk)
        faults = list(Event.objects.filter(topic=scan_topic(scan.pk), type="scan.fault").values_list("payload", flat=True))
        return (f": the scan is {now.status} ({now.status_reason or 'no reason given'}), "
                f"{Frame.objects.filter(scan=scan).count()} of {now.frames_total} frames saved, faults: {faults}")

    wait_for(lambda: Scan.objects.get(pk=scan.pk).status == status, what=what, describe=describe)


@pytest.fixture
def bench(project, operator):
    instrument = Instrument.objects.create(project=project, name="sim", sim_seed=3)
    worker = HardwareWorker(instrument.pk, poll_s=0.05).start()
    instrument.refresh_from_db()
    sample = Sample.objects.create(project=project, name="chip")
    yield worker, instrument, sample
    worker.stop()


def small_scan(instrument, sample, operator, name="small", **extra):
    # A 2 × 2 grid: the area is one step wider than the usable square in x and y.
    side = instrument.fov_diameter_nm / 2**0.5
    step = side * 0.6
    plan = dict(origin_x_nm=20000, origin_y_nm=20000, size_x_nm=side + step, size_y_nm=side + step, overlap=0.4,
                exposure_ms=5, contact_setpoint_nm=20, **extra)
    return plan_scan(sample=sample, name=name, plan=plan, instrument=instrument, user=operator)


def test_a_small_scan_completes_with_every_planned_frame(bench, operator):
    worker, instrument, sample = bench
    scan = small_scan(instrument, sample, operator)
    assert scan.frames_total == 4
    request_action(scan, "start")
    wait_for_status(scan, ScanStatus.COMPLETED, what="scan to complete")
    frames = Frame.objects.filter(scan=scan).order_by("index")
    assert [f.index for f in frames] == [0, 1, 2, 3]
    # The mosaic grew with the scan and was queued for its final stitch when the scan completed.
    wait_for(lambda: Mosaic.objects.filter(scan=scan, live=True, status=JobStatus.QUEUED).exists(),
             what="the live mosaic to be queued for its final stitch")
    live = Mosaic.objects.get(scan=scan, live=True)
    assert live.width > frames[0].width
    assert absolute(preview_name(live)).exists()
    live_events = Event.objects.filter(topic=f"scan.{scan.pk}", type="mosaic.live")
    assert live_events.exists()
    # each says which frames (scan indices) matched none of their overlaps so far
    assert all(set(e.payload["unmatched_frames"]) <= {0, 1, 2, 3} for e in live_events)
    assert {(f.row, f.col) for f in frames} == {(0, 0), (0, 1), (1, 0), (1, 1)}
    for frame in frames:
        assert (frame.width, frame.height) == (512, 512)  # the camera window around the sphere, not the sensor
        # Autofocus found the virtual image: within a few µm of the contact reference (the depth of field
        # through the sphere is a few hundred nm of sample depth, ~16× that in stage travel).
        assert abs(frame.focus_nm - instrument.focus_reference_nm) < 5_000
        assert abs(frame.measured_x_nm - frame.commanded_x_nm) < 200
        assert frame.deflection_nm >= 0.5 * scan.contact_setpoint_nm


def test_pause_resume_and_restart_lose_and_duplicate_nothing(bench, operator):
    worker, instrument, sample = bench
    scan = small_scan(instrument, sample, operator)
    request_action(scan, "start")
    wait_for(lambda: Frame.objects.filter(scan=scan).exists(), what="a first frame")
    request_action(Scan.objects.get(pk=scan.pk), "pause")
    wait_for_status(scan, ScanStatus.PAUSED, what="pause")
    paused_at = Frame.objects.filter(scan=scan).count()
    assert paused_at < 4
    worker.stop()  # the worker goes away while the scan is paused…
    replacement = HardwareWorker(instrument.pk, poll_s=0.05).start()  # …and a new one takes over
    try:
        request_action(Scan.objects.get(pk=scan.pk), "resume")
        wait_for_status(scan, ScanStatus.COMPLETED, what="completion after resume")
    finally:
        replacement.stop()
    indices = list(Frame.objects.filter(scan=scan).values_list("index", flat=True))
    assert sorted(indices) == [0, 1, 2, 3]


def test_a_bare_silicon_sample_is_imaged_as_a_featureless_wafer_then_the_chip_again(bench, operator, project):
    from imaging.imageio import read_image16
    from imaging.models import SampleSurface
    from imaging.pairwise import bandpass

    worker, instrument, chip = bench
    wafer = Sample.objects.create(project=project, name="wafer", surface=SampleSurface.BARE_SILICON)

    def scanned(sample, name):
        scan = small_scan(instrument, sample, operator, name=name)
        request_action(scan, "start")
        wait_for_status(scan, ScanStatus.COMPLETED, what=f"{name} to complete")
        return [read_image16(absolute(f.image.name)).astype(np.float32)
                for f in Frame.objects.filter(scan=scan).order_by("index")]

    disc = worker.rig.world.fov_mask(fraction=0.8)

    def structure(frames):  # edges inside the sphere's field of view, relative to its brightness
        return np.median([bandpass(f, disc, low_sigma_px=1, high_sigma_px=8)[disc].std() / f[disc].mean()
                          for f in frames])

    bare, chip_frames = scanned(wafer, "bare"), scanned(chip, "chip")
    assert not Mosaic.objects.filter(scan__sample=wafer).exists()  # a flat field, not a mosaic: nothing stitched
    assert structure(bare) < 0.25 * structure(chip_frames)
    # the wafer shows the shading alone: the sphere's image darkens towards its rim
    centre, rim = worker.rig.world.fov_mask(fraction=0.3), disc & ~worker.rig.world.fov_mask(fraction=0.7)
    assert all(f[rim].mean() < 0.9 * f[centre].mean() for f in bare)


def test_a_scan_is_not_reported_at_the_last_scans_frame_before_its_own_first(bench, operator, monkeypatch):
    import threading

    from instruments.engine import ScanEngine

    worker, instrument, sample = bench
    side = 0.9 * instrument.fov_diameter_nm / 2**0.5  # one frame: the area fits the usable square

    def one_frame_scan(name):
        return plan_scan(sample=sample, name=name, instrument=instrument, user=operator,
                         plan=dict(origin_x_nm=20000, origin_y_nm=20000, size_x_nm=side, size_y_nm=side,
                                   overlap=0.4, exposure_ms=5, contact_setpoint_nm=20))

    first = one_frame_scan("first")
    request_action(first, "start")
    wait_for_status(first, ScanStatus.COMPLETED, what="the first scan to complete")
    # the next scan held before it moves: the worker's heartbeats meanwhile are all it says of it
    go_on, run = threading.Event(), ScanEngine.run
    monkeypatch.setattr(ScanEngine, "run", lambda engine, spec: go_on.wait(10) and run(engine, spec))
    second = one_frame_scan("second")
    request_action(second, "start")
    states = Event.objects.filter(topic=f"instrument.{instrument.pk}", type="instrument.state",
                                  payload__scan=second.pk)
    try:
        wait_for(states.exists, timeout_s=10, what="a heartbeat during the second scan")
        held = [state.payload for state in states]
    finally:
        go_on.set()
    assert [payload.get("x_nm") for payload in held] == [None] * len(held)  # not where the first scan's frame was
    wait_for_status(second, ScanStatus.COMPLETED, what="the second scan to complete")
