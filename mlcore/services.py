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
    """Refuse sets cut from one mosaic (through two registrations of it) where a test tile of one overlaps a
    training tile of another: imaging.pairs keeps the splits apart within a set only."""
    def extents_nm(pair_set, split):  # (n, 4) x0, y0, x1, y1 on the mosaic, whatever each set's pixel size
        rows = pair_set.pairs.filter(split=split).values_list("box_x", "box_y", "box_size", "pixel_size_nm")
        x, y, size, nm = np.array(list(rows), float).reshape(-1, 4).T
        return np.stack([x, y, x + size, y + size], axis=1) * nm[:, None]

    shared = [p for p in pair_sets
              if sum(q.registration.mosaic_id == p.registration.mosaic_id for q in pair_sets) > 1]
    extents = {(p.pk, split): extents_nm(p, split) for p in shared for split in ("train", "test")}  # read once each
    for test_set in shared:
        for train_set in shared:
            if train_set is test_set or train_set.registration.mosaic_id != test_set.registration.mosaic_id:
                continue
            a, b = extents[test_set.pk, "test"][:, None], extents[train_set.pk, "train"][None]
            eps = 1e-6  # nm: tiles that only touch do not overlap
            if ((a[..., 0] < b[..., 2] - eps) & (b[..., 0] < a[..., 2] - eps)
                    & (a[..., 1] < b[..., 3] - eps) & (b[..., 1] < a[..., 3] - eps)).any():
                raise DomainError(f"Pair sets {test_set.pk} (registration {test_set.registration_id}) and "
                                  f"{train_set.pk} (registration {train_set.registration_id}) are cut from one mosaic "
                                  "and a test tile of one overlaps a training tile of the other; train on one of "
                                  "these registrations.", field="registrations")


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
