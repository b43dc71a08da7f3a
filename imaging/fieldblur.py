"""The sphere's field-dependent blur, matched across each overlap before the final refinement.

A microsphere's virtual image is sharpest at the centre of its field of view and blurs towards
the rim. In an overlap a structure sits near the centre of one frame and near the rim of the
other, and across the lens the two frames' blurs grow in opposite directions: the refinement,
which can shift, scale and shade one frame onto the other but not blur it, takes part of that
asymmetry for a shift. On simulated planar chips with every link refined from its true offset
the mosaics still erred by 0.16–0.17 px on average (0.26–0.41 px at worst) from this alone.

"Cross-blur": blur each frame, at every pixel of the overlap, by the blur the other frame has in
excess at the same place on the sample. Both then show every point through about the same PSF
(Gaussian variances add), and what is left to explain is the shift. Model: the excess over the
centre's blur grows linearly with the distance from the field's centre, σ(ρ) = E·ρ px, ρ that
distance over the useful field's radius. E is measured per scan (:func:`estimate_edge_blur`):
the value under which the overlaps, cross-blurred, agree best. On the simulator's optics the
true excess, √(σ(ρ)² − σ(0)²), is within 0.1 px of a line; with links refined from the truth
the same planar scans fell to 0.05 px mean error (0.17 px at worst).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from imaging.pairwise import eroded_fov

__all__ = ["BLUR_LEVEL_STEP_PX", "EDGE_BLUR_GRID_PX", "MAX_EDGE_BLUR_SPREAD_PX", "MIN_BRACKETED_SHARE",
           "EdgeBlurEstimate", "field_radius", "variable_blur", "cross_blurred",
           "overlap_mismatch", "estimate_edge_blur"]

#: Spacing of the blur levels a per-pixel σ is interpolated between (in variance, so the mix
#: has the wanted variance; a mix of Gaussians 0.5 px apart is within a few per cent of one).
BLUR_LEVEL_STEP_PX = 0.5

#: Edge blurs E (px) tried by :func:`estimate_edge_blur`, refined by a parabola through the
#: best one and its neighbours; evenly spaced.
EDGE_BLUR_GRID_PX = (0.0, 1.0, 2.0, 3.0, 4.0)

#: The overlaps' own best edge blurs may spread (interquartile range) this much, and at least
#: this share of them must find theirs within the grid, for one field blur to explain them
#: (:func:`estimate_edge_blur`). Simulated scans, 12 overlaps each: planar chips (seeds 1–2, 4, 6)
#: 0.19–0.34 px, 92–100 % bracketed; flat chips (lower layers defocused by how high the sphere
#: rests; seeds 1–6) 50–92 % bracketed, 0.50–0.71 px where enough were, but two 4×4 scans at 0.22
#: and 0.32 px, matched (0.088 → 0.103 px mean error, 0.252 → 0.190); default and Z-stacked
#: chips (seeds 1–2) 0–33 % bracketed.
MAX_EDGE_BLUR_SPREAD_PX = 0.45
MIN_BRACKETED_SHARE = 0.8

#: Margin (px) around an overlap's box that the blur reads from: 3σ of the largest excess.
_MARGIN_SIGMAS = 3.0


def field_radius(mask: np.ndarray) -> np.ndarray:
    """(rows, cols) float32: each pixel's distance from the centre of the circular field of view
    ``mask`` (its centroid) over the circle's radius (from its area): 0 at the centre, 1 on the rim."""
    mask = np.asarray(mask, bool)
    rows, cols = np.nonzero(mask)
    if len(rows) == 0:
        raise ValueError("mask marks no pixel; it must be the field of view")
    radius = math.sqrt(len(rows) / math.pi)
    yy, xx = np.ogrid[: mask.shape[0], : mask.shape[1]]
    return (np.hypot(yy - rows.mean(), xx - cols.mean()) / radius).astype(np.float32)


