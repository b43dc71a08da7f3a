"""The demo from its project page in Chromium: the steps fill in and the project's scan list follows without a
reload (tiny training budget)."""
import re
import time

import pytest
from playwright.sync_api import expect

from imaging.models import Sample
from instruments.models import Instrument
from instruments.worker import HardwareWorker
from ssumweb import demo
from ssumweb.models import DemoRun, JobStatus, Membership, Project, Role
from ssumweb.workers import start_task_worker

from .conftest import screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def demo_lab(live_url, django_user_model, monkeypatch):
    monkeypatch.setattr(demo, "DEMO_TRAINING", {**demo.DEMO_TRAINING, "steps": 4, "crop_px": 32, "blocks": 1,
                                                "features": 4})
    project = Project.objects.create(name="Demo project", is_demo=True)
    user = django_user_model.objects.create_user(username="dora", password="pw-dora")
    Membership.objects.create(project=project, user=user, role=Role.OPERATOR)
    instrument = Instrument.objects.create(project=project, name="Simulated SSUM", sim_seed=7)
    Sample.objects.create(project=project, name="Synthetic IC chip", sim_seed=7)
    hardware = HardwareWorker(instrument.pk, poll_s=0.1).start()
    runner = start_task_worker(["demo"], "browser-demo")  # the server's workers run the other queues
    yield {"url": live_url, "project": project}
    deadline = time.monotonic() + 300  # let the demo end before its workers stop
    while DemoRun.objects.exclude(status__in=[JobStatus.SUCCEEDED, JobStatus.FAILED]).exists():
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    runner.worker.running = False
    hardware.stop()
    runner.join(timeout=60)


def test_demo_steps_the_scan_list_and_the_sample_counts_follow_without_a_reload(page, demo_lab):
    url = demo_lab["url"]
    page.goto(f"{url}/login/")
    page.get_by_label("Username").fill("dora")
    page.get_by_label("Password").fill("pw-dora")
    page.get_by_role("button", name="Log in").click()
    page.goto(f"{url}/projects/{demo_lab['project'].pk}/")
    expect(page.locator("#project-scans")).to_contain_text("No scans yet")
    page.get_by_role("button", name="Run the demo").click()
    expect(page.locator("#demo-steps li").first).to_be_visible(timeout=20_000)
    # the demo's scan joins the project's scan list while the demo runs
    expect(page.locator("#project-scans .scan-card")).to_have_count(1, timeout=60_000)
    # and each sample's scan count with it (it said "0 scans" until a reload)
    expect(page.locator("#project-samples li", has_text="Synthetic IC chip")).to_contain_text(
        re.compile(r"[1-9] scans?"), timeout=60_000)
    screenshot(page, "project-demo-running")
    # a reload follows the same demo: its steps again, and no second one can be started meanwhile
    page.reload()
    expect(page.locator("#demo-steps li")).to_have_count(len(demo.STEPS), timeout=20_000)
    expect(page.locator("#demo-steps li").first).to_contain_text("Calibrate the flat field on bare silicon")
    if DemoRun.objects.get().status in (JobStatus.QUEUED, JobStatus.RUNNING):
        expect(page.get_by_role("button", name="Run the demo")).to_be_disabled()
    assert DemoRun.objects.count() == 1
    assert not page.console_errors, page.console_errors
