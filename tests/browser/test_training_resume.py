"""The training run page in real Chromium: a resumed run's dropped steps are replayed when the page opens, then its
training.resumed event cuts the curves and samples back to the checkpoint; one sample is shown at a time, chosen by
epoch, following the latest unless the reader moved away; the loss plot has a log scale."""
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


def _samples(run, count):
    """``count`` per-epoch sample images on disk and on the run, each a different grey."""
    run.samples = [f"training/{run.pk}/samples/step{s:07d}.png" for s in range(1, count + 1)]
    run.save(update_fields=["samples"])
    for k, path in enumerate(run.samples):
        buffer = io.BytesIO()
        Image.fromarray(np.full((8, 24), 12 * k % 256, np.uint8)).save(buffer, format="PNG")
        absolute(path).parent.mkdir(parents=True, exist_ok=True)
        absolute(path).write_bytes(buffer.getvalue())


def _open(page, live_url, django_user_model, run_kwargs):
    project = Project.objects.create(name="Resume lab")
    user = django_user_model.objects.create_user(username="ada-resume", password="pw-ada")
    Membership.objects.create(project=project, user=user, role=Role.OPERATOR)
    run = TrainingRun.objects.create(project=project, name="resumed", **run_kwargs)
    return run, lambda: _log_in_and_open(page, live_url, run)


def _log_in_and_open(page, live_url, run):
    page.goto(f"{live_url}/login/")
    page.get_by_label("Username").fill("ada-resume")
    page.get_by_label("Password").fill("pw-ada")
    page.get_by_role("button", name="Log in").click()
    page.goto(f"{live_url}/training/{run.pk}/")
    page.wait_for_function("document.getElementById('conn-status').textContent === 'live'")
    page.wait_for_timeout(300)


def _shown(page):
    return page.locator("#sample-caption").inner_text(), page.locator("#sample-epoch").get_attribute("max")


def test_a_resumed_run_shows_each_step_once_and_where_it_went_on_from(page, live_url, django_user_model):
    run, open_page = _open(page, live_url, django_user_model, dict(
        config={"steps": 12}, total_steps=12, status=JobStatus.RUNNING, step=3, resume_note=NOTE,
        loss_history=[{"step": s, "g_total": 1.0 / s} for s in range(1, 4)]))
    _samples(run, 3)
    topic = events.topic_for("trainingrun", run.pk)
    for step in range(1, 6):  # the first try, killed at step 5 (checkpoint at 3)
        events.publish(topic, "job.progress", step=step, losses={"step": step, "g_total": 2.0}, sample_index=step - 1)
    events.publish(topic, "training.resumed", step=3, samples=3, note=NOTE)

    open_page()
    assert page.evaluate("window.ssumLossPlot.history.map((e) => e.step)") == [1, 2, 3]
    assert _shown(page) == ("Epoch 3 of 3", "3")
    assert page.locator("#sample-strip li").count() == 3
    assert page.locator("#run-resumed").inner_text() == NOTE
    assert page.locator("#run-steps").inner_text() == "3 / 12 steps"
    screenshot(page, "training-resumed")

    _samples(run, 4)
    events.publish(topic, "job.progress", step=4, losses={"step": 4, "g_total": 0.2}, sample_index=3)  # trained again
    page.wait_for_function("window.ssumLossPlot.history.length === 4")
    assert page.evaluate("window.ssumLossPlot.history.map((e) => e.g_total)")[-1] == 0.2
    assert _shown(page) == ("Epoch 4 of 4", "4")
    # the sample made again after the cut-back is asked for anew, not the dropped one's cached picture
    assert "after_cut_back=1" in page.locator("#sample-image").get_attribute("src")
    assert page.console_errors == []


def test_one_sample_at_a_time_follows_the_latest_until_the_reader_moves_away(page, live_url, django_user_model):
    run, open_page = _open(page, live_url, django_user_model, dict(
        config={"steps": 40}, total_steps=40, status=JobStatus.RUNNING, step=20,
        loss_history=[{"step": s, "g_total": 200.0 / s**2, "d_a": 0.5} for s in range(1, 21)]))
    _samples(run, 20)
    open_page()
    # 20 epochs: the latest large, eight spread over the run in the strip (not a page of 20 pictures)
    assert _shown(page) == ("Epoch 20 of 20", "20")
    strip = page.locator("#sample-strip button")
    assert [strip.nth(k).get_attribute("data-epoch") for k in range(strip.count())] == \
        ["1", "4", "6", "9", "12", "15", "17", "20"]
    assert page.locator("#samples figure").count() == 1
    page.locator("#sample-image").evaluate("(img) => img.decode()")  # the picture itself loads
    screenshot(page, "training-samples")

    strip.nth(1).click()  # epoch 4: the reader moved away from the latest
    assert _shown(page) == ("Epoch 4 of 20", "20")
    assert not page.locator("#sample-follow").is_checked()
    page.get_by_role("button", name="Next epoch").click()
    assert page.locator("#sample-caption").inner_text() == "Epoch 5 of 20"
    assert page.locator("#sample-image").get_attribute("src").endswith(f"/training-runs/{run.pk}/samples/4/")

    _samples(run, 21)
    events.publish(events.topic_for("trainingrun", run.pk), "job.progress", step=21,
                   losses={"step": 21, "g_total": 0.4}, sample_index=20)
    page.wait_for_function("document.getElementById('sample-epoch').max === '21'")
    assert page.locator("#sample-caption").inner_text() == "Epoch 5 of 21"  # stays where the reader is
    page.get_by_label("Follow the latest").check()
    assert page.locator("#sample-caption").inner_text() == "Epoch 21 of 21"
    page.get_by_label("Epoch", exact=True).fill("1")  # the slider
    assert page.locator("#sample-caption").inner_text() == "Epoch 1 of 21"
    assert page.get_by_role("button", name="Previous epoch").is_disabled()

    # the loss plot on a log scale: G fell from 200 to 0.4, the late steps readable
    assert page.locator("#loss-canvas").get_attribute("data-scale") == "linear"
    page.get_by_label("Log scale").check()
    assert page.locator("#loss-canvas").get_attribute("data-scale") == "log"
    ticks = page.evaluate("import('/static/frontend/js/lossplot.js').then((m) => [m.logTicks(0.4, 200), "
                          "m.logTicks(0.3, 4)])")
    assert ticks == [[1, 10, 100], [0.5, 1, 2]]
    assert page.console_errors == []
