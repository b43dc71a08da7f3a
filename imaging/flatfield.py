"""Flat-field (shading) and dark-field correction for scan frames.

Model (BaSiC convention, Peng et al. 2017): a measured frame is
``I_i(x) = B_i · S(x) + D(x) + content``, with ``S`` the smooth multiplicative flat field
(mean 1 inside the field of view), ``D`` the smooth additive dark field and ``B_i`` a
per-frame baseline. Correction is ``(I − D) / S``.

:func:`estimate_flatfield` fits ``S`` (and optionally ``D``) from the scan's own frames: the
low-rank part is ``B ⊗ S + 1 ⊗ D`` with ``S`` and ``D`` restricted to low-degree Legendre
polynomials (our stand-in for BaSiC's DCT smoothness prior), the sparse part — the sample's structures — is
down-weighted by iteratively reweighted least squares with Cauchy weights. Everything runs on
frames shrunk to a small working size, so 100 frames of 2048² cost well under a second.
:func:`flatfield_from_overlaps` fits ``S`` again once the frames are placed, to where they overlap
(the same spot seen at two places in the field: the sample cancels). :func:`flatfield_from_calibration`
builds the same object from frames of a featureless reference (bare silicon) instead. Pixels
outside the circular field of view are ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from imaging.imageio import to_float32

__all__ = ["FlatField", "estimate_flatfield", "flatfield_from_calibration", "flatfield_from_overlaps",
           "apply_flatfield"]

_MIN_FLAT = 0.05  # a flat below 5 % of its mean is a dead region; clamp so division stays finite


@dataclass(frozen=True)
class FlatField:
    """Shading profiles of one optical path.

    flat : (H, W) float32, mean 1 over ``mask``, 1 outside it.
    dark : (H, W) float32 in frame units ([0, 1] of full scale), 0 outside ``mask``.
    mask : (H, W) bool, the useful field of view the profiles were fitted on.
    method : ``"estimated"``, ``"overlaps"`` or ``"calibration"``.
    """

    flat: np.ndarray
    dark: np.ndarray
    mask: np.ndarray
    method: str

    @property
    def shape(self) -> tuple[int, int]:
        return self.flat.shape


def apply_flatfield(frame: np.ndarray, flatfield: FlatField) -> np.ndarray:
    """Return ``(frame − dark) / flat`` as (H, W) float32 (frame converted to [0, 1] first).

    Values are not clipped: a corrected frame may exceed 1 slightly where the flat is < 1.
    """
    image = to_float32(frame)
    if image.shape != flatfield.shape:
        raise ValueError(f"frame shape {image.shape} does not match flat field {flatfield.shape}")
    return (image - flatfield.dark) / flatfield.flat


def _check_frames(frames: Sequence[np.ndarray], name: str) -> tuple[int, int]:
    """The frames' common (rows, cols), or ValueError naming ``name`` and what is wrong."""
    if len(frames) == 0:
        raise ValueError(f"{name} is empty; give at least one frame")
    shapes = {np.shape(f) for f in frames}
    if len(shapes) != 1:
        raise ValueError(f"{name} have mixed shapes {sorted(shapes)}; all frames must match")
    shape = shapes.pop()
    if len(shape) != 2:
        raise ValueError(f"{name} must be 2-D (rows, cols) images, got shape {shape}")
    if any(np.issubdtype(np.asarray(f).dtype, np.floating) and not np.isfinite(f).all() for f in frames):
        raise ValueError(f"{name} contain NaN or infinite values")
    return shape


def _check_stack(frames: Sequence[np.ndarray], name: str) -> np.ndarray:
    _check_frames(frames, name)
    return np.stack([to_float32(f) for f in frames])


