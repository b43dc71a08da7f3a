"""Offset between two overlapping frames, measured inside their circular fields of view.

Convention: a frame's position is the (x, y) pixel coordinate of its top-left pixel in the
mosaic; the *offset* of pair (i, j) is ``position_j − position_i`` in pixels, (x, y).

Method (MIST/ashlar family, adapted to a circular field of view):

1. From the nominal (stage) offset, take the lens where both circles overlap, grown by the
   search radius, from each frame, and correlate them in the Fourier domain *restricted to the
   masks* (Padfield's masked normalised cross-correlation: at every integer shift, the
   mean-subtracted NCC over exactly the pixels both circles share at that shift). Plain
   windowed phase correlation was tried first and measured worse here: the lens of two
   circles at 30 % overlap is only ~40 px wide, and wires crossing it pull the windowed peak
   towards the nominal offset (3 wrong peaks in 12 pairs vs 0 with the masked form).
2. Take the strongest few local maxima within the search radius, ranked by the NCC's
   significance (Fisher z × √overlap, so a sliver of overlap cannot win by chance), re-score
   each by the exact NCC over the mask overlap, keep the best.
3. Refine to sub-pixel by Gauss–Newton on the overlap (bicubic resampling, with a gain, offset
   and linear shading term between the two frames so left-over vignetting does not bias it),
   and report the 2×2 information matrix so the global solve weights each direction by how
   well the overlap pins it down, discounted where the residual is structure rather than noise.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy import fft, ndimage

__all__ = ["PairOffset", "register_pair", "refine_pair", "refine_offset", "mask_overlap_px", "bandpass", "eroded_fov"]



@dataclass(frozen=True)
class PairOffset:
    """Measured offset of frame j relative to frame i.

    offset_px : (x, y) float, ``position_j − position_i`` in pixels.
    score : NCC in [-1, 1] over the overlap at ``offset_px`` (higher is better).
    overlap_px : number of pixels both fields of view share at ``offset_px``.
    reason : why the estimate is unreliable, ``""`` when it looks sound.
    information : 2×2 inverse covariance of ``offset_px`` (px⁻², x/y order) from the refinement;
        weak along any direction the overlap does not pin down.
    alternatives : ((x, y, ncc), ...) every peak of the search (integer offsets, the chosen one
        included) with its exact NCC, best first. On periodic structures (gratings, dot arrays)
        aliases one period away score as high as the true offset, so one pair cannot tell them
        apart; the global placement picks among them by agreement with the other pairs.
    surface : (2·ry + 1, 2·rx + 1) float32 NCC of the searched frames at every integer offset
        ``surface_base + (dx, dy)`` within the search radius (NaN where the overlap is too small),
        or None; the global placement weighs whole surfaces against each other
        (:func:`imaging.placement.mrf_displacements`) rather than single peaks.
    """

    offset_px: tuple[float, float]
    score: float
    overlap_px: int
    reason: str = ""
    information: tuple = ((0.0, 0.0), (0.0, 0.0))
    alternatives: tuple = ()
    surface: np.ndarray | None = field(default=None, compare=False, repr=False)
    surface_base: tuple[int, int] = (0, 0)

    def __bool__(self) -> bool:
        return not self.reason


#: Shared gradient energy along a direction counts only beyond this many standard errors of
#: the noise left in it. At 1, noise leaves a lens of parallel lines ~1/1000 of its across-line
#: information along the lines (with each frame's own gradients it had ~1/8). At 3, frames in
#: blank or periodic corners kept no pinned direction at all (simulated 3×3 flat chip, seed 3:
#: 0.45 → 0.84 px mean); at 0 more noise passes as structure.
SHARED_ENERGY_ERRORS = 1.0


def _gaussian(image: np.ndarray, sigma: float) -> np.ndarray:
    """``ndimage.gaussian_filter(image, sigma)`` (radius 4σ, mirrored edges) by OpenCV's
    vectorised filter: the same to float32 round-off, 3–4× faster on one thread."""
    radius = int(4.0 * sigma + 0.5)
    return cv2.GaussianBlur(image, (2 * radius + 1,) * 2, sigma, sigmaY=sigma,
                            borderType=cv2.BORDER_REFLECT)


def bandpass(frame: np.ndarray, mask: np.ndarray, *, low_sigma_px: float = 1.0,
             high_sigma_px: float = 8.0) -> np.ndarray:
    """Difference of two Gaussians taken inside ``mask`` only (normalised convolution).

    frame : (H, W) float, flat-field corrected; mask : (H, W) bool field of view.
    Returns (H, W) float32, 0 outside the mask. Why: the NCC of raw SSUM frames is dominated by
    large areas (a bright pad, left-over shading), whose broad peak any residual vignetting
    drags by several px; keeping only edges makes the peak as sharp as the structures. Sharing
    the low cut-off also brings a sharp centre and a blurrier edge of the field closer. The
    normalisation keeps the mask's own border from becoming an edge.
    """
    if not 0 <= low_sigma_px < high_sigma_px:
        raise ValueError(f"need 0 ≤ low_sigma_px < high_sigma_px, got {low_sigma_px}, {high_sigma_px}")
    m = mask.astype(np.float32)
    x = np.where(mask, frame, 0).astype(np.float32)

    def smooth(sigma):
        if sigma == 0:
            return x
        return _gaussian(x, sigma) / np.maximum(_gaussian(m, sigma), 1e-3)

    return np.where(mask, smooth(low_sigma_px) - smooth(high_sigma_px), 0).astype(np.float32)


def _overlap_boxes(shape: tuple[int, int], shift: tuple[int, int]):
    """Slices of i and of j covering their common area when j sits at integer ``shift`` (x, y)."""
    h, w = shape
    dx, dy = shift
    r0, r1 = max(0, dy), min(h, h + dy)
    c0, c1 = max(0, dx), min(w, w + dx)
    if r1 <= r0 or c1 <= c0:
        return None
    return (slice(r0, r1), slice(c0, c1)), (slice(r0 - dy, r1 - dy), slice(c0 - dx, c1 - dx))


def mask_overlap_px(mask: np.ndarray, offset_px) -> int:
    """Number of pixels two copies of ``mask`` share when the second sits at ``offset_px`` (x, y)."""
    boxes = _overlap_boxes(mask.shape, (int(round(offset_px[0])), int(round(offset_px[1]))))
    if boxes is None:
        return 0
    bi, bj = boxes
    return int(np.count_nonzero(mask[bi] & mask[bj]))


def _grow(box, rx: int, ry: int, shape) -> tuple[slice, slice]:
    rows, cols = box
    return (slice(max(0, rows.start - ry), min(shape[0], rows.stop + ry)),
            slice(max(0, cols.start - rx), min(shape[1], cols.stop + rx)))


def masked_ncc(fixed, fixed_mask, moving, moving_mask, *, window=None):
    """Mean-subtracted NCC of two masked images at every integer shift (Padfield 2012).

    fixed, moving : 2-D float arrays; fixed_mask, moving_mask : bool arrays of the same shapes.
    Returns ``(ncc, count)``, both (R, C) float with R = rows_f + rows_m − 1; entry
    ``[v + rows_m − 1, u + cols_m − 1]`` compares fixed pixel (y, x) with moving pixel
    (y − v, x − u), over only the pixels both masks keep. ``count`` is that overlap size.
    ``window`` ((row_lo, row_hi), (col_lo, col_hi)), inclusive: the entries the caller needs;
    the others are 0. The transforms then only need to keep those free of wrap-around, not
    to hold the whole linear correlation: ~3× fewer points for a lens grown by its search
    radius.
    """
    shape = (fixed.shape[0] + moving.shape[0] - 1, fixed.shape[1] + moving.shape[1] - 1)
    if window is None:
        window = ((0, shape[0] - 1), (0, shape[1] - 1))
    (r0, r1), (c0, c1) = ((max(0, lo), min(n - 1, hi)) for (lo, hi), n in zip(window, shape, strict=True))
    # Circular length M leaves outputs lo…hi of a linear length N clean when M > hi and M ≥ N − lo.
    fast = tuple(fft.next_fast_len(max(hi + 1, n - lo, a, b), real=True)
                 for n, lo, hi, a, b in ((shape[0], r0, r1, fixed.shape[0], moving.shape[0]),
                                         (shape[1], c0, c1, fixed.shape[1], moving.shape[1])))
    # Single precision halves the transforms' cost; the sums it cancels (Σf² − (Σf)²/n) stay
    # well conditioned for the zero-mean, band-passed frames the search runs on.
    fixed_mask, moving_mask = (np.asarray(m, bool) for m in (fixed_mask, moving_mask))
    f = np.where(fixed_mask, fixed, 0.0).astype(np.float32)
    g = np.where(moving_mask, moving, 0.0).astype(np.float32)
    # Correlation as convolution with the moving arrays flipped.
    spec = lambda a: fft.rfft2(a, fast)  # noqa: E731
    flip = lambda a: a[::-1, ::-1]  # noqa: E731
    F, F2 = spec(f), spec(f * f)
    G, G2 = spec(flip(g)), spec(flip(g * g))
    back = lambda a: fft.irfft2(a, fast)[r0: r1 + 1, c0: c1 + 1]  # noqa: E731
    MF, MG, count = _mask_spectra(fixed_mask.tobytes(), fixed_mask.shape, moving_mask.tobytes(), moving_mask.shape,
                                  fast, (r0, r1, c0, c1))
    safe = np.maximum(count, 1.0)
    sum_f, sum_g = back(F * MG), back(MF * G)
    cov = back(F * G) - sum_f * sum_g / safe
    var_f = back(F2 * MG) - sum_f**2 / safe
    var_g = back(MF * G2) - sum_g**2 / safe
    denom = np.sqrt(np.clip(var_f, 0, None) * np.clip(var_g, 0, None))
    tiny = 1e-6 * max(float(np.max(denom)), 1e-30)
    ncc = np.where((denom > tiny) & (count > 0), cov / np.maximum(denom, tiny), 0.0)
    full_ncc, full_count = np.zeros(shape, ncc.dtype), np.zeros(shape, count.dtype)
    full_ncc[r0: r1 + 1, c0: c1 + 1] = np.clip(ncc, -1.0, 1.0)
    full_count[r0: r1 + 1, c0: c1 + 1] = count
    return full_ncc, full_count


@functools.lru_cache(maxsize=32)
def _mask_spectra(fixed_mask: bytes, fixed_shape, moving_mask: bytes, moving_shape, fast, window):
    """Spectra of the two masks (the moving one flipped) and their overlap count over ``window``.

    Cached: every frame of a scan shares one field-of-view mask and a raster repeats the same few
    neighbour geometries, so a scan needs only a handful of these (a quarter of the transforms).
    """
    mf = np.frombuffer(fixed_mask, bool).reshape(fixed_shape).astype(np.float32)
    mm = np.frombuffer(moving_mask, bool).reshape(moving_shape).astype(np.float32)
    MF, MG = fft.rfft2(mf, fast), fft.rfft2(mm[::-1, ::-1], fast)
    r0, r1, c0, c1 = window
    count = np.round(fft.irfft2(MF * MG, fast)[r0: r1 + 1, c0: c1 + 1])
    for array in (MF, MG, count):
        array.setflags(write=False)
    return MF, MG, count


def _significance(ncc, count):
    """Fisher z of an NCC times √n: ranks a 0.98 match on 2000 px above a 0.99 one on 700 px.

    A wrong shift that leaves only a sliver of overlap can correlate spuriously well; weighting
    by the overlap size keeps such slivers from beating the true, larger overlap.
    """
    return np.arctanh(np.clip(ncc, -0.999, 0.999)) * np.sqrt(np.maximum(np.asarray(count, float) - 3, 1))


def _candidates(surface, count, centre, radius, n_peaks, min_count, *, by_ncc=False) -> list[tuple[int, int]]:
    """Up to ``n_peaks`` local NCC maxima, as (dx, dy) from ``centre`` (col, row), within ±radius,
    strongest first by significance (or by NCC itself when ``by_ncc``)."""
    rx, ry = radius
    cx, cy = centre
    y0, y1 = max(0, cy - ry), min(surface.shape[0], cy + ry + 1)
    x0, x1 = max(0, cx - rx), min(surface.shape[1], cx + rx + 1)
    n = count[y0:y1, x0:x1]
    window = np.where(n >= min_count, _significance(surface[y0:y1, x0:x1], n), -np.inf)
    peaks = (window == ndimage.maximum_filter(window, size=3, mode="nearest")) & np.isfinite(window)
    # A maximum on the window's border is a slope, not a peak (a big pad's broad NCC dragged by
    # left-over shading); ignore such maxima unless nothing else peaks (a ridge: aperture problem).
    interior = peaks.copy()
    if y0 == cy - ry:
        interior[0] = False
    if y1 == cy + ry + 1:
        interior[-1] = False
    if x0 == cx - rx:
        interior[:, 0] = False
    if x1 == cx + rx + 1:
        interior[:, -1] = False
    if interior.any():
        peaks = interior
    idx = np.argwhere(peaks)
    strength = surface[y0:y1, x0:x1][peaks] if by_ncc else window[peaks]
    order = np.argsort(strength)[::-1][:n_peaks]
    return [(int(x0 + c - cx), int(y0 + r - cy)) for r, c in idx[order]]


def _refine(frame_i, frame_j, mask_eroded, start, iterations=10):
    """Gauss–Newton sub-pixel refinement of the offset around integer ``start`` (x, y).

    Model over the overlap: I_i(p) ≈ g·I_j(p − t) + a + b·x + c·y (gain, offset, shading).
    Returns the refined (x, y) offset and its 2×2 information matrix (px⁻², x/y order): the
    inverse covariance of the shift, small along directions the overlap does not pin down
    (a lens crossed only by parallel wires). The gradient energy is taken as the product of the
    two frames' gradients (:func:`_shared_gradient_energy`), so camera noise, independent in the
    two frames, adds none: with each frame's own gradients, noise made a grating's lens look
    pinned along the lines and its arbitrary position there was trusted as if measured.
    """
    h, w = frame_i.shape
    t = np.array(start, float)
    information = np.zeros((2, 2))
    boxes = _overlap_boxes(frame_i.shape, (int(start[0]), int(start[1])))
    if boxes is None:
        return t, information
    bi, _ = boxes
    rows, cols = np.nonzero(mask_eroded[bi])
    rows = rows + bi[0].start
    cols = cols + bi[1].start
    if len(rows) < 32:
        return t, information
    target = frame_i[rows, cols].astype(np.float64)
    xn = (cols - cols.mean()) / w
    yn = (rows - rows.mean()) / h
    # Prefilter only the part of j the overlap can reach (the refinement moves ≤ 1.5 px).
    r0 = max(0, int(rows.min() - t[1]) - 6)
    r1 = min(h, int(rows.max() - t[1]) + 7)
    c0 = max(0, int(cols.min() - t[0]) - 6)
    c1 = min(w, int(cols.max() - t[0]) + 7)
    spline = ndimage.spline_filter(frame_j[r0:r1, c0:c1].astype(np.float64), order=3)
    select = mask_eroded[bi]
    sample = _ShiftSampler(spline, (r0, c0), bi, select)
    # The design as rows, filled in place: no N × 6 array assembled each iteration, and its
    # products with the residual run over contiguous memory. Rows: ∂/∂x and ∂/∂y of frame j's
    # samples (their half-pixel differences), the samples, 1, x, y.
    design = np.empty((6, len(rows)))
    solved, inside = None, None
    for _ in range(iterations):
        moved = _shifted_mask(mask_eroded, bi, t)[select]
        n = int(np.count_nonzero(moved))
        if n < 32:
            break
        rows_in = design[:, :n]
        if inside is None or not np.array_equal(moved, inside):  # the overlap changes as t crosses half pixels
            inside = moved
            rows_in[3], rows_in[4], rows_in[5] = 1.0, xn[inside], yn[inside]
            goal = target[inside]
        got = sample.with_gradient(t[1], t[0], inside)
        if got is None:
            got = (sample(t[1], t[0]),
                   sample(t[1], t[0] - 0.5) - sample(t[1], t[0] + 0.5),
                   sample(t[1] - 0.5, t[0]) - sample(t[1] + 0.5, t[0]))
        for row, values in zip((2, 0, 1), got, strict=True):
            rows_in[row] = values[inside]
        gram = rows_in @ rows_in.T
        photometric = rows_in[2:]
        coef = _solve_normal(gram[2:, 2:], photometric @ goal, photometric, goal)
        residual = goal - coef @ photometric
        # d/dt of g·I_j(p − t) = −g·∇I_j; solved jointly with the photometric terms.
        scale = np.array([-coef[0], -coef[0], 1.0, 1.0, 1.0, 1.0])
        normal = gram * np.outer(scale, scale)
        step = _solve_normal(normal, scale * (rows_in @ residual), rows_in, residual, scale)
        if not np.all(np.isfinite(step[:2])):
            break
        solved = (inside, coef[0], normal, residual)
        step_xy = np.clip(step[:2], -1.0, 1.0)
        t += step_xy
        if np.hypot(*step_xy) < 2e-3:
            break
    if solved is not None:
        inside, gain, normal, residual = solved
        sigma2 = max(float(residual @ residual) / max(len(residual) - 6, 1), 1e-12)
        gj = np.stack([sample(t[1], t[0] - 1) - sample(t[1], t[0] + 1),
                       sample(t[1] - 1, t[0]) - sample(t[1] + 1, t[0])], axis=1)[inside] / 2
        shared = _shared_gradient_energy(frame_i, rows[inside], cols[inside], gj)
        normal[:2, :2] = gain * gain * shared
        # Shift block of the inverse covariance, photometric terms marginalised (Schur complement).
        hpp = normal[2:, 2:] + 1e-12 * np.eye(4)
        information = (normal[:2, :2] - normal[:2, 2:] @ np.linalg.solve(hpp, normal[2:, :2])) / sigma2
        inflation = _residual_inflation(residual, rows[inside] - bi[0].start, cols[inside] - bi[1].start,
                                        (bi[0].stop - bi[0].start, bi[1].stop - bi[1].start))
        information = _positive_part(information) / inflation
    return t, information


#: Power of the residual's variance inflation applied to the information (:func:`_residual_inflation`):
#: 1 is the AR(1) model's full factor. Simulated planar chips (3×3 and 4×4, seeds 1–8 less the
#: one with stage errors beyond 10 %): mean error 0.140 px without, 0.128 at 1 (max errors up to
#: 0.75, 10 of 16 scans at the goal), 0.126 at 0.5 (11 of 16, as without); flat, default and
#: stacked chips and synthetic scans the same either way.
RESIDUAL_CORRELATION_POWER = 0.5


def _residual_inflation(residual: np.ndarray, rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> float:
    """How many times fewer independent samples the refinement's ``residual`` holds than pixels
    (≥ 1), to the power :data:`RESIDUAL_CORRELATION_POWER`: the variance inflation of a separable
    AR(1) field, (1 + ρx)/(1 − ρx) · (1 + ρy)/(1 − ρy), from the lag-one correlations of the
    residual laid out at its pixels (``rows``, ``cols`` within a box of ``shape``). Why: the
    information treats the residual as independent per pixel, true of camera noise; where the
    two frames show a structure differently (its blur or brightness changes with each frame's
    contact), the residual is that structure, smooth over many pixels, and a link weighed as if
    it were noise outvotes better links with wherever its refinement stopped on a flat ridge of
    its NCC (on a 3×3 planar chip two such links held a corner frame 0.8 px off in y)."""
    grid = np.zeros(shape)
    valid = np.zeros(shape, bool)
    grid[rows, cols], valid[rows, cols] = residual, True

    def lag_one(a, b, ok) -> float:
        a, b = a[ok], b[ok]
        norm = math.sqrt(float(a @ a) * float(b @ b))
        return float(np.clip(float(a @ b) / norm, 0.0, 0.95)) if norm > 0 else 0.0

    rho_x = lag_one(grid[:, 1:], grid[:, :-1], valid[:, 1:] & valid[:, :-1])
    rho_y = lag_one(grid[1:], grid[:-1], valid[1:] & valid[:-1])
    factor = (1 + rho_x) / (1 - rho_x) * (1 + rho_y) / (1 - rho_y)
    return factor**RESIDUAL_CORRELATION_POWER


def _solve_normal(normal: np.ndarray, rhs: np.ndarray, rows: np.ndarray, b: np.ndarray,
                  scale: np.ndarray | None = None) -> np.ndarray:
    """``lstsq(rowsᵀ, b)`` for few ``rows`` (≤ 6) of many samples, by the normal equations
    (``normal`` = rows rowsᵀ, ``rhs`` = rows b), several times faster; by lstsq itself where
    they are ill-conditioned (a blank overlap: no gradient rows). ``scale``: a factor per row
    that ``normal`` and ``rhs`` carry and ``rows`` do not (applied to them only then)."""
    if np.linalg.cond(normal) < 1e10:
        return np.linalg.solve(normal, rhs)
    if scale is not None:
        rows = rows * scale[:, None]
    return np.linalg.lstsq(rows.T, b, rcond=None)[0]


def _shared_gradient_energy(frame_i, rows, cols, gj) -> np.ndarray:
    """Σ ∇I_i ∇I_jᵀ (symmetrised, 2×2, x/y order) over the overlap pixels (``gj``: frame j's
    central-difference gradients there, at the offset found): the gradient energy the two
    frames have in common. Noise is independent between frames,
    so its gradients cancel in the product instead of adding like in Σ ∇I_j ∇I_jᵀ; what is
    left of them is a random sum, so each principal direction keeps only its energy beyond
    :data:`SHARED_ENERGY_ERRORS` standard errors of that sum."""
    gi = np.stack([frame_i[rows, cols + 1] - frame_i[rows, cols - 1],
                   frame_i[rows + 1, cols] - frame_i[rows - 1, cols]], axis=1).astype(np.float64) / 2
    product = gi.T @ gj
    _, vectors = np.linalg.eigh(0.5 * (product + product.T))
    terms = (gi @ vectors) * (gj @ vectors)  # per pixel, along each principal direction
    energy = terms.sum(axis=0) - SHARED_ENERGY_ERRORS * np.sqrt(np.square(terms).sum(axis=0))
    return (vectors * np.maximum(energy, 0.0)) @ vectors.T


def _bspline_taps(fraction: float) -> np.ndarray:
    """Cubic B-spline weights of the four coefficients at ⌊p⌋ − 1 … ⌊p⌋ + 2 for p's fraction."""
    f = fraction
    return np.array([(1 - f) ** 3, 3 * f**3 - 6 * f**2 + 4, -3 * f**3 + 3 * f**2 + 3 * f + 1, f**3]) / 6


