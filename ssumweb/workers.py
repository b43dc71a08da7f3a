"""The embedded default: task workers and the job reaper as threads of the server process.

Scaled out, the same work runs as `manage.py db_worker` and `manage.py hardware_worker` processes.
"""
from __future__ import annotations

import functools
import logging
import threading
import time

from django.db import close_old_connections, connections

log = logging.getLogger(__name__)


def closing_connections(target):
    """``target`` for a thread of its own, closing the thread's database connections when it
    ends. ``close_old_connections`` keeps them for CONN_MAX_AGE (60 s on PostgreSQL), so a
    finished thread's connection stayed open until some later garbage collection."""
    @functools.wraps(target)
    def run(*args, **kwargs):
        try:
            return target(*args, **kwargs)
        finally:
            connections.close_all()
    return run


def start_task_worker(queues: list[str], name: str) -> threading.Thread:
    from django_tasks_db.management.commands.db_worker import Worker

    worker = Worker(queue_names=queues, interval=0.5, batch=False, backend_name="default", startup_delay=False,
                    max_tasks=None, worker_id=name, excluded_queue_names=[])
    thread = threading.Thread(target=closing_connections(worker.run), name=name, daemon=True)
    thread.worker = worker  # worker.running = False stops it after its current task (tests)
    thread.start()
    return thread


def start_reaper(interval_s: float = 30.0) -> threading.Thread:
    from .jobs import reap_stale

    def loop():
        while True:
            try:
                close_old_connections()
                reaped = reap_stale()
                if reaped:
                    log.warning("marked %d job(s) whose worker stopped as failed", reaped)
            except Exception:
                log.exception("job reaper failed")
            time.sleep(interval_s)

    thread = threading.Thread(target=loop, name="job-reaper", daemon=True)
    thread.start()
    return thread
