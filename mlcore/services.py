"""Starting, resuming and cancelling training runs and translations."""
import numpy as np
from django.db import transaction

from imaging.models import PairSet
from ssumweb import jobs
from ssumweb.errors import DomainError, InvalidTransition
from ssumweb.models import JobStatus
from ssumweb.tasking import enqueue_after_commit

from .models import TrainingRun, Translation


def queue_training(*, project_id: int, name: str, registrations, settings: dict, pair_sets=(), user=None) -> TrainingRun:
    """A run on one pair set of each registration: the one in ``pair_sets``, else its newest finished one."""
    for registration in registrations:
        if registration.status != JobStatus.SUCCEEDED:
            raise DomainError(f"Registration {registration.pk} has not succeeded; only registered pairs can train.",
                              field="registrations")
    chosen = _one_pair_set_each(registrations, pair_sets)
    _check_splits_apart(chosen)
    smallest = min(chosen, key=lambda p: p.tile_px)
    crop = int(settings.get("crop_px", 256))
    if crop > smallest.tile_px:  # the run would train on smaller crops than asked (it took the tile size quietly)
        raise DomainError(f"Crops of {crop} px do not fit the {smallest.tile_px} px tiles of pair set {smallest.pk}: "
                          f"at most {smallest.tile_px} px.", field="config.crop_px")
    from . import tasks

    with transaction.atomic():
        run = TrainingRun.objects.create(project_id=project_id, name=name.strip() or "Training run",
                                         config=dict(settings), total_steps=settings["steps"], created_by=user)
        run.registrations.set(registrations)
        run.pair_sets.set(chosen)
        enqueue_after_commit(tasks.train_model, run)
    return run


def _one_pair_set_each(registrations, pair_sets) -> list[PairSet]:
    # a registration's sets cover the same places: a test tile of one may lie under a training tile of another
    by_registration: dict[int, PairSet] = {}
    for pair_set in pair_sets:
        if pair_set.registration_id not in {r.pk for r in registrations}:
            raise DomainError(f"Pair set {pair_set.pk} is not of one of the chosen registrations.", field="pair_sets")
        if other := by_registration.get(pair_set.registration_id):
            raise DomainError(f"Pair sets {other.pk} and {pair_set.pk} are both of registration "
                              f"{pair_set.registration_id}: their tiles cover the same places, so a test tile of one "
                              "could lie under a training tile of the other; choose one.", field="pair_sets")
        if pair_set.status != JobStatus.SUCCEEDED or not pair_set.pairs.exists():
            raise DomainError(f"Pair set {pair_set.pk} has no extracted pairs.", field="pair_sets")
        by_registration[pair_set.registration_id] = pair_set
    for registration in registrations:
        if registration.pk not in by_registration:
            newest = (registration.pair_sets.filter(status=JobStatus.SUCCEEDED, pairs__isnull=False)
                      .order_by("-created_at", "-pk").first())
            if newest is None:
                raise DomainError(f"Registration {registration.pk} has no extracted pairs yet.", field="registrations")
            by_registration[registration.pk] = newest
    return [by_registration[r.pk] for r in registrations]


def _check_splits_apart(pair_sets) -> None:
    """Refuse sets where a test tile of one covers a place a training tile of another shows:
    imaging.pairs keeps the splits apart within a set only. Places are compared wherever two sets
    share a frame of reference: one mosaic (two registrations of it: exact, in its pixels), one SEM
    image (registered to two mosaics: in its pixels, through each registration) or one instrument's
    stage with one sample on it (two scans of the same area, or a scan stitched again: in nm from
    each mosaic's stage origin, to within the stage's and the stitch's error)."""
    places = {p.pk: _tile_places(p) for p in pair_sets}  # read once each
    for test_set in pair_sets:
        for train_set in pair_sets:
            if train_set is test_set:
                continue
            for frame, (test_boxes, _, tolerance) in places[test_set.pk].items():
                if frame not in places[train_set.pk]:
                    continue
                a, b = test_boxes[:, None], places[train_set.pk][frame][1][None]
                if ((a[..., 0] < b[..., 2] - tolerance) & (b[..., 0] < a[..., 2] - tolerance)
                        & (a[..., 1] < b[..., 3] - tolerance) & (b[..., 1] < a[..., 3] - tolerance)).any():
                    raise DomainError(f"Pair sets {test_set.pk} (registration {test_set.registration_id}) and "
                                      f"{train_set.pk} (registration {train_set.registration_id}) are cut from "
                                      f"{_FRAME_WORDS[frame[0]]}, and a test tile of one overlaps a training tile of "
                                      "the other; train on one of these registrations.", field="registrations")


