"""Imaging jobs through the Django shell: a scan's frames → mosaic + pyramid → tiles served by role."""
import io

import numpy as np
import pytest
from django.test import Client
from django.utils import timezone
from PIL import Image

from imaging.flatfield import estimate_flatfield
from imaging.imageio import write_image16
from imaging.jobs import queue_mosaic
from imaging.models import Frame, Mosaic, Sample, SampleSurface, Scan
from imaging.services import plan_scan
from instruments.models import Instrument
from instruments.sim.dataset import simulate_scan
from instruments.sim.world import StageErrors
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
    # the scan cards show the whole mosaic in one tile, no longer frame 1
    thumbnail = api(viewer).get(f"/api/mosaics/{mosaic.pk}/thumbnail/")
    assert thumbnail.status_code == 200 and "immutable" in thumbnail["Cache-Control"]
    with Image.open(io.BytesIO(b"".join(thumbnail.streaming_content))) as shown:
        assert 127 < max(shown.size) <= 254 and abs(shown.size[0] / shown.size[1] - mosaic.width / mosaic.height) < 0.02
    assert api(outsider).get(f"/api/mosaics/{mosaic.pk}/thumbnail/").status_code == 404
    client = Client()
    client.force_login(viewer)
    assert f'src="/api/mosaics/{mosaic.pk}/thumbnail" alt="Mosaic of' in client.get("/scans/").content.decode()


def bare_silicon_scan(scan, frames, *, name="bare silicon", instrument="same", sample=None):
    """A scan of bare silicon through the sphere: only its shading (``frames``: uint16 images), of a
    bare-silicon sample of the scan's project unless ``sample`` is given."""
    instrument = scan.instrument if instrument == "same" else instrument
    sample = sample or Sample.objects.get_or_create(project=scan.project, name="wafer",
                                                    defaults={"surface": SampleSurface.BARE_SILICON})[0]
    bare = Scan.objects.create(project=scan.project, sample=sample, instrument=instrument, name=name,
                               origin_x_nm=0, origin_y_nm=0, size_x_nm=1e4, size_y_nm=1e4, step_nm=5e3, overlap=0.3,
                               exposure_ms=10, contact_setpoint_nm=20, rows=1, cols=len(frames))
    for index, frame in enumerate(frames):
        rel = f"scans/{bare.pk}/frames/{index:06d}.tif"
        write_image16(absolute(rel), frame, pixel_size_nm=instrument.pixel_size_nm if instrument else 32.5)
        Frame.objects.create(scan=bare, index=index, row=0, col=index, commanded_x_nm=0, commanded_y_nm=0,
                             measured_x_nm=0, measured_y_nm=0, captured_at=timezone.now(), exposure_ms=10, image=rel,
                             width=frame.shape[1], height=frame.shape[0])
    return bare


def shading_frames(simulated, count=3, seed=0):
    """Bare silicon as the simulated sphere shows it: its shading (from the scan's frames), shot noise."""
    flat = estimate_flatfield(simulated.frames, mask=simulated.fov_mask).flat
    rng = np.random.default_rng(seed)
    return [np.clip(rng.poisson(flat * 20000), 0, 65535).astype(np.uint16) for _ in range(count)]


@pytest.mark.django_db
def test_a_calibration_scan_of_bare_silicon_serves_as_the_flat_field(api, operator, scan_with_frames, simulated,
                                                                     django_capture_on_commit_callbacks):
    bare = bare_silicon_scan(scan_with_frames, shading_frames(simulated))
    with django_capture_on_commit_callbacks(execute=False):
        response = api(operator).post("/api/mosaics/", {"scan": scan_with_frames.pk, "flatfield": "calibration",
                                                        "calibration_scan": bare.pk}, format="json")
    assert response.status_code == 201, response.json()
    from imaging.jobs import stitch_work

    run_job("imaging.Mosaic", response.json()["id"], stitch_work)
    mosaic = Mosaic.objects.get(pk=response.json()["id"])
    assert mosaic.status == JobStatus.SUCCEEDED, mosaic.failure_reason
    assert mosaic.options == {"flatfield": "calibration", "calibration_scan": bare.pk}
    assert mosaic.report["flatfield"] == "calibration"
    assert len(mosaic.report["positions_px"]) == scan_with_frames.frames.count()


@pytest.mark.django_db
def test_the_stitchs_progress_counts_one_calibration_frame_as_one(scan_with_frames, simulated):
    from imaging.jobs import flatfield_for

    said = []
    for count in (1, 3):
        bare = bare_silicon_scan(scan_with_frames, shading_frames(simulated, count=count), name=f"wafer x{count}")
        flatfield_for({"flatfield": "calibration", "calibration_scan": bare.pk}, simulated.fov_mask,
                      progress=lambda fraction, message: said.append(message))
    assert said == ["Combining the 1 calibration frame of scan “wafer x1”…",
                    "Combining the 3 calibration frames of scan “wafer x3”…"]