def _check_mask(mask: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    if mask is None:
        return np.ones(shape, bool)
    mask = np.asarray(mask, bool)
    if mask.shape != shape:
        raise ValueError(f"mask shape {mask.shape} does not match frames {shape}")
    if mask.sum() < 16:
        raise ValueError("mask must keep at least 16 pixels of the field of view")
    return mask


def _exponents(degree: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(degree + 1) for j in range(degree + 1 - i)]


def _basis(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int], degree: int) -> np.ndarray:
    """(P, K) 2-D Legendre polynomials of total degree ≤ degree at pixel coords (rows, cols).

    Coordinates are scaled to [-1, 1] over the frame; Legendre rather than cosine terms because a
    vignette has a non-zero slope at the frame edge, which a cosine series converges to slowly.
    """
    h, w = shape
    v = np.polynomial.legendre.legvander(2 * (np.asarray(rows) + 0.5) / h - 1, degree)  # (P, d+1)
    u = np.polynomial.legendre.legvander(2 * (np.asarray(cols) + 0.5) / w - 1, degree)
    return np.stack([v[:, i] * u[:, j] for i, j in _exponents(degree)], axis=1)


def _evaluate(coeffs: np.ndarray, shape: tuple[int, int], degree: int) -> np.ndarray:
    """Evaluate the polynomial series on the full (H, W) grid; float32."""
    h, w = shape
    v = np.polynomial.legendre.legvander(2 * (np.arange(h) + 0.5) / h - 1, degree)  # (H, d+1)
    u = np.polynomial.legendre.legvander(2 * (np.arange(w) + 0.5) / w - 1, degree)  # (W, d+1)
    table = np.zeros((degree + 1, degree + 1))
    for (i, j), c in zip(_exponents(degree), coeffs, strict=False):
        table[i, j] = c
    return (v @ table @ u.T).astype(np.float32)


def _shrink(frames: Sequence[np.ndarray], mask: np.ndarray, working_size: int):
    """Masked area-average of the (checked) frames to ≈ working_size; returns (N, P) values and
    cell centres. One frame at a time: a stack of a scan's frames in float32 would be 4 bytes a pixel.

    Cells cut by the edge of the field of view are kept (averaged over their masked part only)
    so the fit reaches the rim, where vignetting is strongest.
    """
    h, w = mask.shape
    scale = min(1.0, working_size / max(h, w))
    hs, ws = max(4, round(h * scale)), max(4, round(w * scale))
    m = mask.astype(np.float32)
    cover = cv2.resize(m, (ws, hs), interpolation=cv2.INTER_AREA)
    keep = cover > 0.25
    small = np.stack([cv2.resize(to_float32(f) * m, (ws, hs), interpolation=cv2.INTER_AREA) for f in frames])
    r, c = np.nonzero(keep)
    # Centre of mass of the masked part of each cell, in full-resolution pixel coordinates.
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    rows = cv2.resize(yy * m, (ws, hs), interpolation=cv2.INTER_AREA)[r, c] / cover[r, c]
    cols = cv2.resize(xx * m, (ws, hs), interpolation=cv2.INTER_AREA)[r, c] / cover[r, c]
    return (small[:, r, c] / cover[r, c]).astype(np.float64), rows, cols


