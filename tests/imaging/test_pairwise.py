"""Pairwise offsets inside circular fields of view, against known sub-pixel truth."""

import numpy as np
import pytest
from scipy import ndimage

from imaging.pairwise import (
    _gaussian,
    _residual_inflation,
    _shifted_mask,
    _ShiftSampler,
    _solve_normal,
    mask_overlap_px,
    masked_ncc,
    refine_pair,
    register_pair,
)
from tests.imaging.scan_factory import circular_mask, ic_scene


def _pair(offset_xy, *, size=128, seed=0, noise=0.0):
    rng = np.random.default_rng(seed)
    scene = ic_scene((320, 320), rng=rng)
    yy, xx = np.mgrid[:size, :size].astype(float)
    a = ndimage.map_coordinates(scene, [yy + 60, xx + 60], order=3)
    b = ndimage.map_coordinates(scene, [yy + 60 + offset_xy[1], xx + 60 + offset_xy[0]], order=3)
    a = a + rng.normal(0, noise, a.shape)
    b = b + rng.normal(0, noise, b.shape)
    return a.astype(np.float32), b.astype(np.float32)


@pytest.mark.parametrize("seed, truth", [(0, (94.37, 6.81)), (1, (85.2, -7.6)), (2, (-4.55, 92.25))])
def test_register_pair_recovers_subpixel_offset(seed, truth):
    a, b = _pair(truth, seed=seed, noise=0.01)
    nominal = (89.6, 0.0) if abs(truth[0]) > abs(truth[1]) else (0.0, 89.6)
    found = register_pair(a, b, nominal, mask=circular_mask(128), max_shift_px=20)
    assert found and found.score > 0.9
    assert np.hypot(found.offset_px[0] - truth[0], found.offset_px[1] - truth[1]) < 0.1


def test_information_reflects_aperture_problem():
    # Horizontal stripes only: y is pinned down, x is not.
    yy = np.mgrid[:128, :128][0].astype(np.float32)
    stripes = (0.5 + 0.4 * np.sin(yy / 3.0) * np.sin(yy / 7.1)).astype(np.float32)
    found = register_pair(stripes, stripes, (90.0, 0.0), mask=circular_mask(128), max_shift_px=10)
    info = np.asarray(found.information)
    assert info[1, 1] > 100 * max(info[0, 0], 1e-9)


def test_noise_does_not_pin_a_lens_of_parallel_lines_along_the_lines():
    # The same stripes with camera noise, independent in the two frames: its gradients must not
    # count as structure along x (they did: x had 1/8 of y's information, σ 0.02 px, and the
    # arbitrary x of a grating's lens was trusted in the global solve).
    rng = np.random.default_rng(3)
    yy = np.mgrid[:128, :128][0].astype(np.float32)
    stripes = (0.5 + 0.4 * np.sin(yy / 3.0) * np.sin(yy / 7.1)).astype(np.float32)
    a, b = (stripes + rng.normal(0, 0.02, stripes.shape).astype(np.float32) for _ in range(2))
    found = register_pair(a, b, (90.0, 0.0), mask=circular_mask(128), max_shift_px=10)
    values, vectors = np.linalg.eigh(np.asarray(found.information))
    assert values[1] > 10_000 and values[0] < 50  # along the stripes: σ > 0.14 px (it was 0.02)
    assert abs(vectors[0, 0]) > 0.99  # the free direction is x, along the stripes


def test_a_residual_of_structure_counts_for_less_than_one_of_noise():
    # Frame j differs from i by camera noise, or by a smooth blotch of the same RMS (a structure
    # seen differently in the two frames): the blotched link is as precise in appearance but
    # holds far fewer independent samples. Without the discount it had twice the information.
    truth = (94.37, 6.81)
    a, b = _pair(truth, seed=0)
    rng = np.random.default_rng(5)
    noise = rng.normal(0, 0.02, b.shape)
    blotch = ndimage.gaussian_filter(rng.normal(0, 1, b.shape), 4)
    blotch *= 0.02 / blotch.std()
    mask = circular_mask(128)
    noisy, blotched = (refine_pair(a, (b + extra).astype(np.float32), truth, mask=mask) for extra in (noise, blotch))
    assert np.trace(np.asarray(blotched.information)) < np.trace(np.asarray(noisy.information)) / 5
    assert np.hypot(*(np.asarray(blotched.offset_px) - truth)) < 0.1  # the offset itself is as good


