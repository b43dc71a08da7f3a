"""The live mosaic: frames placed as they are saved, and the scan page told which frames matched none of
their overlaps (they stand where the stage put them until the final stitch)."""

import time
from types import SimpleNamespace

import numpy as np
import pytest
from django.utils import timezone

from imaging.models import Sample, Scan
from instruments.live_mosaic import LiveMosaic
from instruments.models import Instrument
from ssumweb.models import Event
from tests.imaging.scan_factory import ic_scene, synthetic_scan

pytestmark = pytest.mark.django_db(transaction=True)


def synthetic_instrument(project, synthetic):
    """An instrument whose useful field of view (USEFUL_FOV_FRACTION of the sphere's) is the synthetic frames' circle."""
    return Instrument.objects.create(project=project, name="sim", pixel_size_nm=synthetic.pixel_size_nm,
                                     fov_diameter_nm=synthetic.frames[0].shape[1] * synthetic.pixel_size_nm / 0.8)


def chip_scan(project, instrument, *, rows: int, cols: int) -> Scan:
    """A scan of a chip sample with ``instrument``, ``rows`` × ``cols`` frames."""
    return Scan.objects.create(project=project, sample=Sample.objects.create(project=project, name="chip"),
                               instrument=instrument, name="s1", origin_x_nm=0, origin_y_nm=0, size_x_nm=1e4,
                               size_y_nm=1e4, step_nm=5e3, overlap=0.3, exposure_ms=5, contact_setpoint_nm=20,
                               rows=rows, cols=cols)


def offer_and_wait(live, frames, count):
    """Hand ``frames`` ((image, (x, y) nm, scan index) each) to ``live``; wait until its stitcher holds ``count``."""
    for image, xy, index in frames:
        live.offer(None, SimpleNamespace(image=image, commanded_xy_nm=tuple(xy), index=index))
    deadline = time.monotonic() + 30
    while live.stitcher is None or live.stitcher.frame_count < count or not live.frames.empty():
        assert time.monotonic() < deadline, "the live mosaic did not place the frames in time"
        time.sleep(0.05)


def test_the_live_event_names_the_scan_frames_that_matched_none_of_their_overlaps(project):
    synthetic = synthetic_scan(grid=(3, 3), frame_px=128, overlap=0.3, stage_error=0.1, seed=11)
    instrument = synthetic_instrument(project, synthetic)
    sample = Sample.objects.create(project=project, name="chip")
    scan = Scan.objects.create(project=project, sample=sample, instrument=instrument, name="s1", origin_x_nm=0,
                               origin_y_nm=0, size_x_nm=1e4, size_y_nm=1e4, step_nm=5e3, overlap=0.3, exposure_ms=5,
                               contact_setpoint_nm=20, rows=3, cols=3)
    frames = list(synthetic.frames)
    other = ic_scene((128, 128), rng=np.random.default_rng(5))  # frame 4 shows a different place entirely
    frames[4] = np.where(synthetic.fov_mask, other * 40000, 0).astype(np.uint16)
    live = LiveMosaic(scan, instrument)
    try:
        # the scan's frame indices start at 10 (a resumed scan): the event speaks in them, not in the stitcher's
        offer_and_wait(live, [(image, xy, 10 + k) for k, (image, xy) in
                              enumerate(zip(frames, synthetic.nominal_xy_nm, strict=True))], 9)
        live._publish()
    finally:
        live.finish(final=False)
    last = Event.objects.filter(topic=f"scan.{scan.pk}", type="mosaic.live").latest("seq")
    assert last.payload["frames"] == 9 and last.payload["unmatched_frames"] == [14]


def test_the_final_stitch_of_a_live_scan_uses_the_instruments_flat_field_calibration(project):
    from imaging.jobs import set_flatfield_calibration
    from imaging.models import Frame, Mosaic
    from ssumweb.models import JobStatus

    instrument = Instrument.objects.create(project=project, name="sim")
    chip_sample = Sample.objects.create(project=project, name="chip")
    wafer = Sample.objects.create(project=project, name="wafer", surface="bare_silicon")

    def scan(name, sample):
        return Scan.objects.create(project=project, sample=sample, instrument=instrument, name=name, origin_x_nm=0,
                                   origin_y_nm=0, size_x_nm=1e4, size_y_nm=1e4, step_nm=5e3, overlap=0.3,
                                   exposure_ms=5, contact_setpoint_nm=20, rows=1, cols=1)

    bare, chip = scan("bare silicon", wafer), scan("chip", chip_sample)
    Frame.objects.create(scan=bare, index=0, row=0, col=0, commanded_x_nm=0, commanded_y_nm=0, measured_x_nm=0,
                         measured_y_nm=0, captured_at=timezone.now(), exposure_ms=5, image="f.tif", width=512,
                         height=512)
    set_flatfield_calibration(instrument, bare)
    live = LiveMosaic(chip, instrument)
    live.finish(final=True)
    mosaic = Mosaic.objects.get(scan=chip, live=True)
    assert mosaic.status == JobStatus.QUEUED
    assert mosaic.options == {"flatfield": "calibration", "calibration_scan": bare.pk}