@pytest.mark.django_db
def test_a_calibration_that_cannot_serve_is_refused_naming_the_field(api, operator, project, other_project,
                                                                     scan_with_frames, simulated):
    shading = shading_frames(simulated, count=1)
    other_instrument = Instrument.objects.create(project=project, name="other bench",
                                                 pixel_size_nm=scan_with_frames.instrument.pixel_size_nm)
    foreign = bare_silicon_scan(scan_with_frames, shading)
    Scan.objects.filter(pk=foreign.pk).update(project=other_project)
    cases = [
        ({"flatfield": "calibration"}, "needs a calibration scan"),
        ({"flatfield": "calibration", "calibration_scan": scan_with_frames.pk}, "cannot be its own"),
        ({"flatfield": "calibration", "calibration_scan": bare_silicon_scan(scan_with_frames, []).pk}, "no frames"),
        ({"flatfield": "calibration", "calibration_scan": bare_silicon_scan(
            scan_with_frames, shading, instrument=other_instrument).pk}, "another instrument"),
        ({"flatfield": "calibration", "calibration_scan": bare_silicon_scan(
            scan_with_frames, [s[:256, :256] for s in shading]).pk}, "are 256×256 px; this scan's are 512×512"),
        ({"flatfield": "calibration", "calibration_scan": foreign.pk}, "in your projects"),
        ({"flatfield": "calibration", "calibration_scan": bare_silicon_scan(
            scan_with_frames, shading, name="chip again", sample=scan_with_frames.sample).pk},
         "“chip again” is a scan of “chip”, which is not bare silicon"),
        ({"flatfield": "estimate", "calibration_scan": bare_silicon_scan(scan_with_frames, shading).pk},
         'only used with flatfield "calibration"'),
        ({"flatfield": "dark"}, "not a valid choice"),
    ]
    for extra, reason in cases:
        response = api(operator).post("/api/mosaics/", {"scan": scan_with_frames.pk, **extra}, format="json")
        assert response.status_code == 400, (extra, response.json())
        error = response.json()["errors"][0]
        assert error["field"] == ("flatfield" if extra["flatfield"] == "dark" else "calibration_scan")
        assert reason in error["message"], (reason, error)
    assert not Mosaic.objects.exists()


@pytest.mark.django_db
def test_the_instruments_calibration_is_the_default_flat_field(scan_with_frames, simulated,
                                                              django_capture_on_commit_callbacks):
    from imaging.jobs import set_flatfield_calibration

    instrument = scan_with_frames.instrument
    bare = bare_silicon_scan(scan_with_frames, shading_frames(simulated, count=1))
    with django_capture_on_commit_callbacks(execute=False):
        assert queue_mosaic(scan_with_frames).options == {"flatfield": "estimate"}
        set_flatfield_calibration(instrument, bare)
        assert queue_mosaic(scan_with_frames).options == {"flatfield": "calibration", "calibration_scan": bare.pk}
        # asked for explicitly, another choice wins; a calibration scan given alone is a calibration
        assert queue_mosaic(scan_with_frames, flatfield="estimate").options == {"flatfield": "estimate"}
        other = bare_silicon_scan(scan_with_frames, shading_frames(simulated, count=1, seed=1), name="other wafer")
        assert queue_mosaic(scan_with_frames, calibration_scan=other).options == {
            "flatfield": "calibration", "calibration_scan": other.pk}
        # a calibration that cannot serve this scan (another camera window) is skipped, saying why
        Frame.objects.filter(scan=bare).update(width=256, height=256)
        skipped = queue_mosaic(scan_with_frames).options
    assert skipped["flatfield"] == "estimate" and "are 256×256 px" in skipped["calibration_skipped"]
    bare.delete()
    instrument.refresh_from_db()
    assert instrument.flatfield_calibration is None


@pytest.mark.django_db
def test_the_instruments_stage_repeatability_reaches_the_stitch(scan_with_frames, django_capture_on_commit_callbacks):
    from imaging.jobs import stitch_work

    Instrument.objects.filter(pk=scan_with_frames.instrument_id).update(stage_repeatability_nm=2.0)
    with django_capture_on_commit_callbacks(execute=False):
        mosaic = queue_mosaic(scan_with_frames)
    run_job("imaging.Mosaic", mosaic.pk, stitch_work)
    mosaic.refresh_from_db()
    assert mosaic.status == JobStatus.SUCCEEDED, mosaic.failure_reason
    # the simulator's scanner turned 0.35° against the camera (StageErrors), measured on the overlaps
    assert mosaic.report["stage_repeatability_nm"] == 2.0
    assert mosaic.report["stage_calibration"]["believed"], mosaic.report["stage_calibration"]
    assert abs(mosaic.report["stage_calibration"]["rotation_deg"] + StageErrors().rotation_deg) <= 0.1, \
        mosaic.report["stage_calibration"]


