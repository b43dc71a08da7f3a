"""Feature images and correlation shared by the mosaic ↔ SEM registration stages.

Gradient magnitude, local-contrast features and the bands that stack both are blind to the
sign of the contrast and to the material-dependent grey levels of optical vs SEM images; the
coarse sweep (``imaging.coarse_registration``), the polish (``imaging.registration_polish``),
the independent checks (``imaging.registration_checks``) and the fine refiners
(``imaging.fine_registration``) all correlate these rather than raw intensities.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["band_features", "contrast_features", "gradient_magnitude", "gradient_ncc", "similarity_lstsq", "subpixel_peak"]


def gradient_magnitude(image: np.ndarray, *, sigma: float) -> np.ndarray:
    """Sobel gradient magnitude of ``image`` smoothed with a Gaussian of ``sigma`` px; (H, W) float32."""
    image = np.asarray(image, np.float32)
    if sigma > 0:
        image = cv2.GaussianBlur(image, (0, 0), sigma)
    gx = cv2.Sobel(image, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(image, cv2.CV_32F, 0, 1, ksize=3)
    return cv2.magnitude(gx, gy)


def contrast_features(image: np.ndarray, *, sigma: float = 6.0, smooth: float = 1.0) -> np.ndarray:
    """Magnitude of the locally contrast-normalised image; (H, W) float32.

    The image minus its Gaussian (``sigma`` px) mean, divided by the local standard deviation,
    smoothed by ``smooth`` px and rectified: blind to the sign of the contrast (optical vs SEM)
    and to slow shading, and band-limited so the sharp SEM meets the blurred optical image.
    """
    image = np.asarray(image, np.float32)
    mean = cv2.GaussianBlur(image, (0, 0), sigma)
    detail = image - mean
    spread = np.sqrt(cv2.GaussianBlur(detail * detail, (0, 0), sigma))
    # the floor keeps flat, noise-only areas from being blown up to full contrast
    normalised = detail / (spread + 0.05 * float(np.median(spread)) + 1e-12)
    if smooth > 0:
        normalised = cv2.GaussianBlur(normalised, (0, 0), smooth)
    return np.abs(normalised)


def band_features(image: np.ndarray) -> np.ndarray:
    """Locally normalised gradient magnitude and local contrast at two scales; (H, W, 3) float32.

    Band 0: gradient magnitude (σ 1.5 px) over its RMS within ~8 px (floored at 0.1 × its
    median, so noise in flat areas is not blown up), which makes a faint edge weigh about as
    much as a bright one; bands 1 and 2: ``contrast_features`` at σ 6 and 12 px. Each band has
    unit standard deviation, so the NCC of ``cv2.matchTemplate``, which sums over channels,
    weighs the three alike. In plain gradient magnitude the few structures the optical image
    shows far brighter than the rest rule the correlation: on three simulator pairs a place
    tens of px off out-correlated the truth (whole margins −0.16 to −0.02), which these bands
    ranked first (+0.05 to +0.07).
    """
    image = np.asarray(image, np.float32)
    gradient = gradient_magnitude(image, sigma=1.5)
    local = np.sqrt(cv2.GaussianBlur(gradient * gradient, (0, 0), 8.0))
    bands = [gradient / (local + 0.1 * float(np.median(local)) + 1e-12), contrast_features(image),
             contrast_features(image, sigma=12.0, smooth=2.0)]
    return np.dstack([band / (band.std() + 1e-12) for band in bands]).astype(np.float32)


def gradient_ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean-subtracted normalised cross-correlation of ``a`` and ``b`` (same shape) inside ``mask``."""
    if mask is not None:
        a, b = a[mask], b[mask]
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    if a.size < 16:
        return 0.0
    a = a - a.mean()
    b = b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else 0.0


def similarity_lstsq(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares (a, b, tx, ty) of dst = [[a, −b], [b, a]] src + t for (N, 2) point arrays (x, y)."""
    n = len(src)
    design = np.zeros((2 * n, 4))
    design[0::2] = np.column_stack([src[:, 0], -src[:, 1], np.ones(n), np.zeros(n)])
    design[1::2] = np.column_stack([src[:, 1], src[:, 0], np.zeros(n), np.ones(n)])
    return np.linalg.lstsq(design, np.asarray(dst, np.float64).reshape(-1), rcond=None)[0]


def subpixel_peak(surface: np.ndarray, r: int, c: int) -> tuple[float, float]:
    """Parabolic sub-pixel offset (dr, dc) of a peak in a periodic correlation surface."""
    h, w = surface.shape

    def vertex(m: float, z: float, p: float) -> float:
        d = m - 2 * z + p
        return float(np.clip(0.5 * (m - p) / d, -0.5, 0.5)) if d < 0 else 0.0

    z = surface[r, c]
    dr = vertex(surface[(r - 1) % h, c], z, surface[(r + 1) % h, c])
    dc = vertex(surface[r, (c - 1) % w], z, surface[r, (c + 1) % w])
    return dr, dc
