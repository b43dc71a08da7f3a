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
