"""The first-run demo, end to end on the simulated instrument, with a tiny training budget."""
import time

import pytest

from imaging.models import Sample
from instruments.models import Instrument
from instruments.worker import HardwareWorker
from ssumweb import demo
from ssumweb.models import DemoRun, JobStatus, Project
from ssumweb.workers import start_task_worker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def lab(lab_admin, project, monkeypatch):
    monkeypatch.setattr(demo, "DEMO_TRAINING", {**demo.DEMO_TRAINING, "steps": 4, "crop_px": 32, "blocks": 1,
                                                "features": 4})
    Project.objects.filter(pk=project.pk).update(is_demo=True)
    instrument = Instrument.objects.create(project=project, name="Simulated SSUM", sim_seed=7)
    Sample.objects.create(project=project, name="Synthetic IC chip", sim_seed=7)
    hardware = HardwareWorker(instrument.pk, poll_s=0.1).start()
    workers = [start_task_worker(queues, f"test-{queues[0]}") for queues in (["default", "processing"], ["training"],
                                                                              ["demo"])]
    yield project
    for thread in workers:
        thread.worker.running = False
    hardware.stop()
    for thread in workers:
        thread.join(timeout=60)


def test_the_demo_runs_every_step_and_ends_in_the_viewer(api, lab, lab_admin, viewer):
    assert api(viewer).post("/api/demo/run/", {"project": lab.pk}, format="json").status_code == 403
    response = api(lab_admin).post("/api/demo/run/", {"project": lab.pk}, format="json")
    assert response.status_code == 201, response.json()
    status_url = response.json()["status_url"]
    again = api(lab_admin).post("/api/demo/run/", {"project": lab.pk}, format="json")
    assert again.status_code == 409 or again.json()["code"] == "invalid_state"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        state = api(lab_admin).get(status_url).json()
        if state["status"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(1)
    assert state["status"] == "succeeded", (state["failure_reason"], state["steps"])
    assert [s["status"] for s in state["steps"]] == ["succeeded"] * len(demo.STEPS)
    assert "/viewer/?mosaic=" in state["steps"][-1]["url"] and "translation=" in state["steps"][-1]["url"]
    assert DemoRun.objects.get().status == JobStatus.SUCCEEDED
    # the first step made a scan of bare silicon the instrument's flat field, and the chip's mosaic used it
    from imaging.models import Mosaic

    instrument = Instrument.objects.get(project=lab)
    calibration = instrument.flatfield_calibration
    assert calibration.sample.surface == "bare_silicon" and calibration.frames.count() == 4
    assert not Mosaic.objects.filter(scan=calibration).exists()
    mosaic = Mosaic.objects.get(scan__sample__name="Synthetic IC chip", status=JobStatus.SUCCEEDED)
    assert mosaic.report["flatfield"] == "calibration"
    assert state["steps"][0]["url"] == f"/scans/{calibration.pk}/"