_SAMPLER_MARGIN = 8


class _ShiftSampler:
    """Cubic-spline samples of frame j at p − t for the pixels p of frame i's overlap ``box``
    picked by ``select``, in row-major order, one shift t for all of them.

    What ``map_coordinates(spline, p − t, order=3, prefilter=False)`` gives, but a common shift
    shares each axis's four tap weights, so the samples are one separable 4×4 stencil over
    the box (cv2.sepFilter2D) instead of sixteen weights computed per point: 3–4× faster.
    Its edges as map_coordinates' mode 'constant' has them: coefficients mirrored within
    ``spline`` (its top-left at frame j's ``origin``), 0 for points beyond it.
    """

    def __init__(self, spline: np.ndarray, origin: tuple[int, int], box, select: np.ndarray):
        rows, cols = np.nonzero(select)  # the stencil covers the picked pixels' bounding box
        r, c = (rows.min(), rows.max() + 1), (cols.min(), cols.max() + 1)
        self.spline, self.origin, self.select = spline, origin, select[r[0]:r[1], c[0]:c[1]]
        self.rows, self.cols = rows - r[0], cols - c[0]  # for the per-point path
        # scipy mirrors the taps of points within the spline; points beyond it are 0 whatever
        # their taps read, so a further margin may hold anything.
        self.padded = np.pad(np.pad(spline, 2, mode="reflect"), _SAMPLER_MARGIN - 2)
        self.y0, self.x0 = box[0].start + r[0], box[1].start + c[0]
        self.h, self.w = self.select.shape

    def __call__(self, ty: float, tx: float) -> np.ndarray:
        by, bx = math.floor(-ty), math.floor(-tx)
        # Coefficient row of pixel y's first tap: y − r0 + ⌊−ty⌋ − 1 (likewise for columns),
        # plus the margin in the padded array.
        top = self.y0 - self.origin[0] + by - 1 + _SAMPLER_MARGIN
        left = self.x0 - self.origin[1] + bx - 1 + _SAMPLER_MARGIN
        if (top < 0 or left < 0 or top + self.h + 3 > self.padded.shape[0]
                or left + self.w + 3 > self.padded.shape[1]):
            return ndimage.map_coordinates(
                self.spline, [self.rows + self.y0 - ty - self.origin[0], self.cols + self.x0 - tx - self.origin[1]],
                order=3, prefilter=False)
        window = self.padded[top: top + self.h + 3, left: left + self.w + 3]
        out = cv2.sepFilter2D(window, cv2.CV_64F, _bspline_taps(-tx - bx), _bspline_taps(-ty - by),
                              anchor=(0, 0), borderType=cv2.BORDER_CONSTANT)[: self.h, : self.w]
        py = np.arange(self.h) + (self.y0 - self.origin[0] - ty)  # spline coordinates
        px = np.arange(self.w) + (self.x0 - self.origin[1] - tx)
        out[(py < 0) | (py > self.spline.shape[0] - 1)] = 0.0
        out[:, (px < 0) | (px > self.spline.shape[1] - 1)] = 0.0
        return out[self.select]

    def with_gradient(self, ty: float, tx: float, used: np.ndarray):
        """The samples at shift t and their half-pixel differences along x and y, ``self(ty, tx −
        ½) − self(ty, tx + ½)`` and ``self(ty − ½, tx) − self(ty + ½, tx)``, from three stencils
        over one window instead of five. None where a ``used`` pixel (of the picked ones) lies
        beyond the spline at one of those shifts (the samples one by one zero it there) or the
        window would leave the padded coefficients."""
        by, bx = math.floor(-ty), math.floor(-tx)
        top = self.y0 - self.origin[0] + by - 2 + _SAMPLER_MARGIN  # six taps from ⌊p⌋ − 2
        left = self.x0 - self.origin[1] + bx - 2 + _SAMPLER_MARGIN
        if (top < 0 or left < 0 or top + self.h + 5 > self.padded.shape[0]
                or left + self.w + 5 > self.padded.shape[1]):
            return None
        py, px = self.y0 - self.origin[0] - ty, self.x0 - self.origin[1] - tx  # the box's first spline coordinates
        if py < 0.5 or px < 0.5 or py + self.h + 0.5 > self.spline.shape[0] or px + self.w + 0.5 > self.spline.shape[1]:
            rows, cols = self.rows[used], self.cols[used]
            if (py + rows.min() < 0.5 or px + cols.min() < 0.5 or py + rows.max() + 1.5 > self.spline.shape[0]
                    or px + cols.max() + 1.5 > self.spline.shape[1]):
                return None
        window = self.padded[top: top + self.h + 5, left: left + self.w + 5]
        (vx, dx), (vy, dy) = _half_difference_taps(tx), _half_difference_taps(ty)

        def stencil(kx, ky):
            out = cv2.sepFilter2D(window, cv2.CV_64F, kx, ky, anchor=(0, 0), borderType=cv2.BORDER_CONSTANT)
            return out[: self.h, : self.w][self.select]

        return stencil(vx, vy), stencil(dx, vy), stencil(vx, dy)