def test_the_live_mosaic_shows_the_sample_without_the_sphere_s_shading_estimated_or_calibrated(project):
    from imaging.imageio import write_image16
    from imaging.jobs import set_flatfield_calibration
    from imaging.models import Frame
    from imaging.stitching import IncrementalStitcher
    from ssumweb.media import absolute
    from tests.imaging.scan_factory import shading_left

    synthetic = synthetic_scan(grid=(3, 3), frame_px=128, overlap=0.3, stage_error=0.1, seed=11)
    instrument = synthetic_instrument(project, synthetic)
    chip_sample = Sample.objects.create(project=project, name="chip")
    wafer = Sample.objects.create(project=project, name="wafer", surface="bare_silicon")

    def scan(name, sample=chip_sample):
        return Scan.objects.create(project=project, sample=sample, instrument=instrument, name=name, origin_x_nm=0,
                                   origin_y_nm=0, size_x_nm=1e4, size_y_nm=1e4, step_nm=5e3, overlap=0.3,
                                   exposure_ms=5, contact_setpoint_nm=20, rows=3, cols=3)

    def live_mosaic(chip):
        live = LiveMosaic(chip, instrument)
        try:
            offer_and_wait(live, [(image, xy, k) for k, (image, xy) in
                                  enumerate(zip(synthetic.frames, synthetic.nominal_xy_nm, strict=True))], 9)
            return live.stitcher
        finally:
            live.finish(final=False)

    estimated = live_mosaic(scan("before"))
    estimated.settle()  # as the live thread does once no frame waits (it may not have yet)
    bare = scan("bare silicon", wafer)
    rng = np.random.default_rng(3)
    for index in range(3):
        rel = f"scans/{bare.pk}/frames/{index:06d}.tif"
        write_image16(absolute(rel), np.where(synthetic.fov_mask, rng.poisson(synthetic.flat * 30000), 0)
                      .astype(np.uint16), pixel_size_nm=synthetic.pixel_size_nm)
        Frame.objects.create(scan=bare, index=index, row=0, col=index, commanded_x_nm=0, commanded_y_nm=0,
                             measured_x_nm=0, measured_y_nm=0, captured_at=timezone.now(), exposure_ms=5, image=rel,
                             width=128, height=128)
    set_flatfield_calibration(instrument, bare)
    calibrated = live_mosaic(scan("after"))
    assert estimated.flatfield == "estimate" and calibrated.flatfield.method == "calibration"
    uncorrected = IncrementalStitcher(frame_shape=(128, 128), pixel_size_nm=synthetic.pixel_size_nm,
                                      fov_mask=estimated.mask)
    for image, xy in zip(synthetic.frames, synthetic.nominal_xy_nm, strict=True):
        uncorrected.add_frame(image, xy, anchor="center")

    def shading(stitcher):  # frame 0's top-left sits at its position less the live mosaic's origin
        return shading_left(stitcher.mosaic(), synthetic, stitcher.positions_px[0] - stitcher.origin_px)

    # measured: calibrated 0.35 %, estimated from the nine frames 0.76 %, the sphere's shading left alone 8.8 %
    assert shading(calibrated) < 0.01 and shading(estimated) < 0.05 < shading(uncorrected)


def test_a_resumed_scan_s_live_mosaic_grows_on_from_the_frames_saved_before_the_pause(project):
    from imaging.imageio import write_image16
    from imaging.models import Frame, Mosaic
    from ssumweb.media import absolute
    from ssumweb.models import JobStatus

    synthetic = synthetic_scan(grid=(2, 2), frame_px=128, overlap=0.3, stage_error=0.1, seed=11)
    instrument = synthetic_instrument(project, synthetic)
    sample = Sample.objects.create(project=project, name="chip")
    scan = Scan.objects.create(project=project, sample=sample, instrument=instrument, name="s1", origin_x_nm=0,
                               origin_y_nm=0, size_x_nm=1e4, size_y_nm=1e4, step_nm=5e3, overlap=0.3, exposure_ms=5,
                               contact_setpoint_nm=20, rows=2, cols=2)
    # the worker stopped after two frames: their files and rows, and the live record it left running
    Mosaic.objects.create(scan=scan, live=True, status=JobStatus.RUNNING, message="Growing with the scan.")
    for index in range(2):
        rel = f"scans/{scan.pk}/frames/{index:06d}.tif"
        write_image16(absolute(rel), synthetic.frames[index], pixel_size_nm=synthetic.pixel_size_nm)
        x, y = synthetic.nominal_xy_nm[index]
        Frame.objects.create(scan=scan, index=index, row=0, col=index, commanded_x_nm=x, commanded_y_nm=y,
                             measured_x_nm=x, measured_y_nm=y, captured_at=timezone.now(), exposure_ms=5, image=rel,
                             width=128, height=128)
    live = LiveMosaic(scan, instrument)
    try:
        offer_and_wait(live, [(synthetic.frames[k], synthetic.nominal_xy_nm[k], k) for k in (2, 3)], 4)
    finally:
        live.finish(final=False)
    assert Mosaic.objects.filter(scan=scan, live=True).count() == 1
    assert live.frame_index == [0, 1, 2, 3]
    placed = live.stitcher.positions_px - live.stitcher.positions_px[0]
    assert np.abs(placed - (synthetic.true_xy_px - synthetic.true_xy_px[0])).max() < 1.0