@pytest.mark.django_db
def test_a_stitch_whose_calibration_scan_went_away_fails_saying_so(scan_with_frames, simulated,
                                                                   django_capture_on_commit_callbacks):
    bare = bare_silicon_scan(scan_with_frames, shading_frames(simulated, count=1))
    with django_capture_on_commit_callbacks(execute=False):
        mosaic = queue_mosaic(scan_with_frames, flatfield="calibration", calibration_scan=bare)
    bare.delete()
    from imaging.jobs import stitch_work

    run_job("imaging.Mosaic", mosaic.pk, stitch_work)
    mosaic.refresh_from_db()
    assert mosaic.status == JobStatus.FAILED and "calibration scan no longer exists" in mosaic.failure_reason


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
def test_a_scan_of_bare_silicon_is_not_stitched(api, operator, scan_with_frames, simulated):
    # its frames are a flat field: the scan page offers no stitch, and the API refuses one saying why
    wafer = Sample.objects.create(project=scan_with_frames.project, name="wafer", surface="bare_silicon")
    bare = bare_silicon_scan(scan_with_frames, shading_frames(simulated, count=2))
    Scan.objects.filter(pk=bare.pk).update(sample=wafer)
    response = api(operator).post("/api/mosaics/", {"scan": bare.pk}, format="json")
    assert response.status_code == 400, response.json()
    error = response.json()["errors"][0]
    assert error["field"] == "scan" and error["code"] == "bare_silicon"
    assert "“wafer” is bare silicon" in error["message"] and "as the flat field" in error["message"]
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
def test_a_stitch_that_fails_after_writing_its_mosaic_keeps_no_mosaic_file(scan_with_frames, monkeypatch,
                                                                           django_capture_on_commit_callbacks):
    from imaging import jobs

    def no_room(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(jobs, "build_pyramid_from_file", no_room)  # the pyramid comes after mosaic.tif
    with django_capture_on_commit_callbacks(execute=False):
        mosaic = queue_mosaic(scan_with_frames)
    run_job("imaging.Mosaic", mosaic.pk, jobs.stitch_work)
    mosaic.refresh_from_db()
    assert mosaic.status == JobStatus.FAILED and "No space left on device" in mosaic.failure_reason
    assert mosaic.image.name == ""
    assert not absolute(f"scans/{scan_with_frames.pk}/mosaics/{mosaic.pk}/mosaic.tif").exists()


@pytest.mark.django_db
def test_a_stitch_lost_with_its_worker_keeps_no_mosaic_file(scan_with_frames):
    rel = f"scans/{scan_with_frames.pk}/mosaics/99/mosaic.tif"
    write_image16(absolute(rel), np.zeros((8, 8), np.uint16), pixel_size_nm=32.5)
    mosaic = Mosaic.objects.create(scan=scan_with_frames, status=JobStatus.RUNNING, image=rel,
                                   heartbeat_at=timezone.now() - timezone.timedelta(hours=1))
    assert reap_stale() == 1
    mosaic.refresh_from_db()
    assert mosaic.status == JobStatus.FAILED and mosaic.image.name == "" and not absolute(rel).exists()


@pytest.mark.django_db
def test_a_job_whose_worker_died_is_failed_by_the_reaper(scan_with_frames, settings):
    mosaic = Mosaic.objects.create(scan=scan_with_frames, status=JobStatus.RUNNING,
                                   heartbeat_at=timezone.now() - timezone.timedelta(hours=1))
    assert reap_stale() == 1
    mosaic.refresh_from_db()
    assert mosaic.status == JobStatus.FAILED and "stopped responding" in mosaic.failure_reason
    # a stitch cannot go on where it stopped: the user is told to start it again, not that it can be resumed
    assert mosaic.failure_reason.endswith("Start it again.")
    assert Scan.objects.get(pk=scan_with_frames.pk).status == "planned"


@pytest.mark.django_db
def test_the_server_starting_again_builds_the_sem_pyramids_a_crash_left_unbuilt(project):
    from django_tasks_db.models import DBTaskResult

    from imaging import tasks
    from imaging.jobs import requeue_lost_sem_pyramids
    from imaging.models import SEMImage

    def sem(name, pyramid=""):
        return SEMImage.objects.create(project=project, name=name, image="s/a.tif", width=64, height=64,
                                       pixel_size_nm=5, pyramid=pyramid)

    lost, waiting, built = sem("lost"), sem("waiting"), sem("built", pyramid="sem/1/3/pyramid-1")
    tasks.build_sem_pyramid.enqueue(waiting.pk)  # its build has not started: it will run
    assert requeue_lost_sem_pyramids() == 1
    queued = [r.args_kwargs["args"] for r in DBTaskResult.objects.filter(task_path=tasks.build_sem_pyramid.module_path)]
    assert sorted(queued) == [[lost.pk], [waiting.pk]] and built.pk not in sum(queued, [])
    assert requeue_lost_sem_pyramids() == 0  # queued now: not twice