def _half_difference_taps(t: float) -> tuple[np.ndarray, np.ndarray]:
    """Six cubic B-spline taps along one axis, over coefficients ⌊p⌋ − 2 … ⌊p⌋ + 3 of p = u − t:
    those of the sample at p, and those of S(p + ½) − S(p − ½)."""
    base = math.floor(-t)
    value, difference = np.zeros(6), np.zeros(6)
    value[1:5] = _bspline_taps(-t - base)
    above, below = math.floor(-t + 0.5), math.floor(-t - 0.5)  # ⌊p ± ½⌋ − ⌊p⌋ is 0 or ±1
    difference[above - base + 1: above - base + 5] += _bspline_taps(-t + 0.5 - above)
    difference[below - base + 1: below - base + 5] -= _bspline_taps(-t - 0.5 - below)
    return value, difference


def _shifted_mask(mask: np.ndarray, box, t) -> np.ndarray:
    """``mask`` (frame j's) at the nearest pixel to p − t for each pixel p of frame i's ``box``
    (as map_coordinates' order 0: ⌊p − t + ½⌋), False outside frame j."""
    dy, dx = math.floor(0.5 - t[1]), math.floor(0.5 - t[0])
    rows, cols = box
    out = np.zeros((rows.stop - rows.start, cols.stop - cols.start), bool)
    r0, r1 = max(rows.start + dy, 0), min(rows.stop + dy, mask.shape[0])
    c0, c1 = max(cols.start + dx, 0), min(cols.stop + dx, mask.shape[1])
    if r1 > r0 and c1 > c0:
        out[r0 - rows.start - dy: r1 - rows.start - dy, c0 - cols.start - dx: c1 - cols.start - dx] = mask[r0:r1, c0:c1]
    return out


