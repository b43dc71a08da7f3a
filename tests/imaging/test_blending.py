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


def test_frame_gains_recover_each_frames_brightness_from_the_overlaps():
    from imaging.blending import frame_gains
    from imaging.pairwise import mask_overlap_px
    from tests.imaging.scan_factory import synthetic_scan

    scan = synthetic_scan(grid=(3, 4), frame_px=128, seed=5)
    truth = np.random.default_rng(1).uniform(0.9, 1.1, len(scan.frames))
    truth /= np.exp(np.log(truth).mean())  # geometric mean 1, as the solve holds it
    frames = [f / 65535.0 / scan.flat * g for f, g in zip(scan.frames, truth, strict=True)]
    pairs = [(i, j) for i in range(len(frames)) for j in range(i + 1, len(frames))
             if mask_overlap_px(scan.fov_mask, scan.true_xy_px[j] - scan.true_xy_px[i]) > 500]
    gains = frame_gains(frames, scan.true_xy_px, scan.fov_mask, pairs)
    np.testing.assert_allclose(gains, truth, rtol=0.005)
    # frames in no pair keep 1; the others still agree with each other
    alone = frame_gains(frames, scan.true_xy_px, scan.fov_mask, [p for p in pairs if 0 not in p])
    assert alone[0] == 1.0
    ratio = alone[1:] / truth[1:]
    assert np.ptp(ratio) < 0.01
