"""Global frame positions from pairwise offsets: weighted least squares with outlier rejection.

Every accepted link (i, j) says ``position_j − position_i ≈ offset`` with a 2×2 weight (its
information matrix from the sub-pixel refinement, floored so no link claims better than
``floor_px``, and nothing along directions it barely measures: :data:`MIN_INFORMATION`). A weak
prior ties each frame to the stage model (an affine fit of measured to nominal offsets) or to a
given guess, which fixes the gauge and places frames, or directions, that no link pins.

Outliers are removed in two passes, so one bad pair never bends the mosaic:

1. *stage model*: links whose deviation from the fitted stage model is far outside the spread of
   all links (robust z > ``stage_z``, and > ``max_residual_px``) are dropped before solving;
2. *neighbours*: after each solve, the link that disagrees most with the positions its
   neighbours imply (largest residual, beyond ``max_residual_px`` and 3 σ of its own
   uncertainty) is dropped and the system solved again.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy import fft, ndimage, sparse
from scipy.sparse import csgraph
from scipy.sparse import linalg as sparse_linalg

from imaging.parallel import Forked

__all__ = ["Link", "Placement", "StageModel", "fit_stage_model", "solve_positions", "vote_offsets", "mrf_displacements",
           "peak_shoulder", "disagreement", "link_weight", "surface_z"]


@dataclass(frozen=True)
class Link:
    """One measured pair. Offsets are ``position_j − position_i`` in px, (x, y)."""

    i: int
    j: int
    nominal_offset_px: tuple[float, float]
    offset_px: tuple[float, float]
    score: float
    information: tuple = ((1.0, 0.0), (0.0, 1.0))
    reason: str = ""  # set when the measurement itself failed (no overlap, blank)
    alternatives: tuple = ()  # ((x, y, ncc), ...) other peaks of the search, see vote_offsets
    #: NCC at every integer offset ``surface_base + (dx, dy)`` of the search window (NaN: too
    #: little overlap), see :func:`mrf_displacements`; None when not measured.
    surface: np.ndarray | None = field(default=None, compare=False, repr=False)
    surface_base: tuple[int, int] = (0, 0)
    #: Pixels both useful fields of view share at the nominal offset (0: not known): how much
    #: evidence the NCC surface can carry, see :func:`_mrf_edges`.
    lens_px: int = 0


@dataclass(frozen=True)
class Placement:
    """positions_px : (N, 2) float (x, y); residual_px : (L,) |solved − measured| per link
    (NaN for links never used); dropped : {link index: reason}; placed_by_stage : frames with no
    accepted link; stage_matrix : 2×2 map from nominal to measured offsets; confidence : (N,)
    per frame, the joint inference's belief mass within 2 px of where it put the frame (see
    :func:`mrf_displacements`), None when the placement did not come from it; inferred_px : (N, 2)
    the whole-pixel places it inferred (the stage's plus its displacements), None likewise."""

    positions_px: np.ndarray
    residual_px: np.ndarray
    dropped: dict
    placed_by_stage: tuple
    stage_matrix: np.ndarray
    confidence: np.ndarray | None = None
    inferred_px: np.ndarray | None = None


def _fit_stage(links: list[Link], keep: list[int]) -> np.ndarray:
    """2×2 matrix A with offset ≈ A · nominal_offset (least squares; identity if degenerate)."""
    if len(keep) < 2:
        return np.eye(2)
    nominal = np.array([links[k].nominal_offset_px for k in keep])
    measured = np.array([links[k].offset_px for k in keep])
    if np.linalg.matrix_rank(nominal, tol=1e-6 * np.abs(nominal).max()) < 2:
        # One scan direction only (a single row): fit the scale along it, keep the rest.
        scale = float(np.sum(nominal * measured) / max(np.sum(nominal * nominal), 1e-12))
        return np.eye(2) * scale
    solution, *_ = np.linalg.lstsq(nominal, measured, rcond=None)
    return solution.T


@dataclass(frozen=True)
class StageModel:
    """offset ≈ matrix · nominal_offset, fitted by consensus.

    matrix : 2×2 map from nominal to true offsets (scale, rotation, shear of the stage).
    spread_px : (x, y) robust standard deviation (1.4826 × MAD) of all usable links about the
        model, px: the stage's repeatability as seen by pairs of frames.
    inliers : indices of the links that agree with the model within the tolerance.
    inlier_spread_px : (x, y) the same spread over the inliers only: the stage's repeatability
        if the other links matched aliases, a window too tight if the stage is merely imprecise
        (the caller tries both, see :meth:`imaging.stitching.IncrementalStitcher.finish`).
    """

    matrix: np.ndarray
    spread_px: tuple[float, float]
    inliers: tuple[int, ...]
    inlier_spread_px: tuple[float, float] = (0.0, 0.0)

    def predict(self, nominal_offset_px) -> np.ndarray:
        return self.matrix @ np.asarray(nominal_offset_px, float)


def fit_stage_model(links: list[Link], *, min_score: float = 0.6, tolerance_px: float = 3.0,
                    min_inliers: int = 3, max_distortion: float = 0.05) -> StageModel | None:
    """Consensus (exhaustive RANSAC over pairs of links) fit of the stage model.

    A least-squares fit cannot be trusted here: on periodic structures (gratings, dot arrays)
    half the links may lock onto an alias one period away, which drags a mean or even a median.
    Wrong links scatter by whole periods while right ones agree within the stage's repeatability,
    so the largest set of links that one 2×2 matrix explains within ``tolerance_px`` is taken.
    Only matrices within ``max_distortion`` of the identity (per entry: scale, rotation, shear
    of the stage against its calibration) are considered. Returns None when fewer than
    ``min_inliers`` usable links agree.
    """
    usable = [k for k, link in enumerate(links)
              if not link.reason and np.isfinite(link.score) and link.score >= min_score]
    if len(usable) < min_inliers:
        return None
    nominal = np.array([links[k].nominal_offset_px for k in usable], float)
    measured = np.array([links[k].offset_px for k in usable], float)
    best, best_err = None, np.inf
    samples = [(a, b) for a in range(len(usable)) for b in range(a + 1, len(usable))]
    for a, b in samples:
        pair = nominal[[a, b]]
        if abs(np.linalg.det(pair)) < 1e-6 * max(np.abs(pair).max() ** 2, 1e-12):
            continue
        matrix = np.linalg.solve(pair, measured[[a, b]]).T
        if np.abs(matrix - np.eye(2)).max() > max_distortion:
            continue  # aliases agree on stages no real one is (a step 8–17 % short)
        miss = np.hypot(*(measured - nominal @ matrix.T).T)
        inside = miss <= tolerance_px
        err = float(np.sum(np.minimum(miss, tolerance_px)))  # MSAC: fewest misses, then tightest
        if best is None or inside.sum() > best.sum() or (inside.sum() == best.sum() and err < best_err):
            best, best_err = inside, err
    if best is None:  # every link along one direction (a single row or column)
        scale = np.sum(nominal * measured, axis=1) / np.maximum(np.sum(nominal * nominal, axis=1), 1e-12)
        miss = np.array([[np.hypot(*(measured[m] - s * nominal[m])) for m in range(len(usable))] for s in scale])
        votes = (miss <= tolerance_px).sum(1)
        best = miss[int(np.argmax(votes))] <= tolerance_px
    if best.sum() < min_inliers:
        return None
    keep = [usable[m] for m in np.flatnonzero(best)]
    matrix = _fit_stage(links, keep)
    dev = measured - nominal @ matrix.T
    centre = np.median(dev[best], axis=0)
    # Spread over *all* usable links: a stage with large random errors (no link predicts
    # another) must get a wide window, not the tight one of a lucky consensus.
    spread = 1.4826 * np.median(np.abs(dev - centre), axis=0)
    tight = 1.4826 * np.median(np.abs(dev[best] - centre), axis=0)
    return StageModel(matrix, (float(spread[0]), float(spread[1])), tuple(keep), (float(tight[0]), float(tight[1])))


#: Information (px⁻²) below which a link is taken to say nothing along that direction (its
#: standard deviation there would exceed 1 px): a lens crossed only by parallel lines, or a
#: match so poor that the two frames share no gradients. A direction with next to no weight
#: could still decide a frame held by nothing else, and be neither trusted nor dropped.
MIN_INFORMATION = 1.0


def _measured_directions(link: Link) -> tuple[np.ndarray, np.ndarray]:
    """The link's information as (values, vectors): its eigenvalues, 0 along directions with less
    than :data:`MIN_INFORMATION` (all of them when it is not finite), and unit eigenvectors."""
    info = np.asarray(link.information, float)
    if not np.all(np.isfinite(info)):
        return np.zeros(2), np.eye(2)
    values, vectors = np.linalg.eigh(0.5 * (info + info.T))
    return np.where(values >= MIN_INFORMATION, values, 0.0), vectors


def link_weight(link: Link, floor_px: float = 0.05) -> np.ndarray:
    """The link's 2×2 weight: its covariance plus ``floor_px``² in every direction, inverted;
    zero along directions with less than :data:`MIN_INFORMATION`."""
    values, vectors = _measured_directions(link)
    return (vectors * (values / (1.0 + floor_px**2 * values))) @ vectors.T


def _pinning(link: Link) -> np.ndarray:
    """2×2 projector onto the directions the link pins, those :func:`link_weight` weighs (zero, the
    identity or a line)."""
    values, vectors = _measured_directions(link)
    kept = vectors[:, values > 0]
    return kept @ kept.T


#: How far (px) a link may miss along the directions it does not pin (parallel lines) before that
#: counts against it in the outlier test. Along lines its offset is where the refinement stopped,
#: from the joint inference's whole-pixel guess: up to 2.7 px from the truth on simulated flat
#: chips, where counting it dropped such links and their well-measured y (4×4 flat seed 3: 0.75
#: → 0.51 px mean error). Beyond a few pixels the placement has moved the lens off what the link
#: measured: two near-parallel lenses that disagree across their lines would otherwise meet
#: 70 px along them.
FREE_SLACK_PX = 4.0


def _miss(residual: np.ndarray, pinning: np.ndarray) -> np.ndarray:
    """What counts of a link's residual: all of it along the directions it pins; along the others
    only beyond :data:`FREE_SLACK_PX`."""
    across = pinning @ residual
    along = residual - across
    length = float(np.hypot(*along))
    return across + along * max(0.0, 1.0 - FREE_SLACK_PX / length) if length > 0 else across


def _solve(n, links, active, weights, prior_xy, prior_weight):
    rows, cols, vals = [], [], []
    rhs = np.zeros(2 * n)
    for k in active:
        link, w = links[k], weights[k]
        o = np.asarray(link.offset_px, float)
        # Block form of wᵀ(P_j − P_i − o) over the (x, y) pair of each frame.
        for a, sa in ((link.i, -1.0), (link.j, 1.0)):
            for b, sb in ((link.i, -1.0), (link.j, 1.0)):
                for p in range(2):
                    for q in range(2):
                        rows.append(2 * a + p)
                        cols.append(2 * b + q)
                        vals.append(sa * sb * w[p, q])
            rhs[2 * a: 2 * a + 2] += sa * (w @ o)
    idx = np.arange(2 * n)
    rows.extend(idx)
    cols.extend(idx)
    vals.extend(np.full(2 * n, prior_weight))
    rhs += prior_weight * prior_xy.ravel()
    normal = sparse.csr_matrix((vals, (rows, cols)), shape=(2 * n, 2 * n))
    return sparse_linalg.spsolve(normal.tocsc(), rhs).reshape(n, 2)


def solve_positions(
    nominal_xy_px: np.ndarray,
    links: list[Link],
    *,
    min_score: float = 0.6,
    max_residual_px: float = 1.0,
    stage_z: float = 6.0,
    floor_px: float = 0.05,
    prior_weight: float = 1e-4,
    prior_xy_px: np.ndarray | None = None,
) -> Placement:
    """Global positions of N frames from their links.

    nominal_xy_px : (N, 2) float, (x, y) stage positions converted to px.
    links : measured pairs; ``score`` is the NCC of the overlap.
    min_score : links with a lower NCC are dropped as ``"low_score"``.
    max_residual_px : a link is only ever called an outlier if it misses by more than this, along
        the directions it pins (see :data:`MIN_INFORMATION`, :data:`FREE_SLACK_PX`).
    stage_z : robust z-score beyond which a link contradicts the stage model.
    floor_px : minimum standard deviation assumed for any link (model and interpolation error).
    prior_weight : weight (px⁻²) of the pull of each frame towards the stage model.
    prior_xy_px : (N, 2) where that pull goes instead of the stage model's prediction (e.g. the
        joint inference's placement). It decides a frame along any direction no kept link
        pins, e.g. one held only by lenses of parallel lines.
    """
    nominal_xy_px = np.asarray(nominal_xy_px, float)
    n = len(nominal_xy_px)
    dropped: dict[int, str] = {}
    for k, link in enumerate(links):
        if not (0 <= link.i < n and 0 <= link.j < n) or link.i == link.j:
            raise ValueError(f"link {k} joins frames {link.i} and {link.j}; frames are 0..{n - 1}")
        if link.reason:
            dropped[k] = link.reason
        elif not np.isfinite(link.score) or link.score < min_score:
            dropped[k] = "low_score"
    active = [k for k in range(len(links)) if k not in dropped]

    # Pass 1: the stage model. Deviations from it are the stage errors, whose spread the links
    # themselves tell; a link far outside that spread matched the wrong structure.
    stage = _fit_stage(links, active)
    if len(active) >= 4:
        dev = np.array([np.asarray(links[k].offset_px) - stage @ links[k].nominal_offset_px for k in active])
        centre = np.median(dev, axis=0)
        spread = 1.4826 * np.median(np.abs(dev - centre), axis=0) + 0.5
        z = np.max(np.abs(dev - centre) / spread, axis=1)
        far = np.hypot(*(dev - centre).T) > max_residual_px
        for k, bad in zip(list(active), (z > stage_z) & far, strict=False):
            if bad:
                dropped[k] = "stage_model"
        active = [k for k in active if k not in dropped]
        stage = _fit_stage(links, active)

    weights = {k: link_weight(links[k], floor_px) for k in range(len(links))}
    prior = nominal_xy_px @ stage.T if prior_xy_px is None else np.asarray(prior_xy_px, float)
    positions = _solve(n, links, active, weights, prior, prior_weight)
    # Pass 2: neighbours. Drop the worst-fitting link while any is clearly inconsistent: missing
    # by more than max_residual_px and 3 σ, along the directions it pins (:func:`_miss`). Only
    # such links compete, so one that weighs nothing, however far off, hides no outlier.
    pinned = {k: _pinning(links[k]) for k in active}
    while active:
        res = {k: _miss(positions[links[k].j] - positions[links[k].i] - np.asarray(links[k].offset_px), pinned[k])
               for k in active}
        clear = [k for k in active if np.hypot(*res[k]) > max_residual_px and res[k] @ weights[k] @ res[k] > 9.0]
        if not clear:
            break
        worst = max(clear, key=lambda k: np.hypot(*res[k]))
        dropped[worst] = "inconsistent"
        active.remove(worst)
        positions = _solve(n, links, active, weights, prior, prior_weight)

    residual = np.full(len(links), np.nan)
    for k, link in enumerate(links):
        if link.reason == "":
            residual[k] = np.hypot(*(positions[link.j] - positions[link.i] - np.asarray(link.offset_px)))
    linked = {links[k].i for k in active} | {links[k].j for k in active}
    placed_by_stage = tuple(int(f) for f in range(n) if f not in linked) if n > 1 else ()
    return Placement(positions, residual, dropped, placed_by_stage, stage)


#: NCC by which an alias may fall short of a link's best peak and still be a candidate: the true
#: offset scored up to 0.012 below an alias on simulated SSUM chips (gratings, dot arrays).
TIE_NCC = 0.03


def _hypotheses(links, members, rel, a, b, ks, tolerance_px, min_score, stage):
    """Best translation of group ``b`` relative to group ``a`` from the links ``ks`` joining them.

    Each candidate peak of each link proposes a translation. A translation is scored by a
    log-likelihood-like sum over the links that agree with it (within ``tolerance_px``): +1 per
    link, plus how distinct its peak is (NCC minus that of its best peak elsewhere, in units of
    :data:`TIE_NCC`, clipped to [−1, 3]: ~0 for an alias on a periodic pattern, large for a
    unique match), minus the stage's verdict log(1 + ½ (d / σ)²) beyond that of the link's
    peak nearest the nominal offset; d a peak's deviation from the nominal offset (less the
    typical one) and σ the stage's spread (``stage`` = (centre, σ)), at most 1. Heavy-tailed,
    relative and capped because σ is estimated from a few links and real stage errors reach
    3σ: the stage may make an agreeing link count for nothing, never against a translation
    (two links agreeing around a loop are strong evidence; one alias near nominal is not).
    Returns (score, translation (2,), {link: chosen offset (2,)}).
    """
    centre, sigma = stage
    proposals = []  # (link, translation, offset, gain)
    for k in ks:
        link = links[k]
        cands = _candidates_of(link, min_score)
        devs = [offset - np.asarray(link.nominal_offset_px) - centre for offset, _ in cands]
        verdict = [float(np.log1p(0.5 * float(d @ d) / sigma**2)) for d in devs]
        for (offset, score), stage_cost in zip(cands, verdict, strict=True):
            others = [s for o, s in cands if np.hypot(*(o - offset)) > tolerance_px]
            distinct = (score - max(others)) / TIE_NCC if others else 3.0
            gain = 1.0 + float(np.clip(distinct, -1.0, 3.0)) - min(stage_cost - min(verdict), 1.0)
            if link.i in members[a]:
                t = rel[link.i] + offset - rel[link.j]
            else:
                t = rel[link.j] - offset - rel[link.i]
            proposals.append((k, t, offset, gain))
    best = None
    for _, t, _, _ in proposals:
        chosen = {}
        for k, t2, offset, gain in proposals:
            if np.hypot(*(t2 - t)) <= tolerance_px and (k not in chosen or gain > chosen[k][1]):
                chosen[k] = (offset, gain)
        total = sum(g for _, g in chosen.values())
        if best is None or total > best[0]:
            best = (total, t, {k: o for k, (o, _) in chosen.items()})
    return best


def _stage_spread(links: list[Link], usable: list[int], min_score: float) -> tuple[np.ndarray, float]:
    """(centre (2,), σ) of the deviations from nominal of the links with one unambiguous peak
    (σ their RMS per axis, pooled):
    the stage's own errors as the images measure them (σ ≥ 1 px). Fewer than 3 such links:
    σ = 5 % of the typical link (the default search assumes stage errors ≤ 10 % of the step)."""
    devs = [np.asarray(links[k].offset_px) - links[k].nominal_offset_px for k in usable
            if len(_candidates_of(links[k], min_score)) == 1]
    if len(devs) < 3:
        length = np.median([np.hypot(*links[k].nominal_offset_px) for k in usable]) if usable else 1.0
        return np.zeros(2), max(0.05 * float(length), 1.0)
    devs = np.array(devs)
    centre = np.median(devs, axis=0)
    # RMS, not a robust spread: these links are trustworthy, and a MAD over a handful of them
    # read 5 px where the stage erred by 21 px on a neighbour pair (then the true peak lost).
    return centre, max(float(np.sqrt(np.mean((devs - centre) ** 2))), 1.0)


def _candidates_of(link: Link, min_score: float) -> list[tuple[np.ndarray, float]]:
    """The link's peaks that tie with its best one, as (offset (2,), ncc): its ``alternatives``
    (or the measured offset alone for a link measured without them) scoring ≥ ``min_score`` and
    within :data:`TIE_NCC` (more for weak matches, whose NCC is noisier) of the best. A peak
    clearly below the best is a partial match, not an alias; keeping it would let unrelated
    peaks of different links agree by chance."""
    peaks = link.alternatives or ((*link.offset_px, link.score),)
    best = max(score for *_, score in peaks)
    floor = max(min_score, best - TIE_NCC - 0.25 * (1.0 - best))
    return [(np.array([x, y], float), float(score)) for x, y, score in peaks if score >= floor]


def vote_offsets(n: int, links: list[Link], *, min_score: float = 0.6,
                 tolerance_px: float = 3.0) -> tuple[dict[int, np.ndarray], np.ndarray, np.ndarray]:
    """Choose each link's offset among its candidate peaks by agreement with the other links.

    On periodic structures one pair of frames cannot tell the true offset from an alias one
    period away (their NCCs differ by < 0.01 on simulated SSUM chips), and with stage errors
    of 10 % of the step the stage cannot either; but the aliases of different pairs disagree
    around a loop of frames while the true offsets agree. Frames are merged into rigid groups
    greedily (Kruskal-like): at each step the two groups and the translation between them that
    the most links support are merged, ties going to the most distinct peaks (a unique match
    before an alias).

    n : number of frames; links : measured pairs with their ``alternatives``.
    Returns ``(chosen, positions, group)``: chosen maps link index → offset (2,) px picked
    among its peaks, for links that agree with their group (others are absent);
    positions (N, 2) px of each frame within its group; group (N,) int group label.
    """
    usable = [k for k, link in enumerate(links) if not link.reason and _candidates_of(link, min_score)]
    stage = _stage_spread(links, usable, min_score)
    group = np.arange(n)
    members = {f: {f} for f in range(n)}
    rel = np.zeros((n, 2))
    chosen: dict[int, np.ndarray] = {}
    cache: dict[tuple[int, int], tuple] = {}
    while True:
        between: dict[tuple[int, int], list[int]] = {}
        for k in usable:
            a, b = group[links[k].i], group[links[k].j]
            if a != b:
                between.setdefault((min(a, b), max(a, b)), []).append(k)
        if not between:
            break
        best = None
        for (a, b), ks in between.items():
            key = (a, b, tuple(ks))
            if key not in cache:
                cache[key] = _hypotheses(links, members, rel, a, b, ks, tolerance_px, min_score, stage)
            hyp = cache[key]
            if best is None or hyp[0] > best[1][0]:
                best = ((a, b), hyp)
        (a, b), (_, t, picked) = best
        for f in members[b]:
            rel[f] += t
            group[f] = a
        members[a] |= members.pop(b)
        chosen.update(picked)
        cache = {key: hyp for key, hyp in cache.items() if not ({key[0], key[1]} & {a, b})}
    # Links inside a group that no merge used: the peak nearest the group's prediction.
    for k in usable:
        if k in chosen or group[links[k].i] != group[links[k].j]:
            continue
        predicted = rel[links[k].j] - rel[links[k].i]
        near = [(np.hypot(*(o - predicted)), o) for o, s in _candidates_of(links[k], min_score)]
        miss, offset = min(near, key=lambda m: m[0])
        if miss <= tolerance_px:
            chosen[k] = offset
    return chosen, rel, group


def surface_z(link: Link, *, blank: float | None = None) -> np.ndarray:
    """A link's NCC surface as Fisher z (float64): a drop from 0.98 to 0.95 is as telling as one from
    0.6 to 0.0. ``blank``: the NCC taken where the surface has none (too little overlap), else NaN stays."""
    surface = np.asarray(link.surface, float)
    if blank is not None:
        surface = np.nan_to_num(surface, nan=blank)
    return np.arctanh(np.clip(surface, -0.995, 0.995))


def _link_potential(link: Link, reach: int, sharpness: float, floor: float, tolerant: bool) -> np.ndarray | None:
    """ψ(δ) over δ = d_j − d_i ∈ [−reach, reach]², (2·reach + 1)² float64: how well the link's
    NCC surface supports frame j sitting δ px from where the stage puts it relative to frame i.
    ``floor`` + exp(sharpness · (z − best z)), z the Fisher z of the NCC: 1 at the link's best
    peak, decaying as the match worsens, never below ``floor`` (a link whose true offset scores
    low, defocused layers or a blank overlap, must weaken, not veto, the configuration the other
    links agree on). ``tolerant``: every state within a pixel of a peak keeps at least half of
    the peak's support."""
    if link.reason not in ("", "unrefined") or link.surface is None:
        return None
    # Fisher z of the NCC: a sharp, unique match pins its frames harder than a weak one does.
    surface = surface_z(link)
    if not np.isfinite(surface).any():
        return None
    ry, rx = (surface.shape[0] - 1) // 2, (surface.shape[1] - 1) // 2
    best = float(np.nanmax(surface))
    psi = np.full((2 * reach + 1, 2 * reach + 1), floor)
    # Surface index (ry + dy, rx + dx) is offset surface_base + (dx, dy) ≈ nominal + δ (the
    # sub-pixel part of the nominal offset is below the state grid's resolution).
    lift = np.where(np.isfinite(surface), np.exp(sharpness * (np.nan_to_num(surface, nan=-3.0) - best)), 0.0)
    if tolerant:
        lift = np.maximum(lift, 0.5 * ndimage.maximum_filter(lift, size=3, mode="nearest"))
    sx = int(round(link.surface_base[0] - link.nominal_offset_px[0]))
    sy = int(round(link.surface_base[1] - link.nominal_offset_px[1]))
    # δ index = reach + (offset − nominal) = reach + s + (surface index − r)
    y0, x0 = reach + sy - ry, reach + sx - rx
    ys, xs = max(0, y0), max(0, x0)
    ye, xe = min(psi.shape[0], y0 + surface.shape[0]), min(psi.shape[1], x0 + surface.shape[1])
    if ye > ys and xe > xs:
        psi[ys:ye, xs:xe] += lift[ys - y0: ye - y0, xs - x0: xe - x0]
    return psi


def peak_shoulder(link: Link, sharpness: float = 5.0) -> float | None:
    """How much of its support a link's potential (:func:`_link_potential`) keeps one pixel beside
    its best peak (the higher of the four neighbours, 0–1): ~1 for a peak many pixels wide, well
    below for one a pixel wide. None for a link without an NCC surface."""
    if link.reason not in ("", "unrefined") or link.surface is None:
        return None
    z = surface_z(link, blank=-1.0)
    r, c = np.unravel_index(int(np.argmax(z)), z.shape)
    beside = [z[r + a, c + b] for a, b in ((0, 1), (0, -1), (1, 0), (-1, 0))
              if 0 <= r + a < z.shape[0] and 0 <= c + b < z.shape[1]]
    return float(np.exp(sharpness * (max(beside) - z[r, c]))) if beside else None


#: A belief's states outside the few about its mode may be left out of a message where they hold
#: less than this share of its mass: normalised, the message then moves by < 1e-6 / (1e-3 · side²)
#: (the floor's share), 5e-8 on 512 px frames' 145² states, where 1e-4 is convergence.
MESSAGE_NEGLIGIBLE_MASS = 1e-6
#: ... the DIRECT_MESSAGE_SPAN² states about the mode, whose message is a small direct convolution
#: instead of FFTs (512 px frames' links: 0.04–0.11 ms up to 8×8 states, 0.27 ms from 11×11,
#: where OpenCV turns to a DFT of its own; the transforms take 0.31 ms).
DIRECT_MESSAGE_SPAN = 8


class _MessageKernel:
    """One direction of a link's message, m(a) = Σ_b h(b) · lift(a − b + 2r) over states a, b ∈ [0, side),
    side = 2r + 1, of ψ minus its constant floor, whose share (floor · Σh) comes in as ``base``.

    Only the lift's bounding box (the link's NCC surface, ~0.4 of the step wide) is transformed,
    at the shortest length whose circular wrap-around misses the side outputs kept: ~3/4 of the
    whole ψ's 4r + 1 per axis (225 instead of 300 points on 512 px frames). Single precision
    loses nothing: its round-off (1e-7 of Σh) is far below the floor's share added in float64.

    Once the links agree, a belief holds its mass on a handful of neighbouring states (a 10×10
    scan of 512 px frames: a median of 15 of 21 025 after ten sweeps); its message is then the
    lift's box convolved directly with that few-state crop, in a fifth of the transforms' time.
    """

    def __init__(self, lift: np.ndarray, side: int):
        rows, cols = np.flatnonzero(lift.any(axis=1)), np.flatnonzero(lift.any(axis=0))
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        kernel = lift[r0:r1, c0:c1].astype(np.float32)
        # linear-convolution index u = a + 2r − (box start); the side outputs kept are u ∈ [w0, w0 + side)
        self.side, self.axes = side, []
        for start, k in ((r0, r1 - r0), (c0, c1 - c0)):
            w0, full = (side - 1) - int(start), side + k - 1
            lo, hi = max(w0, 0), min(w0 + side, full)
            length = fft.next_fast_len(max(full - lo, hi), real=True)
            self.axes.append((w0, lo, hi, length))
        self.shape = (self.axes[0][3], self.axes[1][3])
        self.spectrum = fft.rfft2(kernel, self.shape)
        self.kernel, self.box_start = kernel, (int(r0), int(c0))

    def apply(self, b: np.ndarray, base: float) -> np.ndarray:
        """The message from belief ``b`` (side², float64), ``base`` (the floor's share) added."""
        # the few states about the mode, where they hold all but a negligible share of the mass
        r, c = divmod(int(np.argmax(b)), self.side)
        half = DIRECT_MESSAGE_SPAN // 2
        box = (max(r - half + 1, 0), min(r + half + 1, self.side), max(c - half + 1, 0), min(c + half + 1, self.side))
        if b[box[0]:box[1], box[2]:box[3]].sum() >= (1.0 - MESSAGE_NEGLIGIBLE_MASS) * b.sum():
            return self._convolved(b, box, base)
        full = fft.irfft2(self.spectrum * fft.rfft2(b.astype(np.float32), self.shape), self.shape)
        (w0r, lor, hir, _), (w0c, loc, hic, _) = self.axes
        out = np.full((self.side, self.side), base)  # the box of ψ always reaches some kept outputs
        out[lor - w0r: hir - w0r, loc - w0c: hic - w0c] += full[lor:hir, loc:hic]
        return out

    def peak(self) -> np.ndarray:
        """(x, y) δ where ψ is highest."""
        r, c = np.unravel_index(int(np.argmax(self.kernel)), self.kernel.shape)
        return np.array([c + self.box_start[1], r + self.box_start[0]]) - (self.side - 1)

    def lift_at(self, index) -> float:
        """ψ − floor at ψ's (x, y) ``index`` (δ + 2r)."""
        r, c = int(index[1]) - self.box_start[0], int(index[0]) - self.box_start[1]
        inside = 0 <= r < self.kernel.shape[0] and 0 <= c < self.kernel.shape[1]
        return float(self.kernel[r, c]) if inside else 0.0

    def _convolved(self, b: np.ndarray, box: tuple[int, int, int, int], base: float) -> np.ndarray:
        """The message from the part of ``b`` inside ``box`` = (row0, row1, col0, col1) of states
        only: the full linear convolution of the lift's box with that small crop of ``b``."""
        side = self.side
        br, bc = box[0], box[2]
        crop = b[box[0]:box[1], box[2]:box[3]].astype(np.float32)
        padded = cv2.copyMakeBorder(self.kernel, 0, crop.shape[0] - 1, 0, crop.shape[1] - 1, cv2.BORDER_CONSTANT)
        full = cv2.filter2D(padded, -1, cv2.flip(crop, -1), anchor=(crop.shape[1] - 1, crop.shape[0] - 1),
                            borderType=cv2.BORDER_CONSTANT)
        # full[p] = Σ_u crop(u) · box(p − u) is the message at a = p + b0 + box start − (side − 1)
        ar, ac = br + self.box_start[0] - (side - 1), bc + self.box_start[1] - (side - 1)
        r0, r1 = max(ar, 0), min(ar + full.shape[0], side)
        c0, c1 = max(ac, 0), min(ac + full.shape[1], side)
        out = np.full((side, side), base)
        if r1 > r0 and c1 > c0:
            out[r0:r1, c0:c1] += full[r0 - ar: r1 - ar, c0 - ac: c1 - ac]
        return out


#: Below this many frames the order messages go in is not what keeps them from settling (on a
#: 3×3 scan every frame is two links from every other), and on 3×3 simulator scans passing them
#: back and forth as well moved placements more often for the worse (seeds 1–6: two worse,
#: 0.26 → 0.34 and 1.07 → 1.92 px; one better, 0.68 → 0.56 px) at 1.5× the time; of the 4×4 ones it changed three for the
#: better (1.24 → 1.12, 7.06 → 6.24, 8.13 → 4.55 px) and two for the worse (1.54 → 2.06, 9.07 → 9.12 px).
BACK_AND_FORTH_MIN_FRAMES = 16

#: Sweeps of the joint inference. On simulator scans it had not converged after 20 (messages
#: still moving by 1e-3): over 25 scans of flat, default and Z-stacked chips (seeds 1–8), 50
#: took 3×3 flat seed 2 from 3.6 to 0.68 px mean and seed 5 from 7.4 to 0.28 px, improved
#: five more a little and worsened one (4×4 flat seed 2, 0.76 → 1.13 px).
MRF_ITERATIONS = 50
#: Strict sweeps that reach the cap with no mode moved over the last this many have settled for the
#: back-and-forth rule: only the messages are still converging about the modes (a 10×10 scan of 512 px
#: frames: modes still from sweep 28, messages 1.3e-4 at 50; the second run took as long again, for
#: the same placement). Stopping there instead of at the cap moved simulator placements either way.
#: Modes steady only to within a pixel are not settled: on 8×8 simulator scans they wobble by a pixel
#: from sweep ~6 on while the messages cycle (5e-3–2e-2 to sweep 50, at damping 0.25 as at 0.5) and a
#: block of frames drifts a pixel every few sweeps. Stopped once every mode stayed within a pixel for
#: this many sweeps, 8×8 planar seed 1 stopped at sweep 15 with its halves 3 px apart (2.76 px mean
#: error, 0.14 at the cap); judged so at the cap, 6×6 flat seed 1 would have lost its back-and-forth
#: run (log-probability −49.9 against the links' order's −55.9).
STEADY_SWEEPS = 10
#: Link potentials (:func:`_link_potential`): exp(sharpness · Δz) above a floor.
MRF_SHARPNESS, MRF_FLOOR = 5.0, 1e-3
#: With every peak a pixel wider the modes only wobble within that pixel after 20 sweeps:
#: 50 gave the same positions on the synthetic 512 px scans at 1.6× the time.
MRF_TOLERANT_ITERATIONS = 20
#: ... and they settle well before: a tolerant run stops once no frame's mode has moved by more
#: than a pixel for this many sweeps (synthetic 4×5 and 6×6 of 512 px: 20 → 7 and 6 sweeps, the same
#: positions up to a common 0.25 px translation).
TOLERANT_STEADY_SWEEPS = 3


def mrf_displacements(
    n: int,
    links: list[Link],
    *,
    radius_px: int,
    sigma_px: float,
    sharpness: float = MRF_SHARPNESS,
    floor: float = MRF_FLOOR,
    iterations: int | None = None,
    tolerant: bool = False,
    held: dict[int, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each frame's displacement from its stage position, inferred jointly from every link's
    whole NCC surface (loopy belief propagation, sum-product, on a Markov random field).

    Why: with stage errors of 10 % of the step, aliases of periodic patterns (15–45 px periods)
    and peaks of defocused layers lie inside every link's window, and a link's true offset is
    often not its best peak; a single pair cannot tell. Jointly, only the true displacements make
    the links agree around loops of frames, and the stage prior breaks what loops leave open.

    States: integer displacements d ∈ [−radius_px, radius_px]² of each frame from its nominal
    position. Unary: the stage, a Gaussian of σ = ``sigma_px`` per axis. Pairwise, per link:
    :func:`_link_potential` at d_j − d_i. Messages are 2-D convolutions (FFT, or direct where a
    belief has settled on a few states: :class:`_MessageKernel`), passed in the links' order each
    sweep, and, where that does not settle, back and forth too (see the comment at the end).
    Blocks of frames that a tolerant run settled apart are then moved together where that is
    more probable (:func:`_joined_blocks`).

    ``tolerant`` widens every link's peaks by a pixel (see :func:`_link_potential`). States are
    whole pixels while true offsets are not, so around a loop of four frames one link's
    one-pixel-wide peak can miss the others' by a pixel; when the peaks are that narrow
    (flat-field-corrected frames, NCC ≥ 0.98) every product of messages is then ~0 and the
    beliefs fall back to the stage prior. Callers retry with it when confidence is low.

    ``iterations`` caps the sweeps (default: :data:`MRF_ITERATIONS`, or
    :data:`MRF_TOLERANT_ITERATIONS` when ``tolerant``); they stop earlier once no message moves
    by 1e-4, or, when ``tolerant``, once the modes are steady (:data:`TOLERANT_STEADY_SWEEPS`).

    ``held``: frames held at given (x, y) displacements (the live mosaic's settled ones far from its
    new frames): their links only weigh on their other frames, as fixed terms, so the sweeps cost
    what the frames left free cost; they come back as given, with confidence 1.

    Returns ``(displacement (N, 2) int, confidence (N,))``: the mode of each frame's marginal
    and the marginal's mass within 2 px of it (low: the links leave the frame ambiguous).
    """
    held = held or {}
    if iterations is None:
        iterations = MRF_TOLERANT_ITERATIONS if tolerant else MRF_ITERATIONS
    side = 2 * radius_px + 1
    grid = np.arange(-radius_px, radius_px + 1, dtype=float)
    prior = np.exp(-0.5 * (grid[:, None] ** 2 + grid[None, :] ** 2) / sigma_px**2)
    prior /= prior.sum()
    # a link between two held frames weighs on nothing free (nor on the placement's probability but by a constant)
    scored = _mrf_edges([link for link in links if not (link.i in held and link.j in held)], radius_px=radius_px,
                        sharpness=sharpness, floor=floor, tolerant=tolerant)
    priors = {f: prior for f in range(n)}  # a free frame's own term: the stage, times its held neighbours' messages
    edges = []
    for edge in scored:
        i, j, kernel, flipped_kernel = edge
        if i in held or j in held:
            fixed, free, towards = (i, j, kernel) if i in held else (j, i, flipped_kernel)
            message = towards.apply(_one_state(held[fixed], radius_px), floor)
            priors[free] = priors[free] * message / message.sum()
        else:
            edges.append(edge)
    incoming: dict[int, list[tuple[int, int]]] = {f: [] for f in range(n)}
    for e, (i, j, _, _) in enumerate(edges):
        incoming[j].append((e, 0))
        incoming[i].append((e, 1))

    def propagate(back_and_forth: bool, start: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, float, bool]:
        """Sweeps over the links in their order, or in it and back by turns; the modes, their
        confidence, the log-probability of the modes under the model and whether it settled.
        ``start``: (N, 2) displacements the messages begin from (each link's message as if its
        frame sat there) instead of uniform ones."""
        uniform = np.full((side, side), 1.0 / side**2)
        # messages[(e, direction)] : to frame j (direction 0) or to frame i (direction 1)
        messages = {(e, d): uniform.copy() for e in range(len(edges)) for d in (0, 1)}
        if start is not None:
            for e, (i, j, kernel, flipped_kernel) in enumerate(edges):
                for key, k, f in (((e, 0), kernel, i), ((e, 1), flipped_kernel, j)):
                    message = k.apply(_one_state(start[f], radius_px), floor)
                    messages[key] = message / message.sum()

        def belief(f, skip=None):
            # normalised once: every message sums to 1 over ≤ (2·radius + 1)² states, so a product
            # of even ten of them stays far above float64's underflow where the mass is
            b = priors[f].copy()
            for key in incoming[f]:
                if key != skip:
                    b *= messages[key]
            return b / b.sum()

        modes, steady, settled = None, 0, False
        for sweep in range(iterations):
            change = 0.0
            order = enumerate(edges) if not (back_and_forth and sweep % 2) else reversed(list(enumerate(edges)))
            for e, (i, j, kernel, flipped_kernel) in order:
                # m_{i→j}(d_j) = Σ_{d_i} h_i(d_i) ψ(d_j − d_i);  m_{j→i}(d_i) = Σ_{d_j} h_j(d_j) ψ(d_j − d_i)
                # (beliefs sum to 1, so the floor's share is the floor itself: every message ≥ floor)
                to_j = kernel.apply(belief(i, skip=(e, 1)), floor)
                to_i = flipped_kernel.apply(belief(j, skip=(e, 0)), floor)
                for key, new in (((e, 0), to_j), ((e, 1), to_i)):
                    new /= new.sum()
                    new -= messages[key]
                    change = max(change, float(np.abs(new).max()))
                    messages[key] += 0.5 * new  # damped: loops of four frames oscillate otherwise
            if change < 1e-4:
                settled = True
                break
            # Widened peaks (tolerant) are plateaus a pixel wide, on which the modes keep wobbling
            # long after every frame has settled on its peak: stop once none has moved by more than
            # a pixel for TOLERANT_STEADY_SWEEPS sweeps (the links are refined from there).
            if not tolerant and sweep < iterations - STEADY_SWEEPS - 1:
                continue  # strict modes are only looked at over the last sweeps (below)
            now = np.array([np.unravel_index(int(np.argmax(belief(f))), (side, side)) for f in range(n)])
            steady = steady + 1 if modes is not None and np.abs(now - modes).max() <= int(tolerant) else 0
            modes = now
            if tolerant and steady >= TOLERANT_STEADY_SWEEPS:
                settled = True
                break
        # strict peaks whose modes have not moved for STEADY_SWEEPS: only the messages are still converging
        settled = settled or steady >= STEADY_SWEEPS
        displacement = np.zeros((n, 2), int)
        confidence = np.zeros(n)
        for f in range(n):
            b = belief(f)
            r, c = np.unravel_index(int(np.argmax(b)), b.shape)
            displacement[f] = (c - radius_px, r - radius_px)
            confidence[f] = float(b[max(0, r - 2): r + 3, max(0, c - 2): c + 3].sum())
        for f, d in held.items():
            displacement[f], confidence[f] = d, 1.0
        log_p = _log_probability(displacement, scored, sigma_px=sigma_px, radius_px=radius_px, floor=floor)
        return displacement, confidence, log_p, settled

    # In the links' order, what the first frames' links say reaches the last frames within a
    # sweep but comes back one link a sweep. A 15×15 scan of 512 px frames had not settled after
    # 50 sweeps, its frames 16 px off; back and forth by turns it settled in 31, on the truth
    # (0.016 px). Where the links' order has not settled on a scan of BACK_AND_FORTH_MIN_FRAMES
    # or more, both run and the placement the model finds more probable is kept. Neither can be
    # skipped: on 5×5–8×8 simulator scans whose links' order had not settled, each was the more
    # probable about as often (13 and 12 of 25), the two 3–28 px apart on 6 of them.
    # The back-and-forth run begins at once on another core, and is dropped if the links' order settles.
    ahead = Forked(functools.partial(propagate, True)) if n >= BACK_AND_FORTH_MIN_FRAMES else None
    began = time.perf_counter()
    try:
        displacement, confidence, log_p, settled = propagate(False)
        if ahead is not None and not settled:
            # it sweeps no more than this run did: given as long again, it is stuck or starved
            other = ahead.result(timeout_s=1.0 + time.perf_counter() - began) or propagate(True)
            if other[2] > log_p:
                displacement, confidence, log_p = other[:3]
    finally:
        if ahead is not None:
            ahead.cancel()
    # Blocks of frames the links hold together can each settle on their own, one of them off by a
    # few pixels, with every link between them off its peak (15×15 scans: of 256 px frames, two
    # halves 6 px apart; of 512 px, 28 px; each link across the seam measured right). Sweeps cannot
    # mend it, each block's own links outvote the seam; moving whole blocks can. Only in a tolerant
    # run, whose links sit on their (widened) peaks where they agree: on simulator scans, whose
    # links often peak best on an alias, the strict runs' moves went to more probable placements
    # further from the truth (two of three). And only where most beliefs have settled.
    joined = (_joined_blocks(displacement, edges, sigma_px=sigma_px, radius_px=radius_px, floor=floor)
              if tolerant and not held and np.median(confidence) >= SETTLED_CONFIDENCE else None)
    if joined is not None:
        # sweeps again from there, for beliefs (and confidences) about the joined placement
        other = propagate(False, start=joined)
        if other[2] >= _log_probability(joined, edges, sigma_px=sigma_px, radius_px=radius_px, floor=floor):
            displacement, confidence = other[:2]
        else:  # the sweeps wandered off: the joined placement stands, its moved frames unconfirmed
            confidence = np.where((joined != displacement).any(axis=1), 0.0, confidence)
            displacement = joined
    return displacement, confidence


def _one_state(displacement, radius_px: int) -> np.ndarray:
    """A belief wholly on one (x, y) displacement (clipped to the states)."""
    side = 2 * radius_px + 1
    b = np.zeros((side, side))
    x, y = (int(np.clip(v + radius_px, 0, side - 1)) for v in displacement)
    b[y, x] = 1.0
    return b


#: Blocks are joined (:func:`_joined_blocks`) only when the median frame's belief holds at least
#: this much mass near its mode (0.81–1.0 on tolerant runs of synthetic scans); where the beliefs
#: fell back to the stage prior, moves to the links' peaks are guesses.
SETTLED_CONFIDENCE = 0.5

#: In a tolerant run a link holds its frames together where they sit within this many px (per axis)
#: of its best peak. (Not a share of the peak's ψ: the weak diagonal links of a 15×15 scan of 512 px
#: frames, nearly flat, keep ≥ 0.01 of theirs almost anywhere and tied two halves 28 px apart.)
HELD_PX = 1


def _joined_blocks(displacement, edges, *, sigma_px: float, radius_px: int, floor: float) -> np.ndarray | None:
    """Displacements with blocks of frames moved as wholes where that makes the placement more
    probable, else None. Blocks: the frames the links hold together (:data:`HELD_PX`). Moves
    tried: a block shifted so that one link from it to another block sits on that link's peak.
    The most probable move is made, then the next, until none is more probable."""
    n = len(displacement)
    d = np.asarray(displacement, int).copy()
    first, second = (np.array([edge[k] for edge in edges], int).reshape(-1) for k in (0, 1))
    peaks = np.array([kernel.peak() for _, _, kernel, _ in edges], int).reshape(-1, 2)

    moved = False
    for _ in range(n):
        offsets = d[second] - d[first]
        held = np.abs(offsets - peaks).max(axis=1, initial=0) <= HELD_PX
        graph = sparse.coo_matrix((np.ones(int(held.sum())), (first[held], second[held])), shape=(n, n))
        count, block = csgraph.connected_components(graph, directed=False)
        if count == 1:
            break
        best_gain, best = 1e-9, None
        for k in np.flatnonzero(~held & (block[first] != block[second])):
            shift = peaks[k] - offsets[k]
            for members, move in ((block == block[second[k]], shift), (block == block[first[k]], -shift)):
                if np.abs(d[members] + move).max() > radius_px:
                    continue
                # only the prior of the moved frames and the links across the block's edge change
                gain = -0.5 * float(((d[members] + move) ** 2 - d[members] ** 2).sum()) / sigma_px**2
                for c in np.flatnonzero(members[first] != members[second]):
                    now = offsets[c] + (move if members[second[c]] else -move)
                    kernel = edges[c][2]
                    gain += _log_psi(kernel, now, radius_px, floor) - _log_psi(kernel, offsets[c], radius_px, floor)
                if gain > best_gain:
                    best_gain, best = gain, (members, move)
        if best is None:
            break
        d[best[0]] += best[1]
        moved = True
    return d if moved else None


def _mrf_edges(links: list[Link], *, radius_px: int, sharpness: float, floor: float,
               tolerant: bool) -> list[tuple[int, int, _MessageKernel, _MessageKernel]]:
    """(i, j, message kernel to j, message kernel to i) of every link with a potential above its floor."""
    side = 2 * radius_px + 1
    # A link's NCC is an average over its lens, so its evidence grows with the lens: the same
    # drop in z over a diagonal neighbour's corner lens (~1/7 of a side neighbour's at 30 %
    # overlap) says less. Weighted alike, two diagonal links of a simulated 3×3 in-focus chip
    # outvoted the side links and put a column of frames one grating period (18 px) off. Weighted
    # by √lens: 11 of 16 planar simulator scans within 0.15 px mean and 0.5 px max, not 8; the
    # flat, default and stacked ones (3×3 and 4×4, seeds 1–6) 2.8 px mean error, not 3.6 (with
    # consensus.TIGHTER_PRIOR_FRACTION 0.3 in both). Not in a tolerant run: its frames match at
    # NCC ≥ 0.98 even over a corner, and on a 2×3 scan of 512 px synthetic frames the corners
    # (290 px against the sides' 38 884) were what held its one-pixel peaks together around loops
    # (weighted, two of its frames went 43 px off).
    lenses = [link.lens_px for link in links if link.lens_px > 0]
    typical = float(np.median(lenses)) if lenses and not tolerant else 0.0
    edges = []
    for link in links:
        weight = math.sqrt(link.lens_px / typical) if typical > 0 and link.lens_px > 0 else 1.0
        psi = _link_potential(link, 2 * radius_px, sharpness * weight, floor, tolerant)
        if psi is not None and (psi > floor).any():
            lift = psi - floor
            edges.append((link.i, link.j, _MessageKernel(lift, side), _MessageKernel(lift[::-1, ::-1], side)))
    return edges


def _log_probability(displacement, edges, *, sigma_px: float, radius_px: int, floor: float) -> float:
    """log p of (N, 2) whole-pixel displacements under the joint inference's model (up to a
    constant): the stage prior plus each edge's log ψ at d_j − d_i (the floor beyond its window)."""
    d = np.rint(np.asarray(displacement, float)).astype(int)
    log_p = -0.5 * float((d.astype(float) ** 2).sum()) / sigma_px**2
    for i, j, kernel, _ in edges:
        log_p += _log_psi(kernel, d[j] - d[i], radius_px, floor)
    return log_p


def _log_psi(kernel: _MessageKernel, delta, radius_px: int, floor: float) -> float:
    """log ψ of an edge (its kernel towards j) at the (x, y) whole-pixel offset δ = d_j − d_i."""
    return math.log(floor + kernel.lift_at(np.asarray(delta) + 2 * radius_px))


def disagreement(n: int, links: list[Link], positions_px: np.ndarray, *, skip=()) -> np.ndarray:
    """Per frame, how much better one of its links correlates elsewhere than where the frames are placed: the
    largest, over the frame's links with an NCC surface (but those whose index is in ``skip``: links whose
    fault lies with the other frame), of the surface's best NCC minus its best within a pixel
    of the placed offset (taken as −1 where the placement leaves the searched window or its overlap). 0 for a frame whose
    every overlap peaks where it sits; high where a neighbour's overlap looks better at another offset (an
    alias chosen by the other links, or the truth, defocused, scoring below an alias)."""
    out = np.zeros(n)
    for k, link in enumerate(links):
        if k in skip or link.surface is None or link.reason not in ("", "unrefined"):
            continue
        surface = np.asarray(link.surface, float)
        if not np.isfinite(surface).any():
            continue
        ry, rx = (surface.shape[0] - 1) // 2, (surface.shape[1] - 1) // 2
        offset = np.asarray(positions_px[link.j], float) - np.asarray(positions_px[link.i], float)
        c, r = (int(round(v)) for v in offset - np.asarray(link.surface_base, float) + (rx, ry))
        near = surface[max(0, r - 1): max(0, r + 2), max(0, c - 1): max(0, c + 2)]
        at = float(np.nanmax(near)) if np.isfinite(near).any() else -1.0
        gap = float(np.nanmax(surface)) - at
        out[link.i] = max(out[link.i], gap)
        out[link.j] = max(out[link.j], gap)
    return out
