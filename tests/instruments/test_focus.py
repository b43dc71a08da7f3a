import numpy as np
import pytest
from scipy import ndimage

from instruments.focus import fuse_extended_depth, peak_focus_nm, sharpness


def _scene(seed=0):
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.random((64, 64)), 1.0) * 20_000 + 5_000


def test_sharpness_drops_with_blur_and_ignores_gain():
    scene = _scene()
    blurred = ndimage.gaussian_filter(scene, 3)
    assert sharpness(scene) > 3 * sharpness(blurred)
    assert sharpness(scene * 2) == pytest.approx(sharpness(scene), rel=1e-4)
    assert sharpness(np.zeros((8, 8))) == 0.0


def test_peak_focus_parabola_recovers_vertex():
    z = np.array([-2000, -1000, 0, 1000, 2000.0])
    scores = -(z - 300.0) ** 2 + 1e7
    assert peak_focus_nm(z, scores) == pytest.approx(300.0, abs=1e-6)
    assert peak_focus_nm(z, -z) == -2000  # peak on the edge stays on the edge


def test_fuse_picks_sharp_half_from_each_plane():
    scene = _scene(1)
    blurred = ndimage.gaussian_filter(scene, 4)
    left_sharp = blurred.copy()
    left_sharp[:, :32] = scene[:, :32]
    right_sharp = blurred.copy()
    right_sharp[:, 32:] = scene[:, 32:]
    fused = fuse_extended_depth([left_sharp.astype(np.uint16), right_sharp.astype(np.uint16)], window_px=5)
    assert fused.dtype == np.uint16
    inner = np.s_[4:-4, 6:26], np.s_[4:-4, 38:58]
    for sl in inner:
        assert np.abs(fused[sl].astype(float) - scene.astype(np.uint16)[sl]).mean() < 50


def test_fuse_averages_planes_where_none_is_sharp():
    # Bare areas: every plane is the same flat field plus its own noise. Choosing per pixel the
    # plane whose noise happens to be strongest left the frame noisier and patchy; weighting
    # averages the planes there.
    rng = np.random.default_rng(3)
    planes = [(20000 + rng.normal(0, 200, (64, 64))).astype(np.uint16) for _ in range(5)]
    fused = fuse_extended_depth(planes).astype(float)
    assert fused[8:-8, 8:-8].std() < 0.7 * min(p[8:-8, 8:-8].astype(float).std() for p in planes)
    assert abs(fused.mean() - 20000) < 5
