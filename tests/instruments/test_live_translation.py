"""Live translation of the growing mosaic: region by region it equals translating the final canvas,
and on the simulated bench the translated preview grows during a scan started with a model."""
import time

import numpy as np
import pytest
import torch

from imaging.blending import Canvas
from imaging.imageio import to_uint16
from instruments.live_translation import CanvasTranslation
from mlcore.infer import translate_whole
from tests.mlcore.tiny_model import tiny_model


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# Frame positions (x, y) in mosaic px: growth right and down keeps the origin; (-8, …) moves it left by
# a multiple of the stride (re-anchored), (-13, …) by 5 px (off the stride grid: translated again).
POSITIONS = [(0, 0), (30, 0), (60, 4), (-8, 10), (25, 30), (-13, 40), (50, 45), (20, 70)]
FRAME = 40


def test_live_translation_of_a_growing_canvas_equals_translating_the_final_canvas(one_thread):
    model = tiny_model()
    rng = np.random.default_rng(4)
    world = np.clip(rng.normal(0.45, 0.15, (160, 160)), 0, 1).astype(np.float32)  # sample, offset by +20 px
    weight = np.ones((FRAME, FRAME), np.float32)
    weight[1:-1, 1:-1] = 2.0  # uneven blend: later frames change pixels translated earlier
    canvas = None
    live = CanvasTranslation(model, tile=16)
    translated_tiles = 0
    for k, (x, y) in enumerate(POSITIONS):
        frame = world[y + 20:y + 20 + FRAME, x + 20:x + 20 + FRAME]
        if canvas is None:
            canvas = Canvas.empty((x, y), (FRAME + 1, FRAME + 1))
        (bx, by, bw, bh), _ = canvas.add(frame, weight, (x, y), margin=0)
        live.update(to_uint16(canvas.image()), canvas.origin_px, [(bx, by, bx + bw, by + bh)])
        translated_tiles += live.step(max_tiles=3)  # a little work between frames, as during a scan
        if k == 4:  # mid-scan: whatever is marked current equals the translation of the canvas now
            now = translate_whole(model, live.canvas).sem_like
            assert np.abs(live.sem - now)[live.valid].max() < 1e-4
            assert 0 < live.tiles_done < live.tiles_total
    translated_tiles += live.run_all()  # the scan ended: catch up
    final = to_uint16(canvas.image())
    assert np.array_equal(live.canvas, final)
    assert live.tiles_done == live.tiles_total and not live.pending()
    assert live.retranslations == 1  # only the 5 px growth to the left dropped the work done so far
    whole = translate_whole(model, final).sem_like
    covered = live.touched
    assert covered.sum() > 0.5 * covered.size
    assert np.abs(live.sem - whole)[covered].max() < 1e-4


def test_growth_by_a_stride_multiple_reanchors_instead_of_retranslating(one_thread):
    model = tiny_model()
    rng = np.random.default_rng(5)
    image = (rng.random((64, 96)) * 60000).astype(np.uint16)
    live = CanvasTranslation(model, tile=16)
    live.update(image[:, 32:], (32, 0), [(32, 0, 96, 64)])
    live.run_all()
    before = live.sem.copy()
    grown = image.copy()
    grown[:, :32] = 0  # the canvas grew 32 px to the left, nothing placed there yet
    live.update(grown, (0, 0), [])
    # Only tiles whose input window reached the old left border are stale.
    stale = {c for _, c in live.pending()}
    assert stale and max(stale) < 32 + live.reach
    assert np.array_equal(live.sem[:, 32 + live.reach:], before[:, live.reach:])
    live.run_all()
    whole = translate_whole(model, grown).sem_like
    assert np.abs(live.sem - whole)[:, 32:].max() < 1e-4