def estimate_flatfield(
    frames: Sequence[np.ndarray],
    *,
    mask: np.ndarray | None = None,
    estimate_dark: bool = False,
    degree: int = 4,
    working_size: int | None = None,
    max_iterations: int = 40,
    tolerance: float = 1e-5,
) -> FlatField:
    """Estimate the flat field (and optionally the dark field) from the frames of a scan.

    frames : sequence of N (H, W) images (uint8, uint16 or float in [0, 1]); N ≥ 2, the more
        frames at distinct sample positions the better (structures must not sit at the same
        spot in every frame).
    mask : (H, W) bool useful field of view (the sphere's circle); pixels outside are ignored.
    estimate_dark : also fit an additive dark field. It is only identifiable when the frames'
        baselines differ (e.g. areas of different reflectivity); otherwise leave it off and use a
        dark frame through :func:`flatfield_from_calibration`.
    degree : total degree of the 2-D Legendre polynomials that span the flat and dark fields
        (smoothness; 6 follows a vignette with a ring across the field, 2 a plain cos⁴ fall-off).
    working_size : frames are area-averaged to about this many pixels on their long side; None:
        a quarter of it, within 64–128 (cells of ~4 px average the sample's fine structure away
        but keep the shading: on 512–768 px frames 64 left 0.9–1.8 % mean error, 128 0.2–0.3 %;
        on 96–128 px frames 64 did best).

    Returns a :class:`FlatField` with ``method="estimated"``.
    """
    shape = _check_frames(frames, "frames")
    if len(frames) < 2:
        raise ValueError("frames: need at least 2 frames to estimate a flat field")
    if not 1 <= degree <= 12:
        raise ValueError(f"degree must be in [1, 12], got {degree}")
    if working_size is None:
        working_size = int(np.clip(max(shape) // 4, 64, 128))
    if working_size < 8:
        raise ValueError(f"working_size must be ≥ 8, got {working_size}")
    mask = _check_mask(mask, shape)
    data, rows, cols = _shrink(frames, mask, working_size)  # (N, P)
    basis = _basis(rows, cols, shape, degree)  # (P, K)
    n, _ = data.shape

    baseline = np.median(data, axis=1)  # B_i
    if np.all(baseline <= 0):
        raise ValueError("frames are all black inside the mask; cannot estimate a flat field")
    baseline = np.maximum(baseline, 1e-6)
    flat = np.ones(data.shape[1])
    dark = np.zeros(data.shape[1])
    flat_coeffs = np.zeros(basis.shape[1])
    dark_coeffs = np.zeros(basis.shape[1])
    weights = np.ones_like(data)
    ridge = 1e-9 * np.eye(basis.shape[1])
    previous = np.inf
    for _ in range(max_iterations):
        # (S, D)-step: weighted least squares of I ≈ B_i S(x) + D(x) over the polynomial
        # coefficients of S and D jointly (alternating S and D would zig-zag for hundreds of steps).
        wsum, wb, wbb = weights.sum(0), (weights * baseline[:, None]).sum(0), (weights * baseline[:, None] ** 2).sum(0)
        rhs_s = basis.T @ (weights * baseline[:, None] * data).sum(0)
        if estimate_dark:
            k = basis.shape[1]
            lhs = np.empty((2 * k, 2 * k))
            lhs[:k, :k] = basis.T @ (basis * wbb[:, None])
            lhs[:k, k:] = lhs[k:, :k] = basis.T @ (basis * wb[:, None])
            lhs[k:, k:] = basis.T @ (basis * wsum[:, None])
            rhs = np.concatenate([rhs_s, basis.T @ (weights * data).sum(0)])
            solution = np.linalg.solve(lhs + 1e-9 * np.eye(2 * k), rhs)
            flat_coeffs, dark_coeffs = solution[:k], solution[k:]
            # B·S + D equals (B + c)·S + (D − c·S) for any c: pin c by asking the dark field
            # to share no shape with the flat (least variance), true for a camera offset.
            flat, dark = basis @ flat_coeffs, basis @ dark_coeffs
            spread = np.var(flat)
            if spread > 1e-12:
                dark_coeffs = dark_coeffs - np.cov(dark, flat, bias=True)[0, 1] / spread * flat_coeffs
            dark = basis @ dark_coeffs
        else:
            flat_coeffs = np.linalg.solve(basis.T @ (basis * wbb[:, None]) + ridge, rhs_s)
        flat = basis @ flat_coeffs
        # B-step: per-frame baseline given the shading.
        baseline = (weights * (data - dark) * flat).sum(1) / np.maximum((weights * flat**2).sum(1), 1e-12)
        # Fix the scale ambiguity B·S: the flat has mean 1 over the field of view.
        mean_flat = flat.mean()
        flat_coeffs /= mean_flat
        flat /= mean_flat
        baseline *= mean_flat
        residual = data - baseline[:, None] * flat - dark
        # Sample structures are the sparse part: Cauchy weights with a robust (MAD) scale.
        scale = 1.4826 * np.median(np.abs(residual - np.median(residual))) + 1e-9
        weights = 1.0 / (1.0 + (residual / (2.385 * scale)) ** 2)
        objective = float(np.sum(weights * residual**2))
        if abs(previous - objective) <= tolerance * max(objective, 1e-12):
            break
        previous = objective

    full_flat = _evaluate(flat_coeffs, shape, degree)
    full_dark = _evaluate(dark_coeffs, shape, degree) if estimate_dark else np.zeros(shape, np.float32)
    full_flat /= np.float32(full_flat[mask].mean())
    return _finish(full_flat, full_dark, mask, "estimated")


def flatfield_from_calibration(
    flat_frames: Sequence[np.ndarray] | np.ndarray,
    *,
    dark_frames: Sequence[np.ndarray] | np.ndarray | None = None,
    mask: np.ndarray | None = None,
    smooth_sigma_px: float = 2.0,
) -> FlatField:
    """Build a flat field from frames of a featureless reference (bare silicon) through the sphere.

    flat_frames : one (H, W) frame or a sequence of them, taken at different places on the
        reference. Three or more are combined by their per-pixel median: dust and defects on the
        sample move from frame to frame and drop out, where a mean would print each into every
        corrected frame. Dirt on the optics stays put, belongs to the shading, and is kept.
    dark_frames : optional frame(s) with the shutter closed / no light; default zero dark.
    mask : (H, W) bool useful field of view.
    smooth_sigma_px : Gaussian smoothing (px) applied to the averaged reference; 0 keeps it raw.
    """
    if isinstance(flat_frames, np.ndarray) and flat_frames.ndim == 2:
        flat_frames = [flat_frames]
    flats = _check_stack(flat_frames, "flat_frames")
    shape = flats.shape[1:]
    mask = _check_mask(mask, shape)
    if smooth_sigma_px < 0:
        raise ValueError(f"smooth_sigma_px must be ≥ 0, got {smooth_sigma_px}")
    dark = np.zeros(shape, np.float32)
    if dark_frames is not None:
        if isinstance(dark_frames, np.ndarray) and dark_frames.ndim == 2:
            dark_frames = [dark_frames]
        darks = _check_stack(dark_frames, "dark_frames")
        if darks.shape[1:] != shape:
            raise ValueError(f"dark_frames shape {darks.shape[1:]} does not match flat_frames {shape}")
        dark = darks.mean(0)
    flat = (np.median(flats, axis=0) if len(flats) >= 3 else flats.mean(0)) - dark
    if smooth_sigma_px > 0:
        flat = _smooth(flat, mask, smooth_sigma_px)
        dark = _smooth(dark, mask, smooth_sigma_px)
    mean = float(flat[mask].mean())
    if mean <= 0:
        raise ValueError("flat_frames are not brighter than dark_frames inside the mask")
    return _finish((flat / mean).astype(np.float32), dark.astype(np.float32), mask, "calibration")


#: Pixel pairs the overlap fit samples at most: 14 coefficients need far fewer (on synthetic 3×3 and
#: 6×6 scans 20 000 were as accurate as 400 000, which took 4× the time).
_MAX_OVERLAP_SAMPLES = 100_000
#: Frames are fitted at most this many pixels across.
_OVERLAP_WORKING_PX = 512
#: The overlaps' offsets must spread across both axes: the second moment along the narrower
#: direction at least this fraction of the wider one's (a grid: ~1; one row with the stage's
#: jitter: ~0.01).
MIN_OFFSET_SPREAD = 0.1


def flatfield_from_overlaps(
    frames: Sequence[np.ndarray],
    positions_px,
    *,
    mask: np.ndarray | None = None,
    degree: int = 4,
    smooth_sigma_px: float = 1.0,
    min_samples: int = 2_000,
) -> FlatField | None:
    """Fit the flat field to where placed frames overlap: the same spot of the sample, seen at two
    places in the field of view, differs only by the shading there.

    For a point at ``x`` in frame i and ``x − (p_j − p_i)`` in frame j, ``log I_i − log I_j =
    log S(x) − log S(x − d)``: the sample's own contrast cancels, so unlike
    :func:`estimate_flatfield` the fit does not need the structures to average out over the scan.
    ``log S`` is a Legendre polynomial of total ``degree``: only differences of ``S`` at the scan's
    few offsets are seen, and on simulated 4×4 scans degree 5 was already ill-posed (1.5 % mean
    error against 0.4 % at degree 4; a weak pull towards :func:`estimate_flatfield`'s answer let
    that one's errors in and did worse). Frames are smoothed by ``smooth_sigma_px`` first, and
    pixels that disagree beyond the shading (a misplaced frame, a layer focused differently) are
    down-weighted (iteratively reweighted least squares).

    frames : N (H, W) frames as captured (uint16, uint8 or float in [0, 1]).
    positions_px : (N, 2) (x, y) top-left of each frame in the mosaic, from the stitch.
    mask : (H, W) bool useful field of view.

    Returns a :class:`FlatField` with ``method="overlaps"``, or None where the overlaps cannot pin
    the shading down: fewer than ``min_samples`` sampled pixels shared, or offsets along one
    direction only (a one-row scan compares the field's columns but never its rows; with the
    stage's jitter the fit there is noise, 10 % off at worst on a synthetic 1×4 scan).
    """
    if len(frames) == 0:
        raise ValueError("frames is empty; give at least one frame")
    shapes = {np.shape(f) for f in frames}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"frames must be 2-D and all the same shape, got {sorted(shapes)}")
    n, (full_h, full_w) = len(frames), shapes.pop()
    full_mask = _check_mask(mask, (full_h, full_w))
    positions = np.asarray(positions_px, float)
    if positions.shape != (n, 2) or not np.isfinite(positions).all():
        raise ValueError(f"positions_px must be {n} finite (x, y) pairs, got shape {positions.shape}")
    if not 1 <= degree <= 8:
        raise ValueError(f"degree must be in [1, 8], got {degree}")
    # A degree-4 shading needs no more than ~512 px across: larger frames are fitted shrunk (the
    # polynomial's coordinates span the frame at any size), one frame in memory at a time.
    scale = min(1.0, _OVERLAP_WORKING_PX / max(full_h, full_w))
    h, w = (full_h, full_w) if scale == 1 else (round(full_h * scale), round(full_w * scale))
    shape = (h, w)
    mask = full_mask if scale == 1 else cv2.resize(full_mask.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA) > 0.99
    positions = positions * np.array([w / full_w, h / full_h])
    margin = int(np.ceil(2 * smooth_sigma_px)) + 1  # where smoothing has not mixed in the outside
    inner = cv2.erode(mask.astype(np.uint8), np.ones((2 * margin + 1,) * 2, np.uint8)).astype(bool)
    if not inner.any():
        return None

    def log_of(frame):
        if np.issubdtype(np.asarray(frame).dtype, np.floating) and not np.isfinite(frame).all():
            raise ValueError("frames contain NaN or infinite values")
        image = to_float32(frame)
        if scale < 1:
            image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        if smooth_sigma_px > 0:
            image = cv2.GaussianBlur(image, (0, 0), smooth_sigma_px)
        return np.log(np.maximum(image, 1e-6)).astype(np.float32)

    logs = [log_of(f) for f in frames]
    pairs = []
    for i in range(n):
        for j in range(i + 1, n):
            d = positions[j] - positions[i]
            if abs(d[0]) < w and abs(d[1]) < h:
                pairs.append((i, j, d))
    offsets = np.array([d / (w, h) for _, _, d in pairs]).reshape(-1, 2)
    moments = np.linalg.eigvalsh(offsets.T @ offsets) if len(offsets) else np.zeros(2)
    if moments[1] == 0 or moments[0] < MIN_OFFSET_SPREAD * moments[1]:
        return None
    # one sampling stride for every pair, as fine as the sample budget allows
    shared = sum(max(0.0, (w - abs(d[0])) * (h - abs(d[1]))) for _, _, d in pairs) * inner.mean()
    stride = max(1, int(np.ceil(np.sqrt(shared / _MAX_OVERLAP_SAMPLES))))
    ys, xs = np.nonzero(inner[::stride, ::stride])
    ys, xs = (ys * stride).astype(np.float32), (xs * stride).astype(np.float32)
    at_i, at_j, differences = [], [], []
    for i, j, d in pairs:
        yj, xj = ys - np.float32(d[1]), xs - np.float32(d[0])
        ok = (xj >= 0) & (xj <= w - 1) & (yj >= 0) & (yj <= h - 1)
        ok[ok] = inner[np.round(yj[ok]).astype(int), np.round(xj[ok]).astype(int)]
        if not ok.any():
            continue
        log_j = cv2.remap(logs[j], xj[ok][None, :], yj[ok][None, :], cv2.INTER_LINEAR)[0]
        at_i.append((ys[ok], xs[ok]))
        at_j.append((yj[ok], xj[ok]))
        differences.append(logs[i][ys[ok].astype(int), xs[ok].astype(int)] - log_j)
    if sum(len(b) for b in differences) < min_samples:
        return None
    b = np.concatenate(differences).astype(np.float64)
    # the constant term cancels in every difference: fitted without it, the mean fixed at the end
    design = (_basis(np.concatenate([r for r, _ in at_i]), np.concatenate([c for _, c in at_i]), shape, degree)
              - _basis(np.concatenate([r for r, _ in at_j]), np.concatenate([c for _, c in at_j]), shape, degree))[:, 1:]
    weights = np.ones_like(b)
    for _ in range(8):
        lhs = design.T @ (design * weights[:, None])
        coeffs = np.linalg.solve(lhs + 1e-9 * np.trace(lhs) / len(lhs) * np.eye(len(lhs)), design.T @ (weights * b))
        residual = b - design @ coeffs
        noise = 1.4826 * np.median(np.abs(residual)) + 1e-9
        weights = np.minimum(1.0, 2.0 * noise / np.maximum(np.abs(residual), 1e-12))  # Huber
    flat = np.exp(_evaluate(np.concatenate([[0.0], coeffs]), (full_h, full_w), degree))
    flat /= np.float32(flat[full_mask].mean())
    return _finish(flat, np.zeros((full_h, full_w), np.float32), full_mask, "overlaps")


def _smooth(image: np.ndarray, mask: np.ndarray, sigma: float, degree: int = 4) -> np.ndarray:
    """Denoise a reference inside the field of view without biasing its rim.

    A masked Gaussian blur alone pulls the steep vignette at the rim towards the interior, so the
    smooth trend is fitted as a polynomial first and only the remainder (dust, fine structure)
    is blurred.
    """
    rows, cols = np.nonzero(mask)
    stride = max(1, len(rows) // 20000)  # a sparse sample fits a degree-4 trend just as well
    basis = _basis(rows[::stride], cols[::stride], image.shape, degree)
    coeffs, *_ = np.linalg.lstsq(basis, image[rows[::stride], cols[::stride]], rcond=None)
    trend = _evaluate(coeffs, image.shape, degree)
    rest = np.where(mask, image - trend, 0).astype(np.float32)
    weight = ndimage.gaussian_filter(mask.astype(np.float32), sigma)
    blurred = ndimage.gaussian_filter(rest, sigma) / np.maximum(weight, 1e-3)
    return np.where(mask, trend + blurred, image).astype(np.float32)


def _finish(flat: np.ndarray, dark: np.ndarray, mask: np.ndarray, method: str) -> FlatField:
    flat = np.where(mask, np.maximum(flat, _MIN_FLAT), 1.0).astype(np.float32)
    dark = np.where(mask, dark, 0.0).astype(np.float32)
    return FlatField(flat=flat, dark=dark, mask=mask.copy(), method=method)