def _gaussian(image: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return image
    radius = int(4.0 * sigma + 0.5)
    return cv2.GaussianBlur(image, (2 * radius + 1,) * 2, sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)


def _levels(image: np.ndarray, valid: np.ndarray, top_px: float) -> np.ndarray:
    """(levels, rows, cols): ``image`` (0 outside ``valid``) and its normalised blurs at every
    level up to ``top_px``."""
    return _LazyLevels(image, valid, top_px).up_to(top_px)


def _mix(levels: np.ndarray, valid: np.ndarray, sigma_px: np.ndarray) -> np.ndarray:
    """Each pixel from the two ``levels`` that bracket its σ, weighted so the mix has variance σ²."""
    sigma = np.clip(np.asarray(sigma_px, np.float32), 0, (len(levels) - 1) * BLUR_LEVEL_STEP_PX)
    index = np.minimum((sigma / BLUR_LEVEL_STEP_PX).astype(np.intp), len(levels) - 2)
    below, above = index * BLUR_LEVEL_STEP_PX, (index + 1) * BLUR_LEVEL_STEP_PX
    weight = np.clip((np.square(sigma) - below**2) / (above**2 - below**2), 0, 1).astype(np.float32)
    low = np.take_along_axis(levels, index[None], axis=0)[0]
    high = np.take_along_axis(levels, index[None] + 1, axis=0)[0]
    return np.where(valid, low + weight * (high - low), 0).astype(np.float32)


def variable_blur(image: np.ndarray, valid: np.ndarray, sigma_px: np.ndarray) -> np.ndarray:
    """``image`` blurred at every pixel by its own Gaussian σ (``sigma_px``, px, ≥ 0), reading only
    ``valid`` pixels (normalised convolution: the field's edge does not bleed in as dark).

    image, valid (bool), sigma_px : (rows, cols). Returns (rows, cols) float32, the image itself
    where σ is 0. Each pixel mixes the two blur levels (:data:`BLUR_LEVEL_STEP_PX` apart) that
    bracket its σ, weighted so that the mix has variance σ².
    """
    sigma = np.clip(np.asarray(sigma_px, np.float32), 0, None)
    if float(sigma.max()) <= 1e-3:
        return np.where(valid, image, 0).astype(np.float32)
    return _mix(_levels(image, valid, float(sigma.max())), valid, sigma)


def cross_blurred(frame_i: np.ndarray, frame_j: np.ndarray, mask: np.ndarray, offset_px,
                  edge_blur_px: float, radius: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Copies of two frames whose overlap (frame j at ``offset_px`` (x, y) from frame i) is blurred
    by each other's excess field blur, ``edge_blur_px``·ρ (:func:`field_radius`), at the same
    place on the sample.

    frame_i, frame_j : (rows, cols) float32 corrected frames; mask : their useful field of view.
    radius : ``field_radius(mask)`` if already at hand. Pixels outside the overlap are left as
    they are (the refinement reads none of them). An edge blur of 0 returns the frames themselves.
    """
    if edge_blur_px <= 0:
        return frame_i, frame_j
    radius = field_radius(mask) if radius is None else radius
    out = []
    for frame, shift in ((frame_i, np.asarray(offset_px, float)), (frame_j, -np.asarray(offset_px, float))):
        blurred = frame.copy()
        crop = _lens_crop(frame, mask, shift, edge_blur_px, radius)
        if crop is not None:
            box, levels, other = crop
            blurred[box] = _mix(levels, mask[box], edge_blur_px * other)
        out.append(blurred)
    return out[0], out[1]


def _lens_crop(frame: np.ndarray, mask: np.ndarray, shift, top_px: float, radius: np.ndarray):
    """(box, blur levels, the other frame's ρ) for ``frame``'s lens (:func:`_lens_box`); None where
    the two do not overlap."""
    lens = _lens_box(mask, shift, top_px, radius)
    if lens is None:
        return None
    box, other = lens
    return box, _levels(frame[box], mask[box], top_px), other


def _lens_box(mask: np.ndarray, shift, top_px: float, radius: np.ndarray):
    """(box, the other frame's ρ there) for a frame's lens with the other frame at ``shift`` (x, y)
    from it, grown by 3σ of the largest blur; None where they do not overlap. A pixel p of the
    frame shows the sample point the other frame has at p − shift."""
    h, w = mask.shape
    dx, dy = (int(round(v)) for v in shift)
    r0, r1, c0, c1 = max(0, dy), min(h, h + dy), max(0, dx), min(w, w + dx)
    if r1 <= r0 or c1 <= c0:
        return None
    lens = mask[r0:r1, c0:c1] & mask[r0 - dy: r1 - dy, c0 - dx: c1 - dx]
    if not lens.any():
        return None
    margin = int(math.ceil(_MARGIN_SIGMAS * top_px)) + 2
    lens_rows, lens_cols = np.nonzero(lens)
    top, bottom = max(0, r0 + lens_rows.min() - margin), min(h, r0 + lens_rows.max() + margin + 1)
    left, right = max(0, c0 + lens_cols.min() - margin), min(w, c0 + lens_cols.max() + margin + 1)
    box = (slice(top, bottom), slice(left, right))
    # the other frame's ρ at the same sample points (nearest pixel: it changes slowly);
    # beyond its field it shows nothing to match, so its rim's blur and no more
    other_rows = np.clip(np.arange(top, bottom) - dy, 0, h - 1)
    other_cols = np.clip(np.arange(left, right) - dx, 0, w - 1)
    return box, np.minimum(radius[np.ix_(other_rows, other_cols)], 1.0)


def overlap_mismatch(frame_i: np.ndarray, frame_j: np.ndarray, mask: np.ndarray, offset_px) -> float:
    """Share of frame i's variance over the overlap that frame j at ``offset_px`` (x, y; bicubic)
    leaves unexplained after a gain, an offset and a linear shading term: 0 for frames that
    agree, 1 for unrelated ones; NaN with too little overlap or no structure."""
    mismatch = _lens_mismatch_probe(frame_i, frame_j, offset_px, mask, BLUR_LEVEL_STEP_PX, field_radius(mask))
    return float("nan") if mismatch is None else mismatch(0.0)


def _unexplained(a: np.ndarray, b: np.ndarray, shading: np.ndarray) -> float:
    """Share of ``a``'s variance left after fitting it with gain·``b`` + offset + ``shading`` (N, 2)."""
    a = a.astype(np.float64)
    design = np.column_stack([b.astype(np.float64), np.ones_like(a), shading])
    coef, *_ = np.linalg.lstsq(design, a, rcond=None)
    residual = a - design @ coef
    total = float(np.sum(np.square(a - a.mean())))
    return float(residual @ residual) / total if total > 0 else float("nan")


class _LazyLevels:
    """:func:`_levels` of one crop, each blur level computed the first time a σ needs it."""

    def __init__(self, image: np.ndarray, valid: np.ndarray, top_px: float):
        self.x = np.where(valid, image, 0).astype(np.float32)
        self.m = np.asarray(valid, np.float32)
        self.stack = np.empty((max(1, int(math.ceil(top_px / BLUR_LEVEL_STEP_PX))) + 1, *self.x.shape), np.float32)
        self.stack[0] = self.x
        self.filled = 1

    def up_to(self, sigma_px: float) -> np.ndarray:
        """The levels as far as the one above ``sigma_px`` (at least two)."""
        count = min(len(self.stack), max(2, int(math.floor(sigma_px / BLUR_LEVEL_STEP_PX)) + 2))
        for k in range(self.filled, count):
            sigma = k * BLUR_LEVEL_STEP_PX
            self.stack[k] = _gaussian(self.x, sigma) / np.maximum(_gaussian(self.m, sigma), 1e-3)
        self.filled = max(self.filled, count)
        return self.stack[:count]


def _lens_mismatch_probe(frame_i: np.ndarray, frame_j: np.ndarray, offset_px, mask: np.ndarray, top_px: float,
                         radius: np.ndarray):
    """``mismatch(E)``: :func:`overlap_mismatch` of the two frames cross-blurred at edge blur E ≤
    ``top_px``, all on frame i's grid: frame j resampled there once (cubic spline) and both blurred
    there, each blur level computed once and only when an E needs it, instead of each frame on its
    own grid with j resampled at every E (the same figures, in half the time). None where the
    fields share under 32 px."""
    h, w = mask.shape
    tx, ty = (float(v) for v in offset_px)
    crop = _lens_box(mask, (tx, ty), top_px, radius)
    if crop is None:
        return None
    box, rho_j = crop
    rows = np.arange(box[0].start, box[0].stop, dtype=float)[:, None]
    cols = np.arange(box[1].start, box[1].stop, dtype=float)[None, :]
    jr, jc = np.broadcast_arrays(rows - ty, cols - tx)
    near_r, near_c = np.clip(np.rint(jr).astype(int), 0, h - 1), np.clip(np.rint(jc).astype(int), 0, w - 1)
    in_j = (jr > -0.5) & (jr < h - 0.5) & (jc > -0.5) & (jc < w - 0.5)
    valid_i, valid_j = mask[box], mask[near_r, near_c] & in_j
    samples = eroded_fov(mask)[box] & eroded_fov(mask)[near_r, near_c] & in_j
    if samples.sum() < 32:
        return None
    jr0, jc0 = max(0, int(jr.min()) - 3), max(0, int(jc.min()) - 3)
    part = frame_j[jr0: max(jr0, int(jr.max()) + 4), jc0: max(jc0, int(jc.max()) + 4)].astype(np.float64)
    j_here = ndimage.map_coordinates(part, [jr - jr0, jc - jc0], order=3, mode="nearest").astype(np.float32)
    levels_i, levels_j = _LazyLevels(frame_i[box], valid_i, top_px), _LazyLevels(j_here, valid_j, top_px)
    rho_i = np.minimum(radius[box], 1.0)
    shading = np.stack(np.broadcast_arrays(cols / w, rows / h), axis=-1)[samples]

    def mismatch(edge: float) -> float:
        if edge <= 0:
            return _unexplained(levels_i.x[samples], levels_j.x[samples], shading)
        return _unexplained(_mix(levels_i.up_to(edge), valid_i, edge * rho_j)[samples],
                            _mix(levels_j.up_to(edge), valid_j, edge * rho_i)[samples], shading)

    return mismatch


@dataclass(frozen=True)
class EdgeBlurEstimate:
    """What :func:`estimate_edge_blur` found.

    edge_blur_px : E to match the overlaps with (px); 0 when ``reason`` says why not.
    per_link_px : each judged overlap's own best E, NaN where it wanted more than the grid's
        largest (its two frames differ by more than a field blur: a layer one of them sees defocused).
    spread_px : interquartile range of the bracketed ``per_link_px``.
    reason : "" when the overlaps agree on one E; "unbounded" when most want more blur than any
        field blur explains; "inconsistent" when they disagree on how much; "no_overlaps".
    """

    edge_blur_px: float
    per_link_px: tuple[float, ...] = ()
    spread_px: float = float("nan")
    reason: str = ""


def _best_on_grid(edges: np.ndarray, values: np.ndarray) -> float:
    """Where a curve sampled at evenly spaced ``edges`` has its least: a parabola through the
    lowest sample and its neighbours; NaN when the lowest is the last (not bracketed)."""
    best = int(np.argmin(values))
    if best == len(edges) - 1:
        return float("nan")
    if best == 0:
        return float(edges[0])
    y0, y1, y2 = values[best - 1: best + 2]
    bend = y0 - 2 * y1 + y2
    step = float(edges[1] - edges[0])
    shift = (y0 - y2) / (2 * bend) if bend > 0 else 0.0
    return float(edges[best] + step * np.clip(shift, -0.5, 0.5))


def estimate_edge_blur(pairs, mask: np.ndarray, grid=EDGE_BLUR_GRID_PX, *, mapper=map) -> EdgeBlurEstimate:
    """The edge blur E (px) under which a scan's overlaps, cross-blurred, agree best.

    pairs : (frame_i, frame_j, offset_px) of the scan's sound links, offsets as placed. Each E
        is judged at those offsets: refined again under each E they move by tenths of a pixel,
        which changed the estimate by < 0.01 px on simulated scans, at 3–4× the cost.
    mapper : ``map``-like, to spread the pairs over cores (:func:`imaging.parallel.parallel_map`).

    Each overlap has its own best E on ``grid`` (:func:`overlap_mismatch` least, refined by a
    parabola); E is their median. Blurring more than the frames differ makes them differ
    again the other way, so the mismatch has its least near the true excess. The field blur
    is one property of the sphere, the same in every overlap: where the overlaps disagree
    about it by more than :data:`MAX_EDGE_BLUR_SPREAD_PX`, or most want more than the grid
    holds, their frames differ by something else (layers below the contact plane, defocused
    differently in each frame) and matching a field blur made such scans worse (simulated
    flat chips, seeds 1–2, matched regardless: 0.31 → 0.42 px mean error); they are left unmatched.
    """
    if not pairs:
        return EdgeBlurEstimate(0.0, reason="no_overlaps")
    radius = field_radius(mask)
    edges = np.asarray(grid, float)

    def best_edge(pair) -> float:
        mismatch = _lens_mismatch_probe(*pair, mask, float(edges.max()), radius)
        if mismatch is None:
            return None
        # up the grid only while the mismatch still falls: past its least, more blur only costs
        misses = [mismatch(edge) for edge in edges[:3]]
        while int(np.argmin(misses)) == len(misses) - 1 and len(misses) < len(edges):
            misses.append(mismatch(edges[len(misses)]))
        return _best_on_grid(edges[:len(misses)], np.array(misses)) if np.isfinite(misses).all() else None

    judged = [edge for edge in mapper(best_edge, pairs) if edge is not None]
    if not judged:
        return EdgeBlurEstimate(0.0, reason="no_overlaps")
    per_link = np.array(judged)
    bracketed = per_link[np.isfinite(per_link)]
    if len(bracketed) < MIN_BRACKETED_SHARE * len(per_link):
        return EdgeBlurEstimate(0.0, tuple(judged), reason="unbounded")
    spread = float(np.subtract(*np.percentile(bracketed, [75, 25])))
    if spread > MAX_EDGE_BLUR_SPREAD_PX:
        return EdgeBlurEstimate(0.0, tuple(judged), spread, reason="inconsistent")
    return EdgeBlurEstimate(float(np.median(bracketed)), tuple(judged), spread)