def test_bad_arguments_say_what_is_allowed():
    model = tiny_model()
    with pytest.raises(ValueError, match="tile"):
        CanvasTranslation(model, tile=6)
    live = CanvasTranslation(model, tile=16)
    with pytest.raises(ValueError, match="canvas"):
        live.update(np.zeros((4, 40), np.uint16), (0, 0), [])
    live.update(np.zeros((40, 40), np.uint16), (0, 0), [])
    with pytest.raises(ValueError, match="grow"):
        live.update(np.zeros((40, 40), np.uint16), (4, 0), [])
    with pytest.raises(ValueError, match="max_tiles"):
        live.step(max_tiles=0)


# --- on the simulated bench ---------------------------------------------------------------------------


def save_tiny_model(project, media_root):
    """A TrainedModel whose weights file is the lean inference format (what export_model writes)."""
    from mlcore.checkpoint import save_checkpoint
    from mlcore.models import TrainedModel
    from mlcore.nets import halo_for

    model = tiny_model()
    state = {"config": model.config.to_json(), "step": 0, "pixel_size_nm": 20.0, "receptive_field": None,
             "halo": halo_for(model.g_ab), "metrics": {},
             "normalization": {"a": model.norm_a.to_dict(), "b": model.norm_b.to_dict()},
             "nets": {"g_ab": model.g_ab.state_dict(), "g_ba": model.g_ba.state_dict()}}
    save_checkpoint(state, media_root / "models" / "tiny" / "model.pt")
    return TrainedModel.objects.create(project=project, name="tiny", weights="models/tiny/model.pt",
                                       pixel_size_nm=20.0, config={})


@pytest.mark.django_db(transaction=True)
def test_a_scan_with_a_model_grows_its_translation_beside_the_mosaic(project, operator, media_root):
    from imaging.models import Mosaic, Sample, Scan, ScanStatus
    from imaging.services import plan_scan, request_action
    from instruments.live_mosaic import translation_preview_name
    from instruments.models import Instrument
    from instruments.worker import HardwareWorker
    from ssumweb.media import absolute
    from ssumweb.models import Event
    from tests.instruments.test_worker import wait_for

    from ..conftest import client_for

    instrument = Instrument.objects.create(project=project, name="sim", sim_seed=3)
    saved_at = []
    worker = HardwareWorker(instrument.pk, poll_s=0.05, on_frame_saved=lambda *_: saved_at.append(time.monotonic()))
    worker.start()
    try:
        instrument.refresh_from_db()
        sample = Sample.objects.create(project=project, name="chip")
        side = instrument.fov_diameter_nm / 2**0.5  # the 2 × 2 grid of test_worker.small_scan
        plan = dict(origin_x_nm=20000, origin_y_nm=20000, size_x_nm=1.6 * side, size_y_nm=1.6 * side, overlap=0.4,
                    exposure_ms=5, contact_setpoint_nm=20)
        scan = plan_scan(sample=sample, name="with a model", plan=plan, instrument=instrument, user=operator,
                         translate_with=save_tiny_model(project, media_root))
        assert scan.frames_total == 4
        request_action(scan, "start")
        wait_for(lambda: Scan.objects.get(pk=scan.pk).status == ScanStatus.COMPLETED, what="scan to complete")
    finally:
        worker.stop()
    events = list(Event.objects.filter(topic=f"scan.{scan.pk}", type="translation.live").order_by("pk"))
    assert events, "no translation.live event"
    live = Mosaic.objects.get(scan=scan, live=True)
    first = events[0].payload
    assert first["mosaic_id"] == live.pk
    assert 0 < first["tiles_done"] <= first["tiles_total"]
    assert first["url"].startswith(f"/api/mosaics/{live.pk}/translation-preview")
    # The translation grew during the scan, not after it: events came before the scan ended.
    finished_at = Scan.objects.get(pk=scan.pk).finished_at
    during = [e for e in events if e.created_at < finished_at]
    assert during, f"{len(events)} translation.live events, none before the scan ended"
    assert len(saved_at) == 4
    assert absolute(translation_preview_name(live)).exists()
    # The preview route is permission-checked like the live mosaic's.
    response = client_for(operator).get(f"/api/mosaics/{live.pk}/translation-preview/")
    assert response.status_code == 200 and response["Content-Type"] == "image/jpeg"
