"""Pre-processing for training pairs: denoising, contrast (CLAHE) and edge enhancement.

Every function takes and returns a (H, W) float32 image in [0, 1]; ``apply_steps`` chains
named steps so a training configuration can list them (``[("nlm", {"h": 0.05}), ("clahe", {})]``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

from imaging.imageio import to_float32

__all__ = ["denoise_nlm", "denoise_bilateral", "clahe", "unsharp", "apply_steps", "STEPS"]


def _check(image: np.ndarray) -> np.ndarray:
    image = to_float32(image)
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D (H, W), got shape {image.shape}")
    return image


def denoise_nlm(image: np.ndarray, *, h: float = 0.04, template_px: int = 7, search_px: int = 21) -> np.ndarray:
    """Non-local means (OpenCV, on 16-bit data); ``h`` is the filter strength in [0, 1] grey units."""
    image = _check(image)
    if not 0 < h <= 1:
        raise ValueError(f"h must be in (0, 1], got {h}")
    if template_px % 2 == 0 or search_px % 2 == 0 or template_px < 3 or search_px <= template_px:
        raise ValueError(f"template_px and search_px must be odd, 3 <= template_px < search_px; got {template_px}, {search_px}")
    data = np.round(image * 65535).astype(np.uint16)
    out = cv2.fastNlMeansDenoising(data, h=[float(h * 65535)], templateWindowSize=template_px,
                                   searchWindowSize=search_px, normType=cv2.NORM_L1)
    return out.astype(np.float32) / 65535.0


def denoise_bilateral(image: np.ndarray, *, sigma_px: float = 2.0, sigma_grey: float = 0.08) -> np.ndarray:
    """Edge-preserving bilateral filter: spatial ``sigma_px``, range ``sigma_grey`` (grey units)."""
    image = _check(image)
    if not sigma_px > 0 or not sigma_grey > 0:
        raise ValueError(f"sigma_px and sigma_grey must be > 0, got {sigma_px}, {sigma_grey}")
    diameter = int(2 * round(2 * sigma_px) + 1)
    return np.clip(cv2.bilateralFilter(image, diameter, sigma_grey, sigma_px), 0, 1)


def clahe(image: np.ndarray, *, clip_limit: float = 2.0, tiles: int = 8) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation on a ``tiles × tiles`` grid (16-bit)."""
    image = _check(image)
    if not clip_limit > 0 or tiles < 1:
        raise ValueError(f"clip_limit must be > 0 and tiles >= 1, got {clip_limit}, {tiles}")
    # OpenCV divides the clip limit by the number of histogram bins: 65536 at 16 bits, so scale it
    # by 256 to keep the usual 8-bit meaning of clip_limit while keeping 16-bit precision.
    op = cv2.createCLAHE(clipLimit=float(clip_limit) * 256.0, tileGridSize=(tiles, tiles))
    return op.apply(np.round(image * 65535).astype(np.uint16)).astype(np.float32) / 65535.0


def unsharp(image: np.ndarray, *, sigma_px: float = 1.5, amount: float = 0.7) -> np.ndarray:
    """Unsharp mask: image + amount · (image − Gaussian(image, sigma_px)), clipped to [0, 1]."""
    image = _check(image)
    if not sigma_px > 0 or amount < 0:
        raise ValueError(f"sigma_px must be > 0 and amount >= 0, got {sigma_px}, {amount}")
    blurred = cv2.GaussianBlur(image, (0, 0), sigma_px)
    return np.clip(image + amount * (image - blurred), 0, 1).astype(np.float32)


STEPS: dict[str, Callable[..., np.ndarray]] = {
    "nlm": denoise_nlm, "bilateral": denoise_bilateral, "clahe": clahe, "unsharp": unsharp,
}


def apply_steps(image: np.ndarray, steps: Sequence[tuple[str, dict] | str]) -> np.ndarray:
    """Apply named steps in order; each is a name from ``STEPS`` or ``(name, keyword options)``."""
    out = _check(image)
    for step in steps:
        name, options = (step, {}) if isinstance(step, str) else step
        if name not in STEPS:
            raise ValueError(f"unknown pre-processing step {name!r}; choose from {sorted(STEPS)}")
        out = STEPS[name](out, **options)
    return out
