"""Global frame positions from pairwise offsets: weighted least squares with outlier rejection.

Every accepted link (i, j) says ``position_j − position_i ≈ offset`` with a 2×2 weight (its
information matrix from the sub-pixel refinement, floored so no link claims better than
``floor_px``). A weak prior ties each frame to the stage model (an affine fit of measured to
nominal offsets), which fixes the gauge and places frames that kept no link.

Outliers are removed in two passes, so one bad pair never bends the mosaic:

1. *stage model*: links whose deviation from the fitted stage model is far outside the spread of
   all links (robust z > ``stage_z``, and > ``max_residual_px``) are dropped before solving;
2. *neighbours*: after each solve, the link that disagrees most with the positions its
   neighbours imply (largest residual, beyond ``max_residual_px`` and 3 σ of its own
   uncertainty) is dropped and the system solved again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse import linalg as sparse_linalg

__all__ = ["Link", "Placement", "StageModel", "fit_stage_model", "solve_positions"]


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


@dataclass(frozen=True)
class Placement:
    """positions_px : (N, 2) float (x, y); residual_px : (L,) |solved − measured| per link
    (NaN for links never used); dropped : {link index: reason}; placed_by_stage : frames with no
    accepted link; stage_matrix : 2×2 map from nominal to measured offsets."""

    positions_px: np.ndarray
    residual_px: np.ndarray
    dropped: dict
    placed_by_stage: tuple
    stage_matrix: np.ndarray


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


def _weight(link: Link, floor_px: float) -> np.ndarray:
    info = np.asarray(link.information, float)
    try:
        cov = np.linalg.inv(info + 1e-9 * np.eye(2))
    except np.linalg.LinAlgError:
        cov = np.eye(2) * 1e6
    cov = 0.5 * (cov + cov.T) + floor_px**2 * np.eye(2)
    return np.linalg.inv(cov)


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
) -> Placement:
    """Global positions of N frames from their links.

    nominal_xy_px : (N, 2) float, (x, y) stage positions converted to px.
    links : measured pairs; ``score`` is the NCC of the overlap.
    min_score : links with a lower NCC are dropped as ``"low_score"``.
    max_residual_px : a link is only ever called an outlier if it misses by more than this.
    stage_z : robust z-score beyond which a link contradicts the stage model.
    floor_px : minimum standard deviation assumed for any link (model and interpolation error).
    prior_weight : weight (px⁻²) of the pull of each frame towards the stage model.
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

    weights = {k: _weight(links[k], floor_px) for k in range(len(links))}
    prior = nominal_xy_px @ stage.T
    positions = _solve(n, links, active, weights, prior, prior_weight)
    # Pass 2: neighbours. Drop the worst-fitting link while it is clearly inconsistent.
    while active:
        res = {k: positions[links[k].j] - positions[links[k].i] - np.asarray(links[k].offset_px) for k in active}
        worst = max(active, key=lambda k: np.hypot(*res[k]))
        r = res[worst]
        sigma_units = float(np.sqrt(r @ weights[worst] @ r))
        if np.hypot(*r) <= max_residual_px or sigma_units <= 3.0:
            break
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
