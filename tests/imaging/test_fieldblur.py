"""Field-dependent blur matched across overlaps: frames rendered with a known edge blur by the
simulator's own variable blur (an independent implementation), with known offsets."""

import cv2
import numpy as np
import pytest

from imaging.fieldblur import (
    cross_blurred,
    estimate_edge_blur,
    field_radius,
    overlap_mismatch,
    variable_blur,
)
from instruments.sim.blur import variable_gaussian_blur
from tests.imaging.scan_factory import circular_mask, ic_scene

FRAME = 128
CENTRE_SIGMA = 1.0


def _frames(edge_blur_px: float, offsets, *, seed: int = 0, extra_blur=None):
    """Frame 0 and one frame per (x, y) integer offset from it, cut from one IC-like scene, each
    blurred by σ(ρ)² = CENTRE_SIGMA² + (edge_blur_px·ρ)², ρ from its own field's centre (and by
    ``extra_blur[k]`` more everywhere, a frame that sees the layer defocused), and the mask."""
    mask = circular_mask(FRAME, radius_fraction=0.5)
    radius = field_radius(mask)
    scene = ic_scene((FRAME + 200, FRAME + 200), rng=np.random.default_rng(seed))
    sigma = np.sqrt(CENTRE_SIGMA**2 + (edge_blur_px * radius) ** 2).astype(np.float32)
    frames = []
    for k, (dx, dy) in enumerate([(0, 0), *offsets]):
        more = 0.0 if extra_blur is None else extra_blur[k]
        crop = scene[100 + dy: 100 + dy + FRAME, 100 + dx: 100 + dx + FRAME].astype(np.float32)
        frames.append(np.where(mask, variable_gaussian_blur(crop, np.sqrt(sigma**2 + more**2)), 0).astype(np.float32))
    return frames, mask


def test_field_radius_is_zero_at_the_centre_and_one_on_the_rim():
    mask = circular_mask(FRAME, radius_fraction=0.5)
    radius = field_radius(mask)
    assert radius[FRAME // 2, FRAME // 2] < 0.02
    rim = mask & ~cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert np.abs(radius[rim] - 1).max() < 0.03


def test_a_uniform_sigma_is_a_gaussian_blur_and_zero_leaves_the_image():
    image = np.random.default_rng(1).random((64, 64)).astype(np.float32)
    valid = np.ones_like(image, bool)
    for sigma in (0.5, 1.3, 2.0):  # on a level, between two, on a level
        want = cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
        got = variable_blur(image, valid, np.full(image.shape, sigma, np.float32))
        # between levels it mixes two Gaussians: not one, but as wide
        assert np.abs(got - want)[8:-8, 8:-8].max() < (0.02 if sigma == 1.3 else 1e-5), sigma
    np.testing.assert_array_equal(variable_blur(image, valid, np.zeros_like(image)), image)


def test_the_blur_has_the_wanted_width_and_reads_only_valid_pixels():
    delta = np.zeros((41, 41), np.float32)
    delta[20, 20] = 1
    valid = np.ones_like(delta, bool)
    out = variable_blur(delta, valid, np.full(delta.shape, 1.3, np.float32))
    yy, xx = np.mgrid[:41, :41]
    assert np.sum(out * (xx - 20) ** 2) / out.sum() == pytest.approx(1.3**2, rel=0.02)
    # a bright frame's dark outside does not bleed in: the edge stays as bright as the inside
    flat = np.ones((40, 40), np.float32)
    valid = np.zeros_like(flat, bool)
    valid[:, :20] = True
    out = variable_blur(flat, valid, np.full(flat.shape, 2.0, np.float32))
    np.testing.assert_allclose(out[:, :20], 1.0, atol=1e-5)
    assert (out[:, 20:] == 0).all()


def test_cross_blur_makes_two_frames_of_a_blurred_field_agree():
    frames, mask = _frames(2.5, [(70, 0)])
    before = overlap_mismatch(frames[0], frames[1], mask, (70, 0))
    after = overlap_mismatch(*cross_blurred(frames[0], frames[1], mask, (70, 0), 2.5), mask, (70, 0))
    assert after < before / 3, (before, after)  # measured 3.5× lower
    # no blur asked, the frames themselves
    a, b = cross_blurred(frames[0], frames[1], mask, (70, 0), 0.0)
    assert a is frames[0] and b is frames[1]


def test_the_edge_blur_is_found_where_the_frames_have_one():
    offsets = [(70, 0), (0, 70), (-70, 0), (0, -70), (70, 3)]
    frames, mask = _frames(2.5, offsets)
    found = estimate_edge_blur([(frames[0], frames[k + 1], o) for k, o in enumerate(offsets)], mask)
    assert found.reason == "" and found.edge_blur_px == pytest.approx(2.5, abs=0.4), found
    frames, mask = _frames(0.0, offsets)
    found = estimate_edge_blur([(frames[0], frames[k + 1], o) for k, o in enumerate(offsets)], mask)
    assert found.reason == "" and found.edge_blur_px < 0.3, found


def test_frames_that_differ_by_more_than_a_field_blur_are_left_unmatched():
    # each frame sees the layer defocused by its own amount: no one field blur explains them
    offsets = [(70, 0), (0, 70), (-70, 0), (0, -70), (70, 3), (-70, -3)]
    frames, mask = _frames(1.0, offsets, extra_blur=[0.0, 3.0, 0.5, 2.5, 0.0, 4.0, 1.5])
    pairs = [(frames[k], frames[k + 1], (o[0] - p[0], o[1] - p[1]))
             for k, (p, o) in enumerate(zip([(0, 0), *offsets], offsets, strict=False))]
    found = estimate_edge_blur(pairs, mask)
    assert found.reason in ("inconsistent", "unbounded") and found.edge_blur_px == 0.0, found
    assert estimate_edge_blur([], mask).reason == "no_overlaps"
