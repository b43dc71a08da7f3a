"""Spatially varying Gaussian blur from a precomputed stack of blur levels.

Each pixel has its own σ (depth-dependent defocus, field-dependent PSF). The image is blurred
at a geometric ladder of σ levels (ratio 1.5) and each pixel blends the two levels that bracket
its σ. Levels above ~3 px are computed on box-downsampled copies and upsampled, so the cost of
a level does not grow with σ. This is the *gather* approximation: a pixel shows the scene
blurred by its own σ, which is exact wherever σ varies slowly and soft where it jumps
(documented in docs/physics.md).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

LEVEL_RATIO = 1.5
FIRST_LEVEL_PX = 0.6
MAX_SIGMA_PX = 128.0
_PAD = 64
_PRE_SIGMA = 0.8


def sigma_levels(max_sigma_px: float = MAX_SIGMA_PX) -> np.ndarray:
    """0, then FIRST_LEVEL_PX · 1.5^k up to at least ``max_sigma_px``."""
    count = int(math.ceil(math.log(max_sigma_px / FIRST_LEVEL_PX) / math.log(LEVEL_RATIO))) + 1
    return np.concatenate([[0.0], FIRST_LEVEL_PX * LEVEL_RATIO ** np.arange(count)])


LEVELS = sigma_levels()


def level_index(sigma_px: np.ndarray) -> np.ndarray:
    """Continuous position of each σ on the level ladder (linear below the first level, then
    logarithmic, so neighbouring levels blend in proportion to log σ)."""
    s = np.clip(sigma_px.astype(np.float32, copy=False), 0, MAX_SIGMA_PX)
    above = np.log(np.maximum(s, FIRST_LEVEL_PX) * np.float32(1 / FIRST_LEVEL_PX))
    t = np.float32(1.0) + above * np.float32(1 / math.log(LEVEL_RATIO))
    return np.where(s < FIRST_LEVEL_PX, s * np.float32(1 / FIRST_LEVEL_PX), t)


def _blur_level(image: np.ndarray, sigma: float, pyramid: dict[int, np.ndarray]) -> np.ndarray:
    if sigma <= 0:
        return image
    if sigma < 3.0:
        return cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    factor = 2 ** int(math.floor(math.log2(sigma / 1.5)))
    factor = min(factor, _PAD)
    if factor not in pyramid:
        prev = max(k for k in pyramid if k < factor)
        small = pyramid[prev]
        while prev < factor:
            # Anti-alias before each halving so the coarse copy is shift-invariant.
            h, w = small.shape
            small = cv2.GaussianBlur(small, (0, 0), _PRE_SIGMA, borderType=cv2.BORDER_REFLECT)
            small = cv2.resize(small, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
            prev *= 2
            pyramid[prev] = small
    small = pyramid[factor]
    # Pre-filters, 2-px boxes (variance 0.89·4^i per halving) and linear upsampling (d²/6)
    # already blur; the coarse Gaussian adds the rest.
    done = (_PRE_SIGMA ** 2 + 0.25) * (factor ** 2 - 1) / 3 + factor ** 2 / 6
    sigma_small = math.sqrt(max(sigma ** 2 - done, 0.25 * factor ** 2)) / factor
    small = cv2.GaussianBlur(small, (0, 0), sigma_small, borderType=cv2.BORDER_REFLECT)
    h, w = image.shape
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def variable_gaussian_blur(image: np.ndarray, sigma_px: np.ndarray) -> np.ndarray:
    """Blur ``image`` (rows, cols) float32 with a per-pixel Gaussian σ ``sigma_px`` (same shape,
    pixels; clipped to [0, MAX_SIGMA_PX]). Returns (rows, cols) float32."""
    if image.shape != sigma_px.shape:
        raise ValueError(f"image shape {image.shape} and sigma_px shape {sigma_px.shape} differ")
    rows, cols = image.shape
    smin, smax = float(sigma_px.min()), float(sigma_px.max())
    if smax - smin < 1e-3:  # uniform blur: one pass
        if smin <= 0:
            return image.astype(np.float32, copy=True)
        return _uniform(image.astype(np.float32, copy=False), smin)
    # Pad to a multiple of the largest box factor so every pyramid level aligns exactly.
    pr, pc = (-rows) % _PAD, (-cols) % _PAD
    padded = cv2.copyMakeBorder(image.astype(np.float32, copy=False), 0, pr, 0, pc, cv2.BORDER_REFLECT)
    t = level_index(sigma_px)
    k_lo = int(math.floor(float(t.min())))
    k_hi = min(int(math.ceil(float(t.max()))), LEVELS.size - 1)
    if k_hi == k_lo:
        k_hi = min(k_lo + 1, LEVELS.size - 1)
    pyramid = {1: padded}
    # Levels go straight into one preallocated stack (no copies); crop views at the end.
    stack = np.empty((k_hi - k_lo + 1,) + padded.shape, np.float32)
    for i, k in enumerate(range(k_lo, k_hi + 1)):
        stack[i] = _blur_level(padded, float(LEVELS[k]), pyramid)
    if stack.shape[0] == 1:
        return stack[0, :rows, :cols].copy()
    lower = np.minimum(t.astype(np.intp) - k_lo, stack.shape[0] - 2)
    # Blend weights that make the mixture's variance equal σ² (a mixture of two Gaussians).
    var = np.square(LEVELS[k_lo:k_hi + 1]).astype(np.float32)
    var_lo = np.take(var, lower)
    frac = np.clip((np.square(np.minimum(sigma_px, np.float32(MAX_SIGMA_PX))) - var_lo)
                   / (np.take(var, lower + 1) - var_lo), 0, 1)
    flat = stack.reshape(stack.shape[0], -1)
    index = lower * flat.shape[1] + _pixel_index(padded.shape, rows, cols)
    a = np.take(flat, index)
    b = np.take(flat, index + flat.shape[1])
    return a + (b - a) * frac


def _pixel_index(padded_shape, rows, cols) -> np.ndarray:
    """Flat index of each (row, col) < (rows, cols) inside a padded image."""
    return (np.arange(rows)[:, None] * padded_shape[1] + np.arange(cols)[None, :])


def _uniform(image: np.ndarray, sigma: float) -> np.ndarray:
    rows, cols = image.shape
    pr, pc = (-rows) % _PAD, (-cols) % _PAD
    padded = cv2.copyMakeBorder(image, 0, pr, 0, pc, cv2.BORDER_REFLECT)
    return np.ascontiguousarray(_blur_level(padded, sigma, {1: padded})[:rows, :cols])