_FRAME_WORDS = {"mosaic": "one mosaic", "sem": "one SEM image", "stage": "the same place on one sample"}


def _tile_places(pair_set) -> dict:
    """``{frame: (test boxes, train boxes, tolerance)}`` of a set's tiles, (n, 4) x0, y0, x1, y1 arrays in
    each frame of reference it has (see :func:`_check_splits_apart`), the tolerance in the frame's units:
    tiles that only touch, or overlap by less than the frame's error, do not overlap."""
    from imaging.pairs import box_in_mosaic

    registration = pair_set.registration
    mosaic = registration.mosaic
    rows = list(pair_set.pairs.values_list("box_x", "box_y", "box_size", "pixel_size_nm", "split"))
    by_split = {}
    for split in ("test", "train"):
        boxes = [(x, y, x + size, y + size, nm) for x, y, size, nm, s in rows if s == split]
        by_split[split] = np.array(boxes, float).reshape(-1, 5)
    mosaic_nm = mosaic.pixel_size_nm or 1.0

    def in_mosaic_px(boxes):  # grid px of each tile's own pixel size → mosaic px
        return np.array([box_in_mosaic(b[:4], b[4] / mosaic_nm) for b in boxes], float).reshape(-1, 4)

    mosaic_boxes = {split: in_mosaic_px(boxes) for split, boxes in by_split.items()}
    places = {("mosaic", mosaic.pk): (mosaic_boxes["test"], mosaic_boxes["train"], 1e-6)}
    to_sem = np.asarray(registration.mosaic_to_sem or np.eye(3), float)

    sem_px_per_mosaic_px = float(np.sqrt(abs(np.linalg.det(to_sem[:2, :2]))))

    def in_sem_px(boxes):
        # each tile's centre through the registration, its size by the registration's scale: a square of the
        # tile's own size, where the box around its rotated corners (up to 5°) would make neighbours overlap
        centre = np.column_stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2, np.ones(len(boxes))])
        mapped = centre @ to_sem.T
        mapped = mapped[:, :2] / mapped[:, 2:]
        half = (boxes[:, 2:] - boxes[:, :2]) / 2 * sem_px_per_mosaic_px
        return np.concatenate([mapped - half, mapped + half], axis=1).reshape(-1, 4)

    places[("sem", registration.sem_image_id)] = (in_sem_px(mosaic_boxes["test"]), in_sem_px(mosaic_boxes["train"]),
                                                  2.0 * sem_px_per_mosaic_px)  # two mosaic px: the registration's error
    scan = mosaic.scan
    if scan.instrument_id is not None and mosaic.origin_x_nm is not None and mosaic.origin_y_nm is not None:
        origin = np.array([mosaic.origin_x_nm, mosaic.origin_y_nm] * 2)
        places[("stage", scan.instrument_id, scan.sample_id)] = (
            origin + mosaic_boxes["test"] * mosaic_nm, origin + mosaic_boxes["train"] * mosaic_nm,
            0.1 * scan.step_nm)  # the stage's error (up to 10 % of a step) and the stitch's
    return places


def resume_training(run: TrainingRun) -> None:
    if run.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
        raise InvalidTransition(f"Only a failed or cancelled run can be resumed; this one is {run.status}.")
    from . import tasks

    with transaction.atomic():
        jobs.mark_queued(run)
        enqueue_after_commit(tasks.train_model, run)


def queue_translation(mosaic, model, *, live: bool = False, user=None) -> Translation:
    if mosaic.status != JobStatus.SUCCEEDED and not live:
        raise DomainError("The mosaic is not ready yet.", field="mosaic", code="invalid_state")
    from . import tasks

    with transaction.atomic():
        translation = Translation.objects.create(mosaic=mosaic, model=model, live=live, created_by=user)
        if not live:
            enqueue_after_commit(tasks.translate_mosaic, translation)
    return translation
