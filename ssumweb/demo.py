""""Run the demo": the whole lab workflow on the simulated instrument, each step visible as it happens.

flat field on bare silicon → scan → live mosaic → final stitch → a simulated SEM image uploaded like a user's → registration
(automatic; the simulator's ground truth as landmarks if that fails, and the page says so) →
pairs → a short CPU training run → translation of the mosaic → the side-by-side viewer.
Each step uses the same services, jobs and files as a user's own work.
"""
from __future__ import annotations

import logging
import time

import numpy as np
from django.db import IntegrityError, transaction
from django.urls import reverse

from imaging.models import Mosaic, Registration, Sample, SampleSurface, Scan, ScanStatus
from imaging.services import plan_scan, request_action

from . import events
from .errors import DomainError
from .jobs import topic
from .models import DemoRun, JobStatus, Project

log = logging.getLogger(__name__)

STEPS = [
    ("flatfield", "Calibrate the flat field on bare silicon"),
    ("scan", "Scan a 3 × 3 field on the chip"),
    ("mosaic", "Stitch the mosaic"),
    ("sem", "Upload a simulated SEM image"),
    ("registration", "Register the SEM image to the mosaic"),
    ("pairs", "Cut LR/HR training pairs"),
    ("training", "Train a small CycleGAN on the CPU"),
    ("translation", "Translate the mosaic into an SEM-like image"),
]
# Sized for a laptop CPU: a few minutes in all. The demo's pairs are registered, so the paired L1 term
# is on: it lets so short a run learn the mapping at all.
DEMO_TRAINING = {"steps": 600, "crop_px": 64, "batch_size": 2, "blocks": 3, "features": 16, "lambda_cycle": 10.0,
                 "lambda_contextual": 1.0, "lambda_paired": 10.0, "learning_rate": 1e-3, "seed": 0}
STEP_TIMEOUT_S = 900


def start_demo(project: Project, user) -> DemoRun:
    if not project.is_demo:
        raise DomainError("The demo runs only in the demo project.", field="project")
    instrument = project.instruments.filter(piezo_address="sim").first()
    if instrument is None:
        raise DomainError("The demo project has no simulated instrument.", field="project")
    if DemoRun.objects.filter(project=project, status__in=[JobStatus.QUEUED, JobStatus.RUNNING]).exists():
        raise _already_running()
    from .tasking import enqueue_after_commit
    from .tasks import run_demo

    try:
        with transaction.atomic():
            demo = DemoRun.objects.create(project=project, created_by=user, steps=[
                {"name": name, "label": label, "status": "pending", "message": "", "url": ""} for name, label in STEPS])
            enqueue_after_commit(run_demo, demo)
    except IntegrityError:  # another press started one since the check above
        raise _already_running() from None
    return demo


def _already_running() -> DomainError:
    return DomainError("A demo is already running in this project.", field="project", code="invalid_state")


class Steps:
    def __init__(self, demo: DemoRun, progress):
        self.demo, self.progress = demo, progress

    def set(self, name: str, status: str, message: str = "", url: str = "") -> None:
        steps = self.demo.steps
        for number, step in enumerate(steps):
            if step["name"] == name:
                step.update(status=status, message=message, url=url or step["url"])
                done = sum(s["status"] == "succeeded" for s in steps)
                DemoRun.objects.filter(pk=self.demo.pk).update(steps=steps)
                self.progress(done / len(steps), f"{step['label']}: {message or status}", force=True,
                              step=name, step_status=status, step_number=number)
                return


def run_scan(scan: Scan, progress) -> Scan:
    """Start a planned scan and wait until it stops; a scan that did not complete is the step's failure."""
    request_action(scan, "start")
    wait_for(lambda: Scan.objects.filter(pk=scan.pk, status__in=[ScanStatus.COMPLETED, ScanStatus.FAILED,
                                                                 ScanStatus.ABORTED, ScanStatus.PAUSED]).first(),
             f"the scan “{scan.name}”", progress)
    scan.refresh_from_db()
    if scan.status != ScanStatus.COMPLETED:
        raise DomainError(f"The scan “{scan.name}” stopped ({scan.status}): {scan.status_reason}")
    return scan


def calibrate_flat_field(project, instrument, user, demo, progress, *, side: float) -> str:
    """The instrument's flat field from a 2 × 2 scan of the project's bare-silicon wafer, unless it has one:
    the chip's live mosaic, final stitch and training pairs are then free of the sphere's shading."""
    from imaging.jobs import set_flatfield_calibration

    if instrument.flatfield_calibration_id is not None:
        return f"Already calibrated with scan “{instrument.flatfield_calibration.name}”."
    wafer = Sample.objects.filter(project=project, surface=SampleSurface.BARE_SILICON).first() or Sample.objects.create(
        project=project, name="Bare silicon wafer", surface=SampleSurface.BARE_SILICON)
    # frames a step (the usable square's ``side``) apart: dust on the wafer moves, the shading stays
    bare = run_scan(plan_scan(sample=wafer, name=f"Demo flat field {demo.pk}", instrument=instrument, user=user,
                              plan=dict(origin_x_nm=10_000, origin_y_nm=10_000, size_x_nm=2 * side, size_y_nm=2 * side,
                                        overlap=0.0, exposure_ms=10, contact_setpoint_nm=20)), progress)
    set_flatfield_calibration(instrument, bare)
    return f"{bare.frames.count()} frames of bare silicon are now {instrument.name}'s flat field."


