"""The training run page of a resumed run in real Chromium: the events of the steps it dropped are replayed when the
page opens, then its training.resumed event cuts the curves and samples back to the checkpoint."""
import io

import numpy as np
import pytest
from PIL import Image

from mlcore.models import TrainingRun
from ssumweb import events
from ssumweb.media import absolute
from ssumweb.models import JobStatus, Membership, Project, Role

from .conftest import screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

NOTE = "Resumed from the checkpoint at step 3 of 12; steps 4–5, done after it, are trained again."


def test_a_resumed_run_shows_each_step_once_and_where_it_went_on_from(page, live_url, django_user_model):
    project = Project.objects.create(name="Resume lab")
    user = django_user_model.objects.create_user(username="ada-resume", password="pw-ada")
    Membership.objects.create(project=project, user=user, role=Role.OPERATOR)
    run = TrainingRun.objects.create(project=project, name="resumed", config={"steps": 12}, total_steps=12,
                                     status=JobStatus.RUNNING, step=3, resume_note=NOTE,
                                     loss_history=[{"step": s, "g_total": 1.0 / s} for s in range(1, 4)])
    run.samples = [f"training/{run.pk}/samples/step{s:07d}.png" for s in range(1, 4)]
    run.save(update_fields=["samples"])
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 24), 128, np.uint8)).save(buffer, format="PNG")
    for path in run.samples:
        absolute(path).parent.mkdir(parents=True, exist_ok=True)
        absolute(path).write_bytes(buffer.getvalue())
    topic = events.topic_for("trainingrun", run.pk)
    for step in range(1, 6):  # the first try, killed at step 5 (checkpoint at 3)
        events.publish(topic, "job.progress", step=step, losses={"step": step, "g_total": 2.0}, sample_index=step - 1)
    events.publish(topic, "training.resumed", step=3, samples=3, note=NOTE)

    page.goto(f"{live_url}/login/")
    page.get_by_label("Username").fill("ada-resume")
    page.get_by_label("Password").fill("pw-ada")
    page.get_by_role("button", name="Log in").click()
    page.goto(f"{live_url}/training/{run.pk}/")
    page.wait_for_function("document.getElementById('conn-status').textContent === 'live'")
    page.wait_for_timeout(300)
    assert page.evaluate("window.ssumLossPlot.history.map((e) => e.step)") == [1, 2, 3]
    assert page.locator("#samples figure").count() == 3
    assert page.locator("#run-resumed").inner_text() == NOTE
    assert page.locator("#run-steps").inner_text() == "3 / 12 steps"
    screenshot(page, "training-resumed")

    events.publish(topic, "job.progress", step=4, losses={"step": 4, "g_total": 0.2}, sample_index=3)  # trained again
    page.wait_for_function("window.ssumLossPlot.history.length === 4")
    assert page.evaluate("window.ssumLossPlot.history.map((e) => e.g_total)")[-1] == 0.2
    assert page.locator("#samples figure").count() == 4
    assert page.console_errors == []