def test_residual_inflation_is_one_for_white_noise_and_large_for_a_smooth_field():
    rng = np.random.default_rng(0)
    white = rng.normal(size=(60, 60))
    rows, cols = np.nonzero(np.ones((60, 60), bool))
    assert _residual_inflation(white.ravel(), rows, cols, (60, 60)) < 1.1
    assert _residual_inflation(ndimage.gaussian_filter(white, 4).ravel(), rows, cols, (60, 60)) > 10


def test_blank_or_disjoint_frames_are_reported_not_guessed():
    mask = circular_mask(64)
    blank = np.full((64, 64), 0.5, np.float32)
    assert not register_pair(blank, blank, (40.0, 0.0), mask=mask, max_shift_px=5, min_overlap_px=50)
    far = register_pair(blank, blank, (70.0, 0.0), mask=mask, max_shift_px=5)
    assert not far and far.reason == "no_overlap"


def test_masked_ncc_matches_direct_computation():
    rng = np.random.default_rng(3)
    f, g = rng.random((12, 10)), rng.random((9, 11))
    mf, mg = rng.random((12, 10)) > 0.2, rng.random((9, 11)) > 0.2
    ncc, count = masked_ncc(f, mf, g, mg)
    v, u = 2, -3  # fixed (y, x) pairs with moving (y − v, x − u)
    pairs = [(f[y, x], g[y - v, x - u]) for y in range(12) for x in range(10)
             if 0 <= y - v < 9 and 0 <= x - u < 11 and mf[y, x] and mg[y - v, x - u]]
    a, b = np.array(pairs).T
    expected = np.corrcoef(a, b)[0, 1]
    assert count[v + 8, u + 10] == len(pairs)
    assert ncc[v + 8, u + 10] == pytest.approx(expected, abs=1e-5)  # single-precision transforms


def test_mask_overlap_px_counts_shared_pixels():
    mask = np.ones((10, 10), bool)
    assert mask_overlap_px(mask, (3, -2)) == 7 * 8
    assert mask_overlap_px(mask, (10, 0)) == 0


def test_refine_pair_ends_in_the_basin_it_starts_in():
    truth = (94.37, 6.81)
    a, b = _pair(truth, seed=0, noise=0.01)
    mask = circular_mask(128)
    near = refine_pair(a, b, (94.0, 7.2), mask=mask)
    assert near and np.hypot(near.offset_px[0] - truth[0], near.offset_px[1] - truth[1]) < 0.05
    # Fine horizontal lines (period 4 px in y): a start one period off ends on that alias.
    yy, xx = np.mgrid[:200, :200].astype(float)
    lines = (np.sin(2 * np.pi * yy / 4.0) + 0.3 * np.sin(xx / 9.0)).astype(np.float32)
    fixed, moving = lines[:128, :128], lines[30:158, 50:178]  # moving sits at (50, 30) in fixed
    alias = refine_pair(fixed, moving, (50.2, 34.3), mask=mask)
    true_basin = refine_pair(fixed, moving, (50.2, 30.3), mask=mask)
    assert abs(true_basin.offset_px[1] - 30.0) < 0.05 and abs(alias.offset_px[1] - 34.0) < 0.05


@pytest.mark.parametrize("ty, tx", [(0.0, 0.0), (3.3, -7.8), (-2.5, 12.5), (-0.49, -0.51),
                                    (15.3, 23.0), (17.5, -3.0), (-25.6, -16.6),  # across its edges
                                    (40.7, 1.01)])  # beyond them
def test_shift_sampler_equals_per_point_spline_samples(ty, tx):
    rng = np.random.default_rng(0)
    spline = ndimage.spline_filter(rng.random((90, 120)), order=3)
    origin, box = (5, 7), (slice(20, 70), slice(30, 100))  # frame i's box; spline's origin in j
    select = rng.random((50, 70)) > 0.3
    rows, cols = np.nonzero(select)
    expected = ndimage.map_coordinates(spline, [rows + 20 - ty - 5, cols + 30 - tx - 7], order=3,
                                       prefilter=False)
    assert np.abs(_ShiftSampler(spline, origin, box, select)(ty, tx) - expected).max() < 1e-12
    mask = rng.random((100, 130)) > 0.5
    nearest = ndimage.map_coordinates(mask.astype(np.float32), [rows + 20 - ty, cols + 30 - tx], order=0) > 0
    assert np.array_equal(_shifted_mask(mask, box, (tx, ty))[select], nearest)