def _positive_part(matrix: np.ndarray) -> np.ndarray:
    """The symmetric 2×2 ``matrix`` with negative eigenvalues (noise in a direction with no
    shared structure) set to zero."""
    values, vectors = np.linalg.eigh(0.5 * (matrix + matrix.T))
    return (vectors * np.maximum(values, 0.0)) @ vectors.T


def register_pair(
    frame_i: np.ndarray,
    frame_j: np.ndarray,
    nominal_offset_px,
    *,
    mask: np.ndarray,
    max_shift_px: float | tuple[float, float],
    n_peaks: int = 4,
    n_alternatives: int = 30,
    min_overlap_px: int = 200,
    refine_frames: tuple[np.ndarray, np.ndarray] | None = None,
    precise_frames: tuple[np.ndarray, np.ndarray] | None = None,
) -> PairOffset:
    """Measure ``position_j − position_i`` for two overlapping frames.

    frame_i, frame_j : (H, W) float32, flat-field corrected, rows × cols.
    nominal_offset_px : (x, y) offset expected from the stage, px.
    mask : (H, W) bool, the useful (circular) field of view shared by all frames.
    max_shift_px : how far (px) the true offset may lie from the nominal one, per axis.
    n_peaks : correlation peaks re-scored by exact NCC to choose ``offset_px``.
    n_alternatives : peaks reported in ``alternatives`` (≥ ``n_peaks`` are searched).
    min_overlap_px : a pair whose masks share fewer pixels is not measured.
    refine_frames : optional (frame_i, frame_j) the sub-pixel refinement runs on instead.
    precise_frames : optional less filtered (frame_i, frame_j); the refinement is run on them too
        and kept (with their score) where it agrees within 0.25 px with the first one.

    Returns a :class:`PairOffset`; a falsy one (``reason`` set) when the overlap is too small or
    the frames hold no structure — the placement then leans on the stage and other links.
    """
    h, w = frame_i.shape
    nominal = np.asarray(nominal_offset_px, float)
    base = (int(round(nominal[0])), int(round(nominal[1])))
    radius = np.broadcast_to(np.asarray(max_shift_px, float), (2,))
    rx, ry = int(np.ceil(radius[0])), int(np.ceil(radius[1]))
    boxes = _overlap_boxes((h, w), base)
    lens_px = 0 if boxes is None else int(np.count_nonzero(mask[boxes[0]] & mask[boxes[1]]))
    if lens_px < min_overlap_px:
        return PairOffset(tuple(nominal), 0.0, lens_px, reason="no_overlap")
    bi, bj = boxes
    # Both regions are the nominal lens grown by the search radius: at any shift within the
    # radius their masked overlap is exactly the lens the two circles share at that shift.
    ri = _grow(bi, rx, ry, (h, w))
    rj = _grow(bj, rx, ry, (h, w))
    # Surface index (u, v) ↔ shift of j relative to the nominal one.
    cy = (bi[0].start - ri[0].start) - (bj[0].start - rj[0].start) + (rj[0].stop - rj[0].start) - 1
    cx = (bi[1].start - ri[1].start) - (bj[1].start - rj[1].start) + (rj[1].stop - rj[1].start) - 1
    surface, count = masked_ncc(frame_i[ri], mask[ri], frame_j[rj], mask[rj],
                                window=((cy - ry, cy + ry), (cx - rx, cx + rx)))
    min_count = max(min_overlap_px, lens_px // 4)
    window = _window(surface, count, (cx, cy), (rx, ry), min_count)
    candidates = _candidates(surface, count, (cx, cy), (rx, ry), n_peaks, min_count)
    # Aliases on periodic patterns tie in NCC but not in significance (which favours the larger
    # overlap): collect the alternatives by NCC so the true offset is among them.
    candidates += [c for c in _candidates(surface, count, (cx, cy), (rx, ry), n_alternatives, min_count,
                                          by_ncc=True) if c not in candidates]
    best, best_rank, best_overlap = base, -np.inf, 0
    alternatives = []
    for rank_order, (dx, dy) in enumerate(candidates):
        shift = (base[0] + dx, base[1] + dy)
        # The surface is the NCC over the lens at each integer shift (single precision: within
        # 4e-4 of a direct double sum), so the peaks are ranked on it rather than recomputed
        # (that was a third of the stitching time on 512 px frames).
        score, overlap = float(surface[cy + dy, cx + dx]), int(count[cy + dy, cx + dx])
        rank = _significance(score, overlap)
        if overlap >= min_overlap_px:
            alternatives.append((float(shift[0]), float(shift[1]), float(score)))
            if rank_order < n_peaks and rank > best_rank:
                best, best_rank, best_overlap = shift, rank, overlap
    alternatives.sort(key=lambda a: -a[2])
    if best_overlap < min_overlap_px:
        return PairOffset(tuple(nominal), 0.0, lens_px, reason="no_overlap")
    eroded = eroded_fov(mask)
    if refine_frames is not None:
        frame_i, frame_j = refine_frames
    refined, information = _refine(frame_i, frame_j, eroded, best)
    if precise_frames is not None:
        # The less filtered frames are more precise where they agree with the searched ones;
        # where they do not (a big pad's broad edge dragged by shading) the filtered result stands.
        wide, wide_information = _refine(precise_frames[0], precise_frames[1], eroded, best)
        if np.all(np.abs(wide - refined) <= 0.25):
            refined, information = wide, wide_information
            frame_i, frame_j = precise_frames
    wandered = bool(np.any(np.abs(refined - best) > 1.5))
    if wandered:  # Gauss–Newton left the peak: the integer peak was not a match of these frames
        refined = np.array(best, float)
        information = np.eye(2) / 0.5**2
    score, overlap = _ncc_subpixel(frame_i, frame_j, eroded, refined)
    reason = "blank" if not np.isfinite(score) else ("unrefined" if wandered else "")
    return PairOffset((float(refined[0]), float(refined[1])), float(np.nan_to_num(score)), overlap,
                      reason, tuple(map(tuple, information.tolist())), tuple(alternatives), window, base)


def eroded_fov(mask: np.ndarray) -> np.ndarray:
    """``mask`` eroded by two pixels, where the bilinear samples of the refinement stay clear
    of the field of view's edge. Every pair of a scan shares one mask, so it is eroded once."""
    return _eroded_cached(np.ascontiguousarray(mask, bool).tobytes(), mask.shape)


@functools.lru_cache(maxsize=4)
def _eroded_cached(mask_bytes: bytes, shape: tuple[int, ...]) -> np.ndarray:
    eroded = ndimage.binary_erosion(np.frombuffer(mask_bytes, bool).reshape(shape), iterations=2)
    eroded.flags.writeable = False
    return eroded


def refine_offset(frame_i: np.ndarray, frame_j: np.ndarray, start_px, *, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`refine_pair`'s refined (x, y) offset and its 2×2 information matrix alone, without
    the NCC score (a fifth of its time) or the checks on how far it went."""
    return _refine(frame_i, frame_j, eroded_fov(mask), np.asarray(start_px, float))


def refine_pair(frame_i: np.ndarray, frame_j: np.ndarray, start_px, *, mask: np.ndarray) -> PairOffset:
    """Sub-pixel refinement alone (no search) of ``position_j − position_i`` from ``start_px``
    (x, y), which may be fractional: the basin it starts in decides which of several nearby
    optima (fine periodic structure) it ends on. Frames and mask as for :func:`register_pair`;
    ``reason`` is ``"unrefined"`` when it wandered more than 1.5 px from the start."""
    start = np.asarray(start_px, float)
    eroded = eroded_fov(mask)
    refined, information = refine_offset(frame_i, frame_j, start, mask=mask)
    reason = "unrefined" if np.any(np.abs(refined - start) > 1.5) else ""
    score, overlap = _ncc_subpixel(frame_i, frame_j, eroded, refined)
    reason = reason or ("blank" if not np.isfinite(score) else "")
    return PairOffset((float(refined[0]), float(refined[1])), float(np.nan_to_num(score)), overlap, reason,
                      tuple(map(tuple, information.tolist())))


def _window(surface, count, centre, radius, min_count) -> np.ndarray:
    """The NCC surface at offsets within ±radius of ``centre`` (col, row), NaN where the overlap
    is smaller than ``min_count`` or the shift falls outside the computed surface."""
    rx, ry = radius
    cx, cy = centre
    out = np.full((2 * ry + 1, 2 * rx + 1), np.nan, np.float32)
    y0, y1 = max(0, cy - ry), min(surface.shape[0], cy + ry + 1)
    x0, x1 = max(0, cx - rx), min(surface.shape[1], cx + rx + 1)
    part = np.where(count[y0:y1, x0:x1] >= min_count, surface[y0:y1, x0:x1], np.nan)
    out[y0 - (cy - ry): y1 - (cy - ry), x0 - (cx - rx): x1 - (cx - rx)] = part
    return out


def _ncc_subpixel(frame_i, frame_j, mask_eroded, offset) -> tuple[float, int]:
    """NCC over the overlap with frame j resampled (bilinear) at the sub-pixel offset."""
    base = (int(np.floor(offset[0])), int(np.floor(offset[1])))
    boxes = _overlap_boxes(frame_i.shape, base)
    if boxes is None:
        return float("nan"), 0
    bi, _ = boxes
    rows, cols = np.nonzero(mask_eroded[bi])
    rows = rows + bi[0].start
    cols = cols + bi[1].start
    jr, jc = rows - offset[1], cols - offset[0]
    inside = ndimage.map_coordinates(mask_eroded.astype(np.float32), [jr, jc], order=0) > 0
    if inside.sum() < 16:
        return float("nan"), int(inside.sum())
    a = frame_i[rows[inside], cols[inside]].astype(np.float64)
    b = ndimage.map_coordinates(frame_j, [jr[inside], jc[inside]], order=1)
    a -= a.mean()
    b -= b.mean()
    denom = np.sqrt((a @ a) * (b @ b))
    return (float(a @ b / denom) if denom > 0 else float("nan")), int(inside.sum())
