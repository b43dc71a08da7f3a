"""Polish of a near-correct mosaic ↔ SEM placement: a bounded grid search of gradient correlation.

Each coarse candidate is polished here before it is verified (``imaging.registration_checks``);
for automatic registrations the verified polish is the answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from imaging.registration_features import gradient_magnitude, subpixel_peak

__all__ = ["Polish", "polish_placement", "polish_similarity"]


@dataclass(frozen=True)
class Polish:
    """Result of ``polish_similarity``: refined fixed → mosaic transform and its gradient NCC."""

    fixed_to_mosaic: np.ndarray
    score: float
    scale_change: float  # relative to the start
    angle_change_deg: float
    at_edge: bool  # the best scale or angle lies on the edge of the searched range


def _parabola_vertex(values: np.ndarray, i: int) -> float:
    """Sub-step offset (−0.5…0.5) of the maximum of ``values`` at index ``i`` by a parabola fit."""
    if i <= 0 or i >= len(values) - 1:
        return 0.0
    m, z, p = values[i - 1], values[i], values[i + 1]
    d = m - 2 * z + p
    return float(np.clip(0.5 * (m - p) / d, -0.5, 0.5)) if d < 0 else 0.0


def polish_similarity(
    fixed: np.ndarray,
    mosaic: np.ndarray,
    fixed_to_mosaic0: np.ndarray,
    *,
    sigma: float = 1.5,
    max_shift_px: int = 4,
    max_scale_change: float = 0.015,
    scale_step: float = 0.0025,
    max_angle_deg: float = 0.4,
    angle_step_deg: float = 0.1,
) -> Polish:
    """Refine a near-correct fixed → mosaic transform by a bounded grid search of gradient NCC.

    fixed : (h, w) float32, SEM resampled to the mosaic's pixel size; mosaic : (H, W) float32.
    For each scale and rotation about the fixed image's centre (a small grid around the start)
    the mosaic's gradient image is warped into the fixed frame and the fixed gradient image is
    located by normalised cross-correlation within ±``max_shift_px``; the best (scale, angle,
    shift) is interpolated by parabolas. The search is bounded, so unlike an unconstrained
    optimiser it cannot run off to a distant optimum (Powell on the same objective ran 80 px off
    on simulator pairs). Plain (not log) gradients: the log amplified the noise of dark
    synthetic mosaics (median 0.19 → 0.4 px) and gained nothing on simulated SSUM mosaics.
    """
    h, w = fixed.shape
    pad = int(max_shift_px) + 1
    margin = int(np.ceil(2 * sigma)) + 2
    if min(h, w) <= 2 * margin + 8:
        raise ValueError(f"polish_similarity: fixed image too small, {fixed.shape}")
    grad_f = gradient_magnitude(fixed, sigma=sigma)[margin : h - margin, margin : w - margin]
    grad_m = gradient_magnitude(mosaic, sigma=sigma)
    centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    shift = np.array([[1.0, 0, margin - pad], [0, 1.0, margin - pad], [0, 0, 1]])  # canvas px → fixed px
    size = (w - 2 * margin + 2 * pad, h - 2 * margin + 2 * pad)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    n_s = int(round(max_scale_change / scale_step))
    n_a = int(round(max_angle_deg / angle_step_deg))
    scales = 1 + scale_step * np.arange(-n_s, n_s + 1)
    angles = angle_step_deg * np.arange(-n_a, n_a + 1)
    scores = np.full((len(scales), len(angles)), -np.inf)
    shifts = np.zeros((len(scales), len(angles), 2))

    def local(scale: float, angle: float) -> np.ndarray:
        a = np.deg2rad(angle)
        lin = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        m = np.eye(3)
        m[:2, :2] = lin
        m[:2, 2] = centre - lin @ centre
        return m

    for i, scale in enumerate(scales):
        for j, angle in enumerate(angles):
            to_mosaic = fixed_to_mosaic0 @ local(scale, angle) @ shift
            canvas = cv2.warpAffine(grad_m, to_mosaic[:2], size, flags=flags)
            surface = cv2.matchTemplate(canvas, grad_f, cv2.TM_CCOEFF_NORMED)
            _, best, _, (px, py) = cv2.minMaxLoc(surface)
            dr, dc = subpixel_peak(surface, py, px) if 0 < px < surface.shape[1] - 1 and 0 < py < surface.shape[0] - 1 \
                else (0.0, 0.0)
            scores[i, j] = best
            shifts[i, j] = (px + dc - pad, py + dr - pad)  # fixed-frame translation of the template
    i, j = np.unravel_index(int(np.argmax(scores)), scores.shape)
    di = _parabola_vertex(scores[:, j], i)
    dj = _parabola_vertex(scores[i, :], j)
    scale = float(scales[i] + di * scale_step)
    angle = float(angles[j] + dj * angle_step_deg)
    # template at fixed (margin, margin) found at canvas (px, py) = fixed (px + margin − pad, ...):
    # fixed content p lies at p + shift in the warped frame, so the transform moves by that shift
    move = np.eye(3)
    move[:2, 2] = shifts[i, j]
    result = fixed_to_mosaic0 @ local(scale, angle) @ move
    at_edge = i in (0, len(scales) - 1) or j in (0, len(angles) - 1)
    return Polish(fixed_to_mosaic=result, score=float(scores[i, j]), scale_change=scale - 1,
                  angle_change_deg=angle, at_edge=bool(at_edge))


def polish_placement(fixed: np.ndarray, mosaic: np.ndarray, fixed_to_mosaic0: np.ndarray, *,
                     fine_only: bool = False) -> Polish | None:
    """Bounded gradient-correlation polish, coarse then fine grid; None when the image is too small.

    Each grid is searched again around its optimum while that lies on the grid's edge (up to 3
    times); ``fine_only`` skips the coarse grid (a start already within a pixel or two).
    """
    coarse = dict(max_shift_px=6)
    fine = dict(max_shift_px=2, max_scale_change=0.005, scale_step=0.001, max_angle_deg=0.15, angle_step_deg=0.03)
    try:
        result = None
        for grid in ((fine,) if fine_only else (coarse, fine)):
            result = polish_similarity(fixed, mosaic, fixed_to_mosaic0 if result is None else result.fixed_to_mosaic,
                                       **grid)
            for _ in range(3):  # the optimum on the edge of the grid: search again around it
                if not result.at_edge:
                    break
                result = polish_similarity(fixed, mosaic, result.fixed_to_mosaic, **grid)
        return result
    except ValueError:
        return None