def wait_for(predicate, what: str, progress, timeout_s: float = STEP_TIMEOUT_S, poll_s: float = 1.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        progress.check_cancel()
        time.sleep(poll_s)
    raise DomainError(f"Timed out waiting for {what}.")


def demo_work(demo: DemoRun, progress) -> dict:
    steps = Steps(demo, progress)
    project = demo.project
    instrument = project.instruments.filter(piezo_address="sim").first()
    chips = Sample.objects.filter(project=project, sim_seed__isnull=False, surface=SampleSurface.CHIP)
    sample = chips.first() or Sample.objects.create(
        project=project, name="Synthetic IC chip", sim_seed=instrument.sim_seed)
    user = demo.created_by
    side = instrument.fov_diameter_nm / 2**0.5

    steps.set("flatfield", "running", "Scanning bare silicon through the sphere…")
    calibration_note = calibrate_flat_field(project, instrument, user, demo, progress, side=side)
    steps.set("flatfield", "succeeded", calibration_note,
              reverse("frontend:scan", args=[instrument.flatfield_calibration_id]))

    steps.set("scan", "running", "Planning and starting the scan…")
    step_nm = side * 0.7
    scan = plan_scan(sample=sample, name=f"Demo scan {demo.pk}", instrument=instrument, user=user, plan=dict(
        origin_x_nm=40_000, origin_y_nm=40_000, size_x_nm=side + 2 * step_nm, size_y_nm=side + 2 * step_nm,
        overlap=0.3, exposure_ms=10, contact_setpoint_nm=20))
    scan_url = reverse("frontend:scan", args=[scan.pk])
    steps.set("scan", "running", f"Scanning {scan.frames_total} fields of view…", scan_url)
    run_scan(scan, progress)
    steps.set("scan", "succeeded", f"{scan.frames.count()} frames saved.", scan_url)

    steps.set("mosaic", "running", "Final stitch: global solve, flat field, pyramid…", scan_url)
    mosaic = wait_for(lambda: Mosaic.objects.filter(scan=scan, status__in=[JobStatus.SUCCEEDED, JobStatus.FAILED]).first(),
                      "the mosaic", progress)
    if mosaic.status != JobStatus.SUCCEEDED:
        raise DomainError(f"Stitching failed: {mosaic.failure_reason}")
    viewer = reverse("frontend:viewer") + f"?mosaic={mosaic.pk}"
    steps.set("mosaic", "succeeded", f"{mosaic.width} × {mosaic.height} px at {mosaic.pixel_size_nm:.1f} nm/px.", viewer)

    steps.set("sem", "running", "Imaging the same area in the simulated SEM…")
    sem, sem_to_chip, mosaic_to_chip = upload_simulated_sem(project, sample, instrument, mosaic, user)
    steps.set("sem", "succeeded", f"{sem.width} × {sem.height} px at {sem.pixel_size_nm:.1f} nm/px "
                                  f"(pixel size from the file; data bar of {sem.data_bar_rows} rows cut).",
              reverse("frontend:sem-pair", args=[sem.pk]))

    steps.set("registration", "running", "Sweeping rotation and scale, polishing and checking each candidate…")
    registration = run_registration(mosaic, sem, user, progress)
    note = "automatic"
    if registration.status != JobStatus.SUCCEEDED:
        reason = registration.failure_reason
        landmarks = ground_truth_landmarks(mosaic, mosaic_to_chip, sem_to_chip)
        registration = run_registration(mosaic, sem, user, progress, landmarks=landmarks)
        note = f"automatic registration failed ({reason}); used the simulator's ground truth as landmarks"
    if registration.status != JobStatus.SUCCEEDED:
        raise DomainError(f"Registration failed: {registration.failure_reason}")
    Registration.objects.filter(pk=registration.pk).update(accepted=True)
    steps.set("registration", "succeeded", f"Residual {registration.residual_px or 0:.2f} px ({note}).",
              viewer + f"&sem={registration.pk}")

    steps.set("pairs", "running", "Cutting 128 px pairs over the overlap…")
    from imaging.jobs import queue_pairs

    pair_set = queue_pairs(registration, tile_px=128, stride_px=64, test_fraction=0.25)
    pair_set = wait_for(lambda: _finished(type(pair_set), pair_set.pk), "the pairs", progress)
    if pair_set.status != JobStatus.SUCCEEDED:
        raise DomainError(f"Pair extraction failed: {pair_set.failure_reason}")
    pairs, held_out = pair_set.pairs.count(), pair_set.pairs.filter(split="test").count()
    steps.set("pairs", "succeeded", f"{pairs} pair{'' if pairs == 1 else 's'} ({held_out} held out for testing).",
              reverse("frontend:registration", args=[registration.pk]))

    from mlcore.models import TrainedModel, TrainingRun, Translation
    from mlcore.services import queue_training, queue_translation

    run = queue_training(project_id=project.pk, name=f"Demo model {demo.pk}", registrations=[registration],
                         settings=DEMO_TRAINING, user=user)
    run_url = reverse("frontend:training-run", args=[run.pk])
    steps.set("training", "running", f"{DEMO_TRAINING['steps']} steps on the CPU…", run_url)
    run = wait_for(lambda: _finished(TrainingRun, run.pk), "the training run", progress)
    if run.status != JobStatus.SUCCEEDED:
        raise DomainError(f"Training failed: {run.failure_reason}")
    model = TrainedModel.objects.get(training_run=run)
    steps.set("training", "succeeded", f"Model {model.name}: {summary(model.metrics)}", run_url)

    steps.set("translation", "running", "Tiled inference over the whole mosaic…")
    translation = queue_translation(mosaic, model, user=user)
    translation = wait_for(lambda: _finished(Translation, translation.pk), "the translation", progress)
    if translation.status != JobStatus.SUCCEEDED:
        raise DomainError(f"Translation failed: {translation.failure_reason}")
    final = viewer + f"&translation={translation.pk}&sem={registration.pk}"
    steps.set("translation", "succeeded", "Open the side-by-side viewer.", final)
    events.publish(topic(demo), "demo.finished", url=final)
    return {"viewer": final}


def _finished(model, pk):
    return model.objects.filter(pk=pk, status__in=[JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED]).first()


def summary(metrics: dict) -> str:
    if not metrics.get("model"):
        return "no held-out pairs to score."
    return (f"PSNR {metrics['model']['psnr']:.1f} dB vs {metrics['input']['psnr']:.1f} dB for the input, "
            f"on {metrics['pairs']} held-out pairs.")


def run_registration(mosaic, sem, user, progress, landmarks=None):
    from imaging.jobs import queue_registration

    method = "landmarks" if landmarks else "automatic"
    registration = queue_registration(mosaic, sem, method=method, landmarks=landmarks or [], user=user)
    return wait_for(lambda: _finished(Registration, registration.pk), "the registration", progress)


def upload_simulated_sem(project, sample, instrument, mosaic, user):
    """Render the SEM view of the mosaic's area and import it exactly as an uploaded file."""
    import tempfile
    from pathlib import Path

    from django.core.files.uploadedfile import SimpleUploadedFile

    from imaging.sem_service import import_sem_upload
    from instruments.sim.dataset import simulate_sem
    from instruments.sim.sem import write_sem_tiff
    from instruments.sim.world import SimWorld

    world = SimWorld(seed=instrument.sim_seed)
    # mosaic px → chip nm: the mosaic's origin is a stage position; the scan region sits at scan_origin on the chip.
    px = mosaic.pixel_size_nm
    ox, oy = world.scan_origin_nm[0] + mosaic.origin_x_nm, world.scan_origin_nm[1] + mosaic.origin_y_nm
    mosaic_to_chip = np.array([[px, 0, ox], [0, px, oy], [0, 0, 1.0]])
    centre = mosaic_to_chip @ np.array([mosaic.width / 2, mosaic.height / 2, 1.0])
    sem_px = px * 1.6
    size = int(min(mosaic.width, mosaic.height) * px / sem_px * 0.8)
    simulated = simulate_sem(seed=instrument.sim_seed, centre_xy_nm=(centre[0], centre[1]), shape=(size, size),
                             pixel_size_nm=sem_px, rotation_deg=1.5)
    with tempfile.TemporaryDirectory() as folder:
        path = write_sem_tiff(Path(folder) / "demo_sem.tif", simulated)
        upload = SimpleUploadedFile("demo_sem.tif", path.read_bytes(), content_type="image/tiff")
    sem = import_sem_upload(project=project, sample=sample, upload=upload, name="Simulated SEM (demo)",
                            pixel_size_nm=None, page=None, user=user)
    return sem, np.asarray(simulated.sem_to_chip), mosaic_to_chip


def ground_truth_landmarks(mosaic, mosaic_to_chip, sem_to_chip) -> list[list[float]]:
    chip_to_sem = np.linalg.inv(sem_to_chip)
    points = []
    for fx, fy in ((0.35, 0.35), (0.65, 0.35), (0.35, 0.65), (0.65, 0.65)):
        m = np.array([fx * mosaic.width, fy * mosaic.height, 1.0])
        s = chip_to_sem @ (mosaic_to_chip @ m)
        points.append([float(m[0]), float(m[1]), float(s[0]), float(s[1])])
    return points
