"""Flat-field estimation and calibration against a known synthetic vignette."""

import numpy as np
import pytest

from imaging.flatfield import (
    FlatField,
    apply_flatfield,
    estimate_flatfield,
    flatfield_from_calibration,
    flatfield_from_overlaps,
)
from tests.imaging.scan_factory import circular_mask, radial_flat, synthetic_scan


def _relative_error(ff: FlatField, truth: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return (np.abs(ff.flat - truth) / truth)[mask]


def test_estimate_recovers_vignette_from_scan_frames():
    scan = synthetic_scan(grid=(5, 6), frame_px=96, seed=3)
    ff = estimate_flatfield(scan.frames, mask=scan.fov_mask)
    err = _relative_error(ff, scan.flat, scan.fov_mask)
    assert ff.method == "estimated"
    assert err.mean() < 0.005 and err.max() < 0.02  # BaSiC reaches 0.35 % mean on 30 tiles
    assert ff.flat.dtype == np.float32 and np.all(ff.flat[~scan.fov_mask] == 1)
    assert abs(ff.flat[scan.fov_mask].mean() - 1) < 1e-4


def test_overlaps_of_placed_frames_pin_the_vignette_down_better_than_the_estimate():
    scan = synthetic_scan(grid=(3, 3), frame_px=128, seed=1)
    estimated = _relative_error(estimate_flatfield(scan.frames, mask=scan.fov_mask), scan.flat, scan.fov_mask)
    ff = flatfield_from_overlaps(scan.frames, scan.true_xy_px, mask=scan.fov_mask)
    err = _relative_error(ff, scan.flat, scan.fov_mask)
    assert ff.method == "overlaps" and abs(ff.flat[scan.fov_mask].mean() - 1) < 1e-4
    assert err.mean() < 0.002 and err.max() < 0.01
    assert err.mean() < estimated.mean() / 3  # the sample's own contrast cancels in the overlaps
    # a frame misplaced by a few pixels is outvoted
    misplaced = scan.true_xy_px.copy()
    misplaced[4] += (4.0, -3.0)
    assert _relative_error(flatfield_from_overlaps(scan.frames, misplaced, mask=scan.fov_mask), scan.flat,
                           scan.fov_mask).mean() < 0.004


def test_overlaps_of_large_frames_are_fitted_shrunk_to_the_same_answer():
    scan = synthetic_scan(grid=(3, 3), frame_px=768, seed=1)
    ff = flatfield_from_overlaps(scan.frames, scan.true_xy_px, mask=scan.fov_mask)  # fitted at 512 px
    assert ff.flat.shape == (768, 768)
    err = _relative_error(ff, scan.flat, scan.fov_mask)
    assert err.mean() < 0.002 and err.max() < 0.01


def test_overlaps_along_one_direction_or_none_leave_the_estimate_in_charge():
    row = synthetic_scan(grid=(1, 4), frame_px=96, seed=4)
    assert flatfield_from_overlaps(row.frames, row.true_xy_px, mask=row.fov_mask) is None
    apart = synthetic_scan(grid=(2, 2), frame_px=96, seed=4)
    assert flatfield_from_overlaps(apart.frames, apart.true_xy_px * 3, mask=apart.fov_mask) is None
    with pytest.raises(ValueError, match="positions_px"):
        flatfield_from_overlaps(apart.frames, apart.true_xy_px[:3], mask=apart.fov_mask)
    with pytest.raises(ValueError, match="NaN"):
        flatfield_from_overlaps([np.full((96, 96), np.nan)] * 4, apart.true_xy_px, mask=apart.fov_mask)


def test_estimate_on_large_frames_averages_the_sample_away_without_the_shading():
    # a one-row scan, where stitching keeps the estimate: 64 px cells left 1.7 % mean error here
    scan = synthetic_scan(grid=(1, 4), frame_px=512, seed=2)
    err = _relative_error(estimate_flatfield(scan.frames, mask=scan.fov_mask), scan.flat, scan.fov_mask)
    assert err.mean() < 0.005 and err.max() < 0.02


def test_estimate_with_few_frames_is_still_close():
    scan = synthetic_scan(grid=(3, 3), frame_px=96, seed=4)
    err = _relative_error(estimate_flatfield(scan.frames, mask=scan.fov_mask), scan.flat, scan.fov_mask)
    assert err.mean() < 0.015 and err.max() < 0.06


def test_estimate_recovers_dark_offset_when_baselines_differ():
    rng = np.random.default_rng(0)
    mask = circular_mask(64)
    flat = radial_flat(64, vignetting=0.3, mask=mask)
    yy = np.mgrid[:64, :64][0] / 64.0
    dark = (0.02 + 0.02 * yy).astype(np.float32)
    frames = []
    for level in np.linspace(0.2, 0.8, 12):  # areas of different reflectivity
        content = level * (1 + 0.3 * (rng.random((64, 64)) < 0.1))
        frames.append(np.where(mask, content * flat + dark, 0).astype(np.float32))
    ff = estimate_flatfield(frames, mask=mask, estimate_dark=True)
    assert np.abs(ff.dark - dark)[mask].mean() < 0.004
    assert _relative_error(ff, flat, mask).mean() < 0.01


def test_apply_flatfield_removes_shading():
    scan = synthetic_scan(grid=(4, 4), frame_px=96, seed=5, photons=1e6)
    ff = estimate_flatfield(scan.frames, mask=scan.fov_mask)
    corrected = apply_flatfield(scan.frames[0], ff)
    raw = scan.frames[0] / 65535.0
    x0, y0 = scan.true_xy_px[0]
    from scipy import ndimage
    yy, xx = np.mgrid[:96, :96]
    truth = ndimage.map_coordinates(scan.scene, [yy + y0, xx + x0], order=3) * (40000 / 65535)
    m = scan.fov_mask
    assert np.abs(corrected - truth)[m].mean() < 0.25 * np.abs(raw - truth)[m].mean()


def test_calibration_flat_from_bare_silicon():
    rng = np.random.default_rng(1)
    mask = circular_mask(80)
    flat = radial_flat(80, vignetting=0.4, mask=mask)
    dark = np.full((80, 80), 300, np.uint16)
    frames = [np.where(mask, rng.poisson(flat * 20000) + 300, 300).astype(np.uint16) for _ in range(4)]
    ff = flatfield_from_calibration(frames, dark_frames=dark, mask=mask)
    assert ff.method == "calibration"
    assert _relative_error(ff, flat, mask).max() < 0.01
    assert np.allclose(ff.dark[mask], 300 / 65535, atol=1e-6)


def test_calibration_ignores_dust_on_the_reference_but_keeps_dirt_on_the_optics():
    rng = np.random.default_rng(2)
    mask = circular_mask(80)
    flat = radial_flat(80, vignetting=0.3, mask=mask)
    flat[30:34, 44:48] *= 0.8  # a speck on the sphere: in every frame, at the same place
    frames = []
    for _ in range(5):
        frame = flat * 20000
        y, x = rng.integers(20, 56, size=2)
        frame[y:y + 5, x:x + 5] *= 0.3  # a particle on the wafer: somewhere else in each frame
        frames.append(np.where(mask, rng.poisson(frame), 0).astype(np.uint16))
    ff = flatfield_from_calibration(frames, mask=mask, smooth_sigma_px=0)
    assert _relative_error(ff, flat, mask).max() < 0.03
    averaged = flatfield_from_calibration(frames[:2], mask=mask, smooth_sigma_px=0)  # too few for a median
    assert _relative_error(averaged, flat, mask).max() > 0.2


@pytest.mark.parametrize(
    "frames, match",
    [
        ([], "empty"),
        ([np.zeros((8, 8)), np.zeros((8, 9))], "mixed shapes"),
        ([np.zeros((2, 8, 8)), np.zeros((2, 8, 8))], "2-D"),
        ([np.full((8, 8), np.nan), np.zeros((8, 8))], "NaN"),
        ([np.zeros((8, 8), np.uint16)], "at least 2"),
    ],
)
def test_estimate_rejects_bad_frames(frames, match):
    with pytest.raises(ValueError, match=match):
        estimate_flatfield(frames)


def test_mask_shape_must_match():
    with pytest.raises(ValueError, match="mask shape"):
        estimate_flatfield([np.ones((8, 8))] * 2, mask=np.ones((9, 9), bool))
