"""Enqueue a task for a job object once the transaction that created it commits."""
from django.db import transaction

from .models import Job


def enqueue_after_commit(task, obj: Job) -> None:
    def _enqueue():
        result = task.enqueue(obj.pk)
        type(obj).objects.filter(pk=obj.pk).update(task_id=str(result.id))

    transaction.on_commit(_enqueue)
