"""Starting, resuming and cancelling training runs and translations."""
from django.db import transaction

from ssumweb import jobs
from ssumweb.errors import DomainError, InvalidTransition
from ssumweb.models import JobStatus
from ssumweb.tasking import enqueue_after_commit

from .models import TrainingRun, Translation


def queue_training(*, project_id: int, name: str, registrations, settings: dict, user=None) -> TrainingRun:
    for registration in registrations:
        if registration.status != JobStatus.SUCCEEDED:
            raise DomainError(f"Registration {registration.pk} has not succeeded; only registered pairs can train.",
                              field="registrations")
        if not registration.pairs.exists():
            raise DomainError(f"Registration {registration.pk} has no extracted pairs yet.", field="registrations")
    from . import tasks

    with transaction.atomic():
        run = TrainingRun.objects.create(project_id=project_id, name=name.strip() or "Training run",
                                         config=dict(settings), total_steps=settings["steps"], created_by=user)
        run.registrations.set(registrations)
        enqueue_after_commit(tasks.train_model, run)
    return run


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
