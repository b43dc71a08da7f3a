"""The job runner: how a job's end is recorded and what the server log says of it."""
import logging

import pytest

from ssumweb.errors import DomainError
from ssumweb.jobs import run_job
from ssumweb.models import DemoRun, JobStatus


def refused(demo, progress):
    raise DomainError("The SEM image does not overlap the mosaic.")


def crashed(demo, progress):
    raise KeyError("footprint_share")


@pytest.mark.django_db
def test_a_refusal_is_one_line_in_the_log_and_a_crash_keeps_its_traceback(project, caplog):
    caplog.set_level(logging.INFO, logger="ssumweb.jobs")
    demo = DemoRun.objects.create(project=project)
    assert run_job("ssumweb.DemoRun", demo.pk, refused) == {"failed": "The SEM image does not overlap the mosaic."}
    [record] = [r for r in caplog.records if r.name == "ssumweb.jobs"]
    # the user was told why; the operator needs neither a traceback nor an error
    assert record.levelno in (logging.INFO, logging.WARNING) and record.exc_info is None
    assert f"ssumweb.DemoRun {demo.pk}" in record.getMessage() and "does not overlap" in record.getMessage()

    caplog.clear()
    demo = DemoRun.objects.create(project=project)
    run_job("ssumweb.DemoRun", demo.pk, crashed)
    [record] = [r for r in caplog.records if r.name == "ssumweb.jobs"]
    assert record.levelno == logging.ERROR and record.exc_info[0] is KeyError
    demo.refresh_from_db()
    assert demo.status == JobStatus.FAILED and "footprint_share" in demo.failure_reason


@pytest.mark.django_db
def test_a_finished_job_is_queued_again_once_however_often_it_is_asked(project):
    from ssumweb.errors import InvalidTransition
    from ssumweb.jobs import mark_queued

    demo = DemoRun.objects.create(project=project, status=JobStatus.FAILED, failure_reason="the stage stopped")
    stale = DemoRun.objects.get(pk=demo.pk)  # a second request, which read the job before the first queued it
    mark_queued(demo)
    demo.refresh_from_db()
    assert demo.status == JobStatus.QUEUED and demo.failure_reason == "" and demo.finished_at is None
    with pytest.raises(InvalidTransition, match="already queued or running"):
        mark_queued(stale)
    with pytest.raises(InvalidTransition, match="this one is succeeded"):
        mark_queued(DemoRun.objects.create(project=project, status=JobStatus.SUCCEEDED))


@pytest.mark.django_db
def test_one_demo_at_a_time_even_when_two_presses_pass_the_check_together(project, lab_admin, monkeypatch):
    from instruments.models import Instrument
    from ssumweb import demo
    from ssumweb.models import Project

    Project.objects.filter(pk=project.pk).update(is_demo=True)
    project.refresh_from_db()
    Instrument.objects.create(project=project, name="Simulated SSUM", sim_seed=7)
    first = demo.start_demo(project, lab_admin)  # queued after commit: never, in this test's transaction
    with pytest.raises(DomainError, match="already running"):
        demo.start_demo(project, lab_admin)
    # the second press read "none running" before the first was stored: the database refuses it
    with monkeypatch.context() as patch:
        patch.setattr(DemoRun.objects, "filter", lambda **kw: DemoRun.objects.none())
        with pytest.raises(DomainError, match="already running"):
            demo.start_demo(project, lab_admin)
    assert list(DemoRun.objects.all()) == [first]
    DemoRun.objects.filter(pk=first.pk).update(status=JobStatus.SUCCEEDED)
    assert demo.start_demo(project, lab_admin).status == JobStatus.QUEUED  # ended: the next one starts


@pytest.mark.django_db
def test_the_embedded_server_starting_fails_the_jobs_it_was_running_at_once():
    from django.utils import timezone
    from django_tasks_db.models import DBTaskResult

    from ssumweb.jobs import reap_interrupted
    from ssumweb.models import Project

    def demo(**fields):  # a project has one demo going at a time
        return DemoRun.objects.create(project=Project.objects.create(name=f"lab {Project.objects.count()}"), **fields)

    now = timezone.now()
    taken, waiting = (DBTaskResult.objects.create(task_path="ssumweb.tasks.run_demo", status=status, args_kwargs={},
                                                  run_after=now) for status in ("RUNNING", "READY"))
    running = demo(status=JobStatus.RUNNING, heartbeat_at=now)  # beating a moment ago
    started = demo(status=JobStatus.QUEUED, task_id=str(taken.id))
    queued = demo(status=JobStatus.QUEUED, task_id=str(waiting.id))
    # no heartbeat: not the task workers' (a live mosaic of a paused scan is the hardware worker's)
    unowned = demo(status=JobStatus.RUNNING)
    assert reap_interrupted() == 2
    for lost in (running, started):
        lost.refresh_from_db()
        assert lost.status == JobStatus.FAILED
        assert lost.failure_reason == "The server stopped while this job ran. Start it again."
    assert DemoRun.objects.get(pk=queued.pk).status == JobStatus.QUEUED  # its task will still run
    assert DemoRun.objects.get(pk=unowned.pk).status == JobStatus.RUNNING
