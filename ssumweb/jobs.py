"""Background jobs: the task queue runs the code, the domain object carries what users see.

Every job-bearing model inherits `ssumweb.models.Job`. `run_job` wraps the work: it marks the
object running, gives the work a `Progress` that heartbeats, publishes throttled progress events
and raises `JobCancelled` when a user asked to stop, and records the outcome. `reap_stale` turns
jobs whose worker died (no heartbeat for JOB_HEARTBEAT_TIMEOUT_S) into failed ones with a reason.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from django.apps import apps
from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from . import events
from .errors import DomainError, InvalidTransition, JobCancelled
from .models import JobStatus
from .workers import closing_connections

log = logging.getLogger(__name__)

ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


def topic(obj) -> str:
    return events.topic_for(obj._meta.model_name, obj.pk)


def _save(obj, *fields: str) -> None:
    type(obj).objects.filter(pk=obj.pk).update(**{f: getattr(obj, f) for f in fields})


def _publish_status(obj, **extra) -> None:
    events.publish(topic(obj), "job.status", status=obj.status, progress=obj.progress,
                   message=obj.message, failure_reason=obj.failure_reason, **extra)


def mark_queued(obj, *, task_id: str = "") -> None:
    """Put a finished (failed/cancelled) job back in the queue, e.g. to resume it."""
    with transaction.atomic():
        # One conditional update: of two requests at once only one finds the job finished (a read, then a
        # write, let both through and queued the training twice).
        fields = {"status": JobStatus.QUEUED, "failure_reason": "", "cancel_requested": False, "finished_at": None}
        if task_id:
            fields["task_id"] = task_id
        queued = type(obj).objects.filter(pk=obj.pk, status__in=(JobStatus.FAILED, JobStatus.CANCELLED)).update(**fields)
        obj.refresh_from_db()
        if not queued:
            state = "already queued or running" if obj.status in ACTIVE else obj.status
            raise InvalidTransition(f"Only a failed or cancelled {obj._meta.verbose_name} can be queued again; "
                                    f"this one is {state}.")
        _publish_status(obj)


def request_cancel(obj) -> None:
    with transaction.atomic():
        obj.refresh_from_db()
        if obj.status not in ACTIVE:
            raise InvalidTransition(f"Only a queued or running job can be cancelled; this one is {obj.status}.")
        if obj.status == JobStatus.QUEUED:
            obj.status, obj.finished_at, obj.message = JobStatus.CANCELLED, timezone.now(), "Cancelled before it started."
            _save(obj, "status", "finished_at", "message")
        else:
            obj.cancel_requested = True
            _save(obj, "cancel_requested")
        _publish_status(obj)


@dataclass
class Progress:
    """Handed to the work function: heartbeat, progress events, and the cancel check."""

    obj: object
    min_interval_s: float = 0.5
    _last_sent: float = field(default=0.0, repr=False)

    def __call__(self, fraction: float, message: str = "", *, force: bool = False, cancellable: bool = True,
                 **extra) -> None:
        """Record and publish progress; then stop the work (JobCancelled) if a user asked, unless not
        ``cancellable``: work that checks for a cancel itself, to save what it has first."""
        obj = self.obj
        now = time.monotonic()
        obj.progress = max(0.0, min(1.0, float(fraction)))
        obj.message = message[:500]
        obj.heartbeat_at = timezone.now()
        model = type(obj)
        model.objects.filter(pk=obj.pk).update(progress=obj.progress, message=obj.message, heartbeat_at=obj.heartbeat_at)
        if force or extra or now - self._last_sent >= self.min_interval_s:
            self._last_sent = now
            events.publish(topic(obj), "job.progress", progress=obj.progress, message=obj.message, **extra)
        if cancellable:
            self.check_cancel()

    def check_cancel(self) -> None:
        if type(self.obj).objects.filter(pk=self.obj.pk, cancel_requested=True).exists():
            raise JobCancelled()

    def event(self, type: str, **payload) -> None:
        events.publish(topic(self.obj), type, **payload)


def run_job(model_label: str, pk: int, work: Callable[[object, Progress], dict | None]) -> dict:
    """Run `work(obj, progress)` for a queued job and record how it ended. Returns a JSON summary."""
    model = apps.get_model(model_label)
    with transaction.atomic():
        obj = model.objects.select_for_update().get(pk=pk)
        if obj.status != JobStatus.QUEUED:
            log.info("%s %s is %s, not queued: skipping", model_label, pk, obj.status)
            return {"skipped": obj.status}
        obj.status, obj.started_at, obj.heartbeat_at = JobStatus.RUNNING, timezone.now(), timezone.now()
        obj.failure_reason, obj.message = "", "Started."
        _save(obj, "status", "started_at", "heartbeat_at", "failure_reason", "message")
        _publish_status(obj)
    progress = Progress(obj)
    beating = _Heartbeat(model, pk)
    try:
        result = work(obj, progress) or {}
    except JobCancelled:
        obj.status, obj.message = JobStatus.CANCELLED, "Cancelled by a user."
        result = {"cancelled": True}
    except Exception as exc:  # the job's failure is data for the user, not a crash of the worker
        if isinstance(exc, DomainError):  # a refusal the user caused and is told of: no bug to trace
            log.info("%s %s failed: %s", model_label, pk, _reason(exc))
        else:
            log.exception("%s %s failed", model_label, pk)
        obj.status, obj.failure_reason = JobStatus.FAILED, _reason(exc)
        obj.message = "Failed."
        result = {"failed": obj.failure_reason}
    else:
        obj.status, obj.progress, obj.message = JobStatus.SUCCEEDED, 1.0, "Done."
    finally:
        beating.stop()
    if obj.status in (JobStatus.FAILED, JobStatus.CANCELLED):
        obj.discard_unfinished_output()
    obj.finished_at = timezone.now()
    with transaction.atomic():
        _save(obj, "status", "progress", "message", "failure_reason", "finished_at")
        _publish_status(obj)
    return result


class _Heartbeat:
    """Beats for a running job while its worker lives, even inside one long call without progress.

    A stale heartbeat then means exactly that the worker died, which is what the reaper looks for."""

    interval_s = 10.0

    def __init__(self, model, pk):
        import threading

        self.model, self.pk = model, pk
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=closing_connections(self._run),
                                       name=f"heartbeat-{model._meta.model_name}-{pk}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.wait(self.interval_s):
            try:
                self.model.objects.filter(pk=self.pk, status=JobStatus.RUNNING).update(heartbeat_at=timezone.now())
            except Exception:
                log.warning("heartbeat of %s %s failed", self.model.__name__, self.pk, exc_info=True)

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)


def _reason(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:2000]


def reap_stale(now=None) -> int:
    """Fail running jobs whose heartbeat stopped: their worker died. Returns how many."""
    now = now or timezone.now()
    limit = now - timedelta(seconds=settings.JOB_HEARTBEAT_TIMEOUT_S)
    count = 0
    for model in job_models():
        for obj in model.objects.filter(status=JobStatus.RUNNING, heartbeat_at__lt=limit):
            _fail_lost(obj, now, f"The worker stopped responding (last heartbeat {obj.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC).")
            count += 1
    return count


def reap_interrupted(now=None) -> int:
    """Fail the jobs the embedded server's own workers were running when it stopped, as it starts again.

    Nothing else runs them, so they can never finish; the heartbeat timeout would only show them
    running for two more minutes. Queued jobs whose task a worker had already taken fail too: the
    queue never hands a taken task out again. A job without a heartbeat (a live mosaic: the
    hardware worker's, growing with a paused scan) is not the task workers' and stays.
    """
    from django_tasks_db.models import DBTaskResult

    now = now or timezone.now()
    taken = [str(pk) for pk in DBTaskResult.objects.running().values_list("id", flat=True)]
    count = 0
    for model in job_models():
        lost = model.objects.filter(models.Q(status=JobStatus.RUNNING, heartbeat_at__isnull=False)
                                    | models.Q(status=JobStatus.QUEUED, task_id__in=taken))
        for obj in lost:
            _fail_lost(obj, now, "The server stopped while this job ran.")
            count += 1
    return count


def _fail_lost(obj, now, what: str) -> None:
    obj.discard_unfinished_output()
    with transaction.atomic():
        obj.status, obj.finished_at = JobStatus.FAILED, now
        obj.failure_reason = what + (" It can be resumed." if getattr(obj, "resumable", False) else " Start it again.")
        obj.message = "Worker lost."
        _save(obj, "status", "finished_at", "failure_reason", "message")
        _publish_status(obj)


def job_models():
    from .models import Job

    return [m for m in apps.get_models() if issubclass(m, Job)]
