"""Feather blending: smooth hand-over in overlaps, faithful where frames agree."""

import numpy as np

from imaging.blending import Canvas, feather_weight
from tests.imaging.scan_factory import circular_mask


def test_feather_weight_is_distance_to_the_circle_edge():
    mask = circular_mask(65)
    weight = feather_weight(mask)
    assert weight[~mask].max() == 0
    assert weight[32, 32] == weight.max() and 31 <= weight.max() <= 34
    assert feather_weight(mask, ramp_px=5).max() == 5


def test_overlap_of_unequal_frames_has_no_seam():
    mask = circular_mask(64)
    weight = feather_weight(mask)
    canvas = Canvas.empty((0, 0), (65, 110))
    canvas.add(np.full((64, 64), 0.50, np.float32), weight, (0.0, 0.0))
    canvas.add(np.full((64, 64), 0.56, np.float32), weight, (45.3, 0.0))
    row = canvas.image()[32, 2:108]
    steps = np.abs(np.diff(row))
    assert steps.max() < 0.06 / 5  # a 6 % level step spread over many pixels, no jump
    assert row[0] == np.float32(0.5) and abs(row[-1] - 0.56) < 1e-6


def test_frames_at_true_positions_reproduce_the_scene():
    rng = np.random.default_rng(0)
    scene = rng.random((80, 120)).astype(np.float32)
    mask = np.ones((40, 40), bool)
    weight = feather_weight(mask)
    canvas = Canvas.empty((0, 0), (1, 1))
    for y in (0, 30):
        for x in (0, 28, 56):
            canvas.add(scene[y:y + 40, x:x + 40], weight, (x, y))
    assert canvas.origin_px.tolist() == [0, 0]
    np.testing.assert_allclose(canvas.image()[1:69, 1:95], scene[1:69, 1:95], atol=1e-5)
