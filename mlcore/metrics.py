"""Image-quality metrics and the classical baselines they are compared against.

Images are float32 ``(H, W)`` in [0, 1] (``data_range=1``).  PSNR and SSIM (Wang et al. 2004,
Gaussian σ 1.5 window) follow the usual definitions; the contextual similarity reuses the
training loss's CX on raw patches.  Baselines: unsharp masking and Richardson–Lucy
deconvolution with a given PSF.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage, signal

from mlcore.losses import ContextualLoss, contextual_similarity, sample_pair

__all__ = [
    "psnr",
    "ssim",
    "contextual_score",
    "difference_map",
    "best_shift_scores",
    "ShiftedScores",
    "unsharp_mask",
    "richardson_lucy",
    "gaussian_psf",
]


def _pair(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and target {target.shape} differ in shape")
    return pred, target


def psnr(pred: np.ndarray, target: np.ndarray, *, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB (inf for identical images)."""
    pred, target = _pair(pred, target)
    mse = float(np.mean((pred - target) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(data_range ** 2 / mse))


def ssim(pred: np.ndarray, target: np.ndarray, *, data_range: float = 1.0,
         sigma: float = 1.5) -> float:
    """Mean structural similarity; channels (last axis) are averaged."""
    pred, target = _pair(pred, target)
    if pred.ndim == 3:
        return float(np.mean([ssim(pred[..., c], target[..., c], data_range=data_range,
                                   sigma=sigma) for c in range(pred.shape[-1])]))
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    blur = lambda im: ndimage.gaussian_filter(im, sigma, truncate=3.5)  # noqa: E731 (11×11)
    mu_x, mu_y = blur(pred), blur(target)
    sxx = blur(pred * pred) - mu_x ** 2
    syy = blur(target * target) - mu_y ** 2
    sxy = blur(pred * target) - mu_x * mu_y
    smap = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1)
                                                         * (sxx + syy + c2))
    pad = int(3.5 * sigma + 0.5)  # skip the border where the window leaves the image
    inner = smap[pad:-pad, pad:-pad] if min(smap.shape[:2]) > 2 * pad else smap
    return float(inner.mean())


def contextual_score(pred: np.ndarray, target: np.ndarray, *, patch: int = 5, stride: int = 2,
                     max_points: int = 2048, band_width: float = 0.5, seed: int = 0) -> float:
    """Contextual similarity CX in (0, 1] on raw patches (higher is better, misalignment-
    tolerant); the same points are sampled for a given ``seed``."""
    pred, target = _pair(pred, target)
    to_t = lambda im: torch.from_numpy(  # noqa: E731
        (im if im.ndim == 3 else im[..., None]).transpose(2, 0, 1).astype(np.float32))[None]
    cx = ContextualLoss(patch=patch, stride=stride, max_points=max_points, band_width=band_width)
    gen = torch.Generator().manual_seed(seed)
    x, y = cx.patches(to_t(pred)), cx.patches(to_t(target))
    x, y = sample_pair(x, y, max_points, gen)
    return float(contextual_similarity(x, y, band_width=band_width)[0])


def difference_map(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """|pred − target| as float32 (H, W) (channels averaged): where the errors sit."""
    pred, target = _pair(pred, target)
    diff = np.abs(pred - target)
    return (diff.mean(-1) if diff.ndim == 3 else diff).astype(np.float32)


@dataclass(frozen=True)
class ShiftedScores:
    """Scores at the integer shift ``(dy, dx)`` of ``pred`` that maximises PSNR."""

    psnr: float
    ssim: float
    shift_yx: tuple[int, int]


def best_shift_scores(pred: np.ndarray, target: np.ndarray, *, max_shift: int = 2
                      ) -> ShiftedScores:
    """PSNR/SSIM after the best integer shift within ±``max_shift`` px (hand-aligned pairs).

    Every candidate is scored on the same central crop (a ``max_shift`` border removed), so
    shift 0 here is comparable with the others, not with the unshifted full-image score.
    """
    pred, target = _pair(pred, target)
    m = max_shift
    if min(pred.shape[:2]) <= 2 * m + 8:
        raise ValueError(f"images of {pred.shape[:2]} px are too small for max_shift={m}")
    core = target[m:-m, m:-m] if m else target
    best = None
    for dy in range(-m, m + 1):
        for dx in range(-m, m + 1):
            moved = pred[m + dy:pred.shape[0] - m + dy, m + dx:pred.shape[1] - m + dx]
            score = psnr(moved, core)
            if best is None or score > best[0]:
                best = (score, dy, dx, moved)
    score, dy, dx, moved = best
    return ShiftedScores(score, ssim(moved, core), (dy, dx))


def unsharp_mask(image: np.ndarray, *, sigma: float = 2.0, amount: float = 1.0) -> np.ndarray:
    """image + amount·(image − Gaussian(image, σ)), clipped to [0, 1]."""
    image = np.asarray(image, np.float32)
    sig = (sigma, sigma, 0) if image.ndim == 3 else sigma
    blurred = ndimage.gaussian_filter(image, sig, mode="reflect")
    return np.clip(image + amount * (image - blurred), 0, 1).astype(np.float32)


def gaussian_psf(sigma_px: float, *, size: int | None = None) -> np.ndarray:
    """Normalised 2-D Gaussian PSF (odd size, default ⌈6σ⌉+1)."""
    if sigma_px <= 0:
        raise ValueError(f"sigma_px={sigma_px} must be > 0")
    size = size or int(np.ceil(6 * sigma_px)) // 2 * 2 + 1
    ax = np.arange(size) - size // 2
    g = np.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * sigma_px ** 2))
    return (g / g.sum()).astype(np.float32)


def richardson_lucy(image: np.ndarray, psf: np.ndarray, *, iterations: int = 20,
                    eps: float = 1e-6) -> np.ndarray:
    """Richardson–Lucy deconvolution of a (H, W) [0, 1] image by ``psf`` (reflect-padded so
    the borders do not ring); returns float32 [0, 1]."""
    image = np.asarray(image, np.float64)
    if image.ndim == 3:
        return np.stack([richardson_lucy(image[..., c], psf, iterations=iterations, eps=eps)
                         for c in range(image.shape[-1])], -1)
    psf = np.asarray(psf, np.float64)
    if psf.ndim != 2 or psf.sum() <= 0:
        raise ValueError("psf must be a 2-D array with a positive sum")
    psf = psf / psf.sum()
    pad = max(psf.shape)
    padded = np.pad(image, pad, mode="reflect") + eps
    estimate = np.full_like(padded, padded.mean())
    mirror = psf[::-1, ::-1]
    for _ in range(iterations):
        blurred = signal.fftconvolve(estimate, psf, mode="same")
        estimate *= signal.fftconvolve(padded / (blurred + eps), mirror, mode="same")
    return np.clip(estimate[pad:-pad, pad:-pad], 0, 1).astype(np.float32)
