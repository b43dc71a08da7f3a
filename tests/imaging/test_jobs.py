"""Imaging jobs through the Django shell: a scan's frames → mosaic + pyramid → tiles served by role."""
import numpy as np
import pytest
from django.utils import timezone

from imaging.imageio import write_image16
from imaging.jobs import queue_mosaic
from imaging.models import Frame, Mosaic, Sample, Scan
from imaging.services import plan_scan
from instruments.models import Instrument
from instruments.sim.dataset import simulate_scan
from ssumweb.jobs import reap_stale, run_job
from ssumweb.media import absolute
from ssumweb.models import JobStatus


@pytest.fixture(scope="module")
def simulated():
    return simulate_scan(seed=2, grid=(2, 2))


@pytest.fixture
def scan_with_frames(project, operator, simulated):
    instrument = Instrument.objects.create(project=project, name="sim", pixel_size_nm=simulated.pixel_size_nm,
                                           fov_diameter_nm=2 * 0.45 * simulated.frames.shape[1] * simulated.pixel_size_nm)
    sample = Sample.objects.create(project=project, name="chip")
    side = instrument.fov_diameter_nm / 2**0.5
    scan = plan_scan(sample=sample, name="s", instrument=instrument, user=operator, plan=dict(
        origin_x_nm=40000, origin_y_nm=40000, size_x_nm=side * 1.5, size_y_nm=side * 1.5, overlap=0.3,
        exposure_ms=10, contact_setpoint_nm=20))
    for index, (frame, (x, y), (row, col)) in enumerate(zip(simulated.frames, simulated.nominal_xy_nm,
                                                             simulated.grid_index, strict=True)):
        rel = f"scans/{scan.pk}/frames/{index:06d}.tif"
        write_image16(absolute(rel), frame, pixel_size_nm=simulated.pixel_size_nm)
        Frame.objects.create(scan=scan, index=index, row=row, col=col, commanded_x_nm=x, commanded_y_nm=y,
                             measured_x_nm=x, measured_y_nm=y, captured_at=timezone.now(), exposure_ms=10, image=rel,
                             width=frame.shape[1], height=frame.shape[0])
    return scan


@pytest.mark.django_db
def test_stitch_job_builds_mosaic_and_pyramid_served_only_to_members(api, scan_with_frames, viewer, outsider,
                                                                       django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        mosaic = queue_mosaic(scan_with_frames)
    from imaging.jobs import stitch_work, useful_fov_radius_px

    run_job("imaging.Mosaic", mosaic.pk, stitch_work)
    mosaic = Mosaic.objects.get(pk=mosaic.pk)
    assert mosaic.status == JobStatus.SUCCEEDED, mosaic.failure_reason
    assert mosaic.width > 512 and mosaic.height > 512 and mosaic.pixel_size_nm == pytest.approx(32.5, rel=0.01)
    assert mosaic.report["links"], "the stitching report lists the links it measured"
    frames = scan_with_frames.frames.count()
    assert mosaic.report["frame_index"] == list(range(frames)) and len(mosaic.report["frame_confidence"]) == frames
    assert set(mosaic.report["uncertain_frames"]) <= set(range(frames))
    assert mosaic.report["fov_radius_px"] == pytest.approx(useful_fov_radius_px(scan_with_frames.instrument))
    dzi = api(viewer).get(f"/api/mosaics/{mosaic.pk}/dzi/")
    assert dzi.status_code == 200 and b"TileSize" in b"".join(dzi.streaming_content)
    tile = api(viewer).get(f"/api/mosaics/{mosaic.pk}/tiles/0/0_0.jpeg")
    assert tile.status_code == 200 and "immutable" in tile["Cache-Control"] and tile["ETag"]
    again = api(viewer).get(f"/api/mosaics/{mosaic.pk}/tiles/0/0_0.jpeg", HTTP_IF_NONE_MATCH=tile["ETag"])
    assert again.status_code == 304
    assert api(outsider).get(f"/api/mosaics/{mosaic.pk}/tiles/0/0_0.jpeg").status_code == 404
    assert api(viewer).get(f"/api/mosaics/{mosaic.pk}/tiles/..%2F..%2Fsecret").status_code == 404


@pytest.mark.django_db
def test_an_empty_scan_cannot_be_stitched(api, project, operator):
    sample = Sample.objects.create(project=project, name="chip")
    scan = plan_scan(sample=sample, name="s", user=operator, plan=dict(
        origin_x_nm=0, origin_y_nm=0, size_x_nm=1000, size_y_nm=1000, overlap=0.3, exposure_ms=10,
        contact_setpoint_nm=20))
    response = api(operator).post("/api/mosaics/", {"scan": scan.pk}, format="json")
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == "scan"
    assert not Mosaic.objects.exists()


@pytest.mark.django_db
def test_frames_of_mixed_sizes_fail_with_a_reason(scan_with_frames, django_capture_on_commit_callbacks):
    odd = Frame.objects.filter(scan=scan_with_frames).last()
    write_image16(absolute(odd.image.name), np.zeros((100, 100), np.uint16))
    Frame.objects.filter(pk=odd.pk).update(width=100, height=100)
    with django_capture_on_commit_callbacks(execute=False):
        mosaic = queue_mosaic(scan_with_frames)
    from imaging.jobs import stitch_work

    run_job("imaging.Mosaic", mosaic.pk, stitch_work)
    mosaic.refresh_from_db()
    assert mosaic.status == JobStatus.FAILED and "mixed sizes" in mosaic.failure_reason


@pytest.mark.django_db
def test_a_job_whose_worker_died_is_failed_by_the_reaper(scan_with_frames, settings):
    mosaic = Mosaic.objects.create(scan=scan_with_frames, status=JobStatus.RUNNING,
                                   heartbeat_at=timezone.now() - timezone.timedelta(hours=1))
    assert reap_stale() == 1
    mosaic.refresh_from_db()
    assert mosaic.status == JobStatus.FAILED and "stopped responding" in mosaic.failure_reason
    assert Scan.objects.get(pk=scan_with_frames.pk).status == "planned"
