"""imaging.preprocess: each filter does what it claims on images with known content."""

import numpy as np
import pytest

from imaging.preprocess import apply_steps, clahe, denoise_bilateral, denoise_nlm, unsharp


def step_image(noise=0.0, seed=0):
    image = np.full((64, 64), 0.3, np.float32)
    image[:, 32:] = 0.7
    return np.clip(image + np.random.default_rng(seed).normal(0, noise, image.shape), 0, 1).astype(np.float32)


@pytest.mark.parametrize("denoise", [lambda im: denoise_nlm(im, h=0.08), lambda im: denoise_bilateral(im, sigma_grey=0.15)])
def test_denoisers_reduce_noise_and_keep_the_edge(denoise):
    clean, noisy = step_image(), step_image(noise=0.05)
    out = denoise(noisy)
    assert out.dtype == np.float32 and out.shape == noisy.shape
    assert np.abs(out - clean).mean() < 0.5 * np.abs(noisy - clean).mean()
    assert out[:, 36:].mean() - out[:, :28].mean() == pytest.approx(0.4, abs=0.03)


def test_clahe_stretches_low_contrast():
    import cv2

    texture = cv2.GaussianBlur(np.random.default_rng(2).random((64, 64)).astype(np.float32), (0, 0), 2.0)
    low = 0.45 + 0.1 * (texture - texture.min()) / np.ptp(texture)
    out = clahe(low)
    assert out.std() > 2 * low.std() and 0 <= out.min() and out.max() <= 1


def test_unsharp_overshoots_at_edges_only():
    image = step_image()
    out = unsharp(image, sigma_px=1.5, amount=1.0)
    assert out[:, 32].max() > 0.7 and out[:, 31].min() < 0.3
    assert np.allclose(out[:, :20], 0.3, atol=1e-5)


def test_apply_steps_and_unknown_step():
    image = step_image(noise=0.02)
    out = apply_steps(image, ["bilateral", ("unsharp", {"amount": 0.5})])
    assert np.allclose(out, unsharp(denoise_bilateral(image), amount=0.5))
    with pytest.raises(ValueError, match="unknown"):
        apply_steps(image, ["sharpen"])
    with pytest.raises(ValueError, match="h must"):
        denoise_nlm(image, h=0)