def test_a_scan_aborted_after_its_worker_stopped_has_its_live_mosaic_stitched_or_cancelled(project):
    from imaging.models import Frame, Mosaic
    from instruments.live_mosaic import close_left_over
    from ssumweb.models import JobStatus

    instrument = Instrument.objects.create(project=project, name="sim")
    sample = Sample.objects.create(project=project, name="chip")

    def scan(name):
        return Scan.objects.create(project=project, sample=sample, instrument=instrument, name=name, origin_x_nm=0,
                                   origin_y_nm=0, size_x_nm=1e4, size_y_nm=1e4, step_nm=5e3, overlap=0.3,
                                   exposure_ms=5, contact_setpoint_nm=20, rows=2, cols=2, status="aborted")

    with_frames, without = scan("two frames"), scan("none")
    Frame.objects.create(scan=with_frames, index=0, row=0, col=0, commanded_x_nm=0, commanded_y_nm=0, measured_x_nm=0,
                         measured_y_nm=0, captured_at=timezone.now(), exposure_ms=5, image="f.tif", width=64, height=64)
    for each in (with_frames, without):
        Mosaic.objects.create(scan=each, live=True, status=JobStatus.RUNNING, message="Growing with the scan.")
        close_left_over(each)
    stitched, empty = (Mosaic.objects.get(scan=each) for each in (with_frames, without))
    assert stitched.status == JobStatus.QUEUED and stitched.message == "Final stitch queued."
    assert empty.status == JobStatus.CANCELLED and empty.message == "The scan ended without frames."


def test_the_live_mosaic_settles_its_frames_whenever_none_wait_and_wakes_to_settle_the_last(project, monkeypatch):
    import instruments.live_mosaic as live_mosaic
    from imaging.stitching import IncrementalStitcher

    monkeypatch.setattr(live_mosaic, "SETTLE_EVERY_S", 1.5)
    settled = []
    real = IncrementalStitcher.settle
    monkeypatch.setattr(IncrementalStitcher, "settle", lambda self: (real(self), settled.append(self.frame_count))[0])
    synthetic = synthetic_scan(grid=(2, 2), frame_px=128, overlap=0.3, stage_error=0.1, seed=11)
    instrument = synthetic_instrument(project, synthetic)
    scan = chip_scan(project, instrument, rows=2, cols=2)
    live = LiveMosaic(scan, instrument)
    try:
        # each frame placed before the next comes: the first settles at once, the others within 1.5 s of that
        for k, (image, xy) in enumerate(zip(synthetic.frames, synthetic.nominal_xy_nm, strict=True)):
            offer_and_wait(live, [(image, xy, k)], k + 1)
        deadline = time.monotonic() + 30
        while not settled or settled[-1] < 4:  # woken to settle the last frame, no frame coming after it
            assert time.monotonic() < deadline, settled
            time.sleep(0.05)
    finally:
        live.finish(final=False)
    assert settled[0] == 1 and len(settled) < 4, settled  # not after every frame: at most every 1.5 s


def test_a_live_mosaic_closing_publishes_nothing_more(project):
    # a settling of a big scan can outlast finish()'s wait: the record is the final stitch's by then
    synthetic = synthetic_scan(grid=(1, 2), frame_px=128, overlap=0.3, stage_error=0.1, seed=11)
    instrument = synthetic_instrument(project, synthetic)
    scan = chip_scan(project, instrument, rows=1, cols=2)
    live = LiveMosaic(scan, instrument)
    try:
        offer_and_wait(live, [(image, xy, k) for k, (image, xy) in
                              enumerate(zip(synthetic.frames, synthetic.nominal_xy_nm, strict=True))], 2)
        live.closing.set()
        time.sleep(0.5)  # the thread's own publishing of the last frame, if it was under way, done
        published = Event.objects.filter(topic=f"scan.{scan.pk}", type="mosaic.live").count()
        live._publish()
        assert Event.objects.filter(topic=f"scan.{scan.pk}", type="mosaic.live").count() == published > 0
    finally:
        live.finish(final=False)