@pytest.mark.parametrize("ty, tx", [(0.0, 0.0), (3.3, -7.8), (-2.5, 12.5), (-0.49, -0.51), (0.5, -1.5),
                                    (15.3, 23.0), (-25.6, -16.6)])  # the last two: across its edges
def test_shift_sampler_with_gradient_is_its_five_samples_in_three_stencils(ty, tx):
    rng = np.random.default_rng(0)
    spline = ndimage.spline_filter(rng.random((90, 120)), order=3)
    origin, box = (5, 7), (slice(20, 70), slice(30, 100))
    select = rng.random((50, 70)) > 0.3
    sample = _ShiftSampler(spline, origin, box, select)
    rows, cols = np.nonzero(select)
    # the picked pixels that stay within the spline at every half-pixel shift, as the refinement's
    # eroded masks keep them
    py, px = rows + 20 - ty - 5, cols + 30 - tx - 7
    used = (py >= 0.5) & (py <= spline.shape[0] - 1.5) & (px >= 0.5) & (px <= spline.shape[1] - 1.5)
    assert used.any()
    got = sample.with_gradient(ty, tx, used)
    expected = (sample(ty, tx), sample(ty, tx - 0.5) - sample(ty, tx + 0.5), sample(ty - 0.5, tx) - sample(ty + 0.5, tx))
    for values, truth in zip(got, expected, strict=True):
        assert np.abs(values[used] - truth[used]).max() < 1e-12
    beyond = used.copy()
    beyond[np.argmin(py)] = True  # one more pixel, a row beyond the spline at some shift
    if py.min() < 0.5:
        assert sample.with_gradient(ty, tx, beyond) is None  # those it leaves to the samples one by one


@pytest.mark.parametrize("sigma", [1.0, 2.5, 8.0])
def test_gaussian_is_scipys(sigma):
    image = np.random.default_rng(1).random((70, 90)).astype(np.float32)
    assert np.abs(_gaussian(image, sigma) - ndimage.gaussian_filter(image, sigma)).max() < 1e-6


@pytest.mark.parametrize("window", [((8, 12), (7, 13)), ((0, 3), (15, 19)), ((-4, 30), (9, 9))])
def test_masked_ncc_window_equals_the_full_surface_there(window):
    rng = np.random.default_rng(4)
    f, g = rng.random((12, 10)), rng.random((9, 11))
    mf, mg = rng.random((12, 10)) > 0.2, rng.random((9, 11)) > 0.2
    full, full_count = masked_ncc(f, mf, g, mg)
    part, count = masked_ncc(f, mf, g, mg, window=window)
    (r0, r1), (c0, c1) = window
    inside = (slice(max(r0, 0), r1 + 1), slice(c0, c1 + 1))
    assert np.abs(part[inside] - full[inside]).max() < 1e-5
    assert np.array_equal(count[inside], full_count[inside])
    outside = np.ones(full.shape, bool)
    outside[inside] = False
    assert not part[outside].any() and not count[outside].any()


def test_normal_equations_solve_as_lstsq_also_without_gradients():
    rng = np.random.default_rng(5)
    rows, b = rng.random((6, 500)), rng.random(500)
    solve = lambda: _solve_normal(rows @ rows.T, rows @ b, rows, b)  # noqa: E731
    assert np.allclose(solve(), np.linalg.lstsq(rows.T, b, rcond=None)[0], rtol=0, atol=1e-10)
    rows[:2] = 0  # a blank overlap: no gradient rows
    assert np.allclose(solve(), np.linalg.lstsq(rows.T, b, rcond=None)[0], rtol=0, atol=1e-10)
    rows[:2] = rng.random(500)  # two gradient rows alike (ill-conditioned), scaled in the normal equations alone
    scale = np.array([-2.0, -2.0, 1, 1, 1, 1])
    scaled = rows * scale[:, None]
    assert np.allclose(_solve_normal(scaled @ scaled.T, scaled @ b, rows, b, scale),
                       np.linalg.lstsq(scaled.T, b, rcond=None)[0], rtol=0, atol=1e-10)
