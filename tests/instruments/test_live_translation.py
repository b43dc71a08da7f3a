"""Live translation of the growing mosaic: region by region it equals translating the final canvas,
and on the simulated bench the translated preview grows during a scan started with a model."""
import time

import numpy as np
import pytest
import torch

from imaging.blending import Canvas
from imaging.imageio import to_uint16
from instruments.live_translation import CanvasTranslation
from mlcore.config import preset
from mlcore.data import Normalization
from mlcore.infer import TranslationModel, translate_whole
from mlcore.nets import build_generator
from mlcore.train import _mirror


def tiny_model(seed=0) -> TranslationModel:
    """The tiny CycleGAN with O(1) activations and non-trivial BatchNorm statistics (eval mode)."""
    torch.manual_seed(seed)
    cfg = preset("tiny")
    g_ab, g_ba = build_generator(cfg.generator), build_generator(_mirror(cfg.generator))
    for g in (g_ab, g_ba):
        for m in g.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, a=0.2)
        g.train()
        with torch.no_grad():
            g(torch.randn(2, 1, 32, 32) * 0.5 + 0.2)
    return TranslationModel.from_trainer_nets(g_ab, g_ba, config=cfg, norm_a=Normalization(0, 65535),
                                              norm_b=Normalization(0, 65535))


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
