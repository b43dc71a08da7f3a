import numpy as np
import pytest
from scipy import ndimage

from mlcore.metrics import (
    best_shift_scores,
    contextual_score,
    difference_map,
    gaussian_psf,
    psnr,
    richardson_lucy,
    ssim,
    unsharp_mask,
)


@pytest.fixture
def sharp():
    img = np.zeros((64, 64), np.float32)
    img[10:30, 12:20] = 0.8
    img[40:52, 8:56] = 0.6
    img[20:24, 30:60] = 1.0
    return img + np.random.default_rng(5).uniform(0, 0.1, img.shape).astype(np.float32)


def test_psnr_known_value(sharp):
    assert psnr(sharp, sharp + 0.1) == pytest.approx(20.0, abs=1e-4)
    assert psnr(sharp, sharp) == float("inf")
    with pytest.raises(ValueError, match="shape"):
        psnr(sharp, sharp[:10])


def test_ssim_bounds(sharp):
    assert ssim(sharp, sharp) == pytest.approx(1.0)
    noisy = sharp + np.random.default_rng(0).normal(0, 0.2, sharp.shape)
    assert ssim(noisy, sharp) < 0.5


def test_best_shift_recovers_a_known_shift(sharp):
    moved = np.roll(sharp, (1, -2), (0, 1))
    got = best_shift_scores(moved, sharp, max_shift=2)
    assert got.shift_yx == (1, -2) and got.psnr == float("inf")
    assert psnr(moved, sharp) < 20


def test_baselines_improve_a_blurred_image(sharp):
    psf = gaussian_psf(1.5)
    blurred = ndimage.convolve(sharp, psf, mode="reflect")
    assert psf.sum() == pytest.approx(1, abs=1e-5) and psf.shape == (9, 9)
    assert psnr(richardson_lucy(blurred, psf, iterations=30), sharp) > psnr(blurred, sharp) + 1
    assert psnr(unsharp_mask(blurred, sigma=1.5), sharp) > psnr(blurred, sharp)


def test_contextual_score_and_difference_map(sharp):
    assert contextual_score(sharp, sharp) == pytest.approx(1.0, abs=1e-3)
    assert contextual_score(np.roll(sharp, 2, 0), sharp) > contextual_score(sharp.T[::-1], sharp)
    diff = difference_map(sharp, np.zeros_like(sharp))
    assert diff.dtype == np.float32 and np.allclose(diff, sharp)
