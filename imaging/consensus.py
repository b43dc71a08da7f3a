"""Which measured offsets to believe: the links of a scan, chosen among their correlation
peaks by how the whole scan agrees, refined there, and placed.

Single pairs cannot tell a true offset from an alias one period of a grating away, or from
the peak of a layer another frame shows defocused; the scan as a whole can. The main route
infers every frame's displacement jointly from the links' whole NCC surfaces
(:func:`mrf_links`, :func:`imaging.placement.mrf_displacements`), refines each link there and
settles the ones that still miss (:func:`settled`); links measured without surfaces fall back
to voting around loops and to the stage model (:func:`consensus_placement`).

``register(i, j, nominal, radius)`` measures a link again (search within ``radius`` px of
``nominal``, then refine) and ``refine(i, j, start)`` refines it only; both return a
:class:`imaging.pairwise.PairOffset`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import numpy as np

from imaging.pairwise import PairOffset
from imaging.parallel import parallel_map
from imaging.placement import (
    Link,
    Placement,
    StageModel,
    fit_stage_model,
    mrf_displacements,
    peak_shoulder,
    solve_positions,
    vote_offsets,
)

__all__ = ["STAGE_SIGMA_FRACTION", "consensus_placement", "mrf_links", "settled", "voted", "constrained"]

Register = Callable[[int, int, np.ndarray, float], PairOffset]
Refine = Callable[[int, int, np.ndarray], PairOffset]
Polish = Callable[[list[Link], Placement], list[Link]]


#: Stage error (1σ per axis, per frame) assumed as a fraction of the step between frames: the
#: scans this is built for keep 3σ within 10–15 % of the step.
STAGE_SIGMA_FRACTION = 0.05

#: A link missing the placement by more than this (px) is refined again from the placement's
#: prediction (:func:`settled`), up to this many rounds.
SETTLE_RESIDUAL_PX = 0.3
SETTLE_ROUNDS = 2

#: The joint inference is rerun with every link's peaks a pixel wider
#: (:func:`imaging.placement.mrf_displacements`) when its median confidence is below this many
#: times the stage prior's alone: 0.01–0.03 (the prior's level) on synthetic 384–512 px scans
#: before the rerun, 0.95–1 after; 0.25–0.3 on simulated default chips, whose frames are
#: ambiguous rather than mismatched by a pixel (there the rerun is worse: 3.9 → 7.0 px).
PRIOR_ONLY_FACTOR = 4.0

#: Links whose peaks keep less than this share of their support a pixel aside (median over the scan,
#: :func:`imaging.placement.peak_shoulder`) are inferred tolerant from the start. Synthetic scans of
#: 128–512 px frames: 0.19–0.55; simulator scans, blurrier: 0.91–0.99. A 15×15 scan of 512 px frames
#: was confident and wrong without (a block of 34 frames 48 px off; tolerant, every frame placed).
NARROW_PEAK_SHOULDER = 0.75

#: The inference is run again with the stage prior tightened only when the sure frames' spread is
#: below this fraction of the first prior's σ: when the stage proved several times better than
#: assumed. Tightened by less (0.55–0.69 on the bench's simulated scans, stage errors 3σ = 10 % of
#: the step), the prior was too sure of itself: the spread of the sure frames underestimates the
#: stage's, and a frame 3σ off was put on an alias nearer its stage position (4×4 flat chips,
#: seeds 1–6: 1.82 px mean error tightened, 0.70 not; stacked 4×4, seeds 1–3: 2.99, 1.75; 3×3
#: flat 0.23, 0.30; default chips the same). At 0.45 a 4×4 planar chip (seed 5, stage errors up to
#: 16 % of the step) was tightened to 4.3 px from the sure frames, its corner frame 25 px off was
#: put on an alias (7.8 px mean error); at 0.3, 0.18 px, the others the same or better (planar
#: chips, seeds 1–8; flat, default and stacked, seeds 1–6; links weighted by their lenses). A prior narrower by a few per cent moves no mode,
#: and a rerun is half the inference's time.
TIGHTER_PRIOR_FRACTION = 0.3

#: Pull (px⁻², σ ≈ 3 px) of each frame towards the joint inference's whole-pixel placement in
#: the final solve. It decides what the links leave open: a frame held only by lenses of nearly
#: parallel lines is pinned across them and free along them, and two such links a few degrees
#: apart that disagree by 7 px put it 40 px off under the stage model's far weaker pull (1e-4).
#: Against links of 100–400 px⁻² it moves a well-linked frame by < 0.01 px.
INFERRED_PRIOR_WEIGHT = 0.1


def _local_peak(link: Link, target) -> np.ndarray:
    """The integer offset within a pixel of ``target`` where the link's own NCC surface peaks:
    the tolerant joint inference lets support within a pixel of a peak stand for the peak, so
    its target may sit on the flank of a narrow peak; a strict one may leave a frame the links
    hold only across parallel lines beside a broad peak's top (:func:`mrf_links`)."""
    surface = link.surface
    ry, rx = (surface.shape[0] - 1) // 2, (surface.shape[1] - 1) // 2
    u = int(round(target[0] - link.surface_base[0])) + rx
    v = int(round(target[1] - link.surface_base[1])) + ry
    if not (0 <= u < surface.shape[1] and 0 <= v < surface.shape[0]):
        return np.asarray(target, float)
    box = surface[max(0, v - 1): v + 2, max(0, u - 1): u + 2]
    if not np.isfinite(box).any():
        return np.asarray(target, float)
    r, c = np.unravel_index(int(np.nanargmax(box)), box.shape)
    return np.array([link.surface_base[0] + max(0, u - 1) + c - rx, link.surface_base[1] + max(0, v - 1) + r - ry],
                    float)


def consensus_placement(nominal: np.ndarray, links: list[Link], *, register: Register, refine: Refine,
                        min_score: float, max_residual_px: float, polish: Polish | None = None,
                        held: dict[int, np.ndarray] | None = None) -> tuple[list[Link], Placement]:
    """Links and placement: from the joint inference over the links' NCC surfaces
    (:func:`mrf_links`) when the links carry them; otherwise from the hypothesis that keeps
    the most links, best scored.

    Hypotheses: the links as measured; those straying from the consensus stage model
    measured again within the spread of all links; and within the spread of the model's
    inliers only. The last is right when the stage is repeatable and the stragglers locked
    onto aliases of periodic patterns (simulated SSUM chips: half the links), and wrong when
    the stage is merely imprecise (then the re-measured links land off their peaks, score
    low and are dropped, so that hypothesis keeps fewer links and loses).

    ``held``: frames the joint inference holds at given displacements (see
    :func:`imaging.placement.mrf_displacements`).

    ``polish(links, placement)``, if given, measures the placed links once more (with what the
    placement taught, e.g. the field blur, :mod:`imaging.fieldblur`) before the last solve.
    """
    inferred = mrf_links(nominal, links, register, held=held)
    if inferred is not None:
        inferred_links, inferred_px, confidence = inferred
        prior = {"prior_xy_px": inferred_px, "prior_weight": INFERRED_PRIOR_WEIGHT}
        placement = solve_positions(nominal, inferred_links, min_score=min_score, max_residual_px=max_residual_px,
                                    **prior)
        settled_links, placement = settled(nominal, inferred_links, placement, refine, min_score=min_score,
                                           max_residual_px=max_residual_px, **prior)
        if polish is not None:
            settled_links = polish(settled_links, placement)
            placement = solve_positions(nominal, settled_links, min_score=min_score,
                                        max_residual_px=max_residual_px, **prior)
        return settled_links, dataclasses.replace(placement, confidence=confidence, inferred_px=inferred_px)
    hypotheses = [links, voted(len(nominal), links, register, min_score=min_score)]
    model = fit_stage_model(links, min_score=min_score)
    if model is not None:
        for spread in dict.fromkeys((model.spread_px, model.inlier_spread_px)):
            hypotheses.append(parallel_map(functools.partial(constrained, model=model, spread_px=spread, register=register),
                                           links))
    best = None
    for candidate in hypotheses:
        placement = solve_positions(nominal, candidate, min_score=min_score, max_residual_px=max_residual_px)
        kept = [k for k in range(len(candidate)) if k not in placement.dropped]
        key = (len(kept), float(np.mean([candidate[k].score for k in kept])) if kept else 0.0)
        if best is None or key > best[0]:
            best = (key, candidate, placement)
    _, links, placement = best
    if polish is not None:
        links = polish(links, placement)
        placement = solve_positions(nominal, links, min_score=min_score, max_residual_px=max_residual_px)
    return links, placement


def in_raster_order(nominal: np.ndarray, links: list[Link], step_px: float) -> list[Link]:
    """The links as a raster scan (rows top to bottom, each left to right, by the ``nominal`` (N, 2) positions)
    adds them: by their later frame in that order, then their earlier one.

    The joint inference passes its messages in the links' order, and where the links leave two placements
    nearly tied, that order picks one: a planar chip's 3×3 scan (simulator, seed 1, stage off by 10 % of the
    step, bare-silicon flat field) stitched 0.049 px off in raster order and 3.6 px (one frame on a grating's
    alias, 16 px) in the serpentine order the instrument takes it. In one order, a scan stitches the same
    however it was taken, as the bench measures it."""
    nominal = np.asarray(nominal, float)
    row = np.round((nominal[:, 1] - nominal[:, 1].min()) / (0.5 * step_px))
    rank = np.empty(len(nominal), int)
    rank[np.lexsort((nominal[:, 0], row))] = np.arange(len(nominal))
    return sorted(links, key=lambda link: (max(rank[link.i], rank[link.j]), min(rank[link.i], rank[link.j])))


def mrf_links(nominal: np.ndarray, links: list[Link], register: Register, *,
              held: dict[int, np.ndarray] | None = None) -> tuple[list[Link], np.ndarray, np.ndarray] | None:
    """The links measured again where the joint inference over all links' NCC surfaces
    (:func:`imaging.placement.mrf_displacements`) puts their frames, those (N, 2) places
    (px, whole pixels) and the inference's (N,) confidence in them (from its last run); None
    without surfaces. ``nominal`` : (N, 2) stage positions, px.

    Each link is refined (Gauss–Newton) from the inferred offset without a new search: a
    search within even 2 px locked onto the slope of a neighbouring peak 2–3 px away on
    simulated flat chips (4×4 scan: 1.12 px mean error with the search, 0.25 without). Where
    that refinement wanders off (the offset was on a peak's flank), it starts again from the
    peak within a pixel (:func:`_local_peak`)."""
    usable = [link for link in links if link.surface is not None and link.reason in ("", "unrefined")]
    if not usable:
        return None
    n = len(nominal)
    step = float(np.median([np.hypot(*link.nominal_offset_px) for link in usable]))
    widest = max(STAGE_SIGMA_FRACTION * step, 1.0)
    radius = int(np.ceil(4.0 * widest))
    ordered = in_raster_order(nominal, links, step)  # see in_raster_order
    # Peaks a pixel wide miss each other around loops by a pixel (see mrf_displacements'
    # ``tolerant``): infer with them widened from the start.
    shoulders = [shoulder for link in usable if (shoulder := peak_shoulder(link)) is not None]
    tolerant = bool(shoulders) and float(np.median(shoulders)) < NARROW_PEAK_SHOULDER
    infer = functools.partial(mrf_displacements, n, ordered, radius_px=radius, held=held)
    displacement, confidence = infer(sigma_px=widest, tolerant=tolerant)
    # Confidence as low as the stage prior's own means the links said nothing: their peaks,
    # however wide, miss each other around loops by a pixel.
    prior_only = math.erf(2.5 / (widest * math.sqrt(2))) ** 2
    free = np.array([f not in (held or {}) for f in range(n)])  # a held frame's confidence is 1 by fiat
    if not tolerant and free.any() and np.median(confidence[free]) < PRIOR_ONLY_FACTOR * prior_only:
        tolerant = True
        displacement, confidence = infer(sigma_px=widest, tolerant=True)
    # Then again with the prior as tight as the stage proved to be on the frames the links pin
    # down: with a repeatable stage, aliases a period away must not outvote it (3×3 flat chip,
    # stage errors ~1.5 px: with σ at 5 % of the step one frame went 8 px off).
    sure = displacement[confidence >= 0.9]
    if len(sure) >= 3:
        sigma = float(np.clip(np.sqrt(np.mean((sure - sure.mean(axis=0)) ** 2)), 1.0, widest))
        if sigma < TIGHTER_PRIOR_FRACTION * widest:
            displacement, confidence = infer(sigma_px=sigma, tolerant=tolerant)
    def measured_there(link: Link) -> Link:
        if link.surface is None or link.reason not in ("", "unrefined"):
            return link
        target = np.asarray(link.nominal_offset_px) + displacement[link.j] - displacement[link.i]
        if tolerant:
            target = _local_peak(link, target)
        if not link.reason and np.all(np.abs(np.asarray(link.offset_px) - target) <= 1.0):
            return link  # already measured on the peak the inference chose
        pair = register(link.i, link.j, target, 0.0)  # refine from there; no search
        if pair.reason == "unrefined" and not tolerant:
            # The inferred offset sat on the flank of the link's peak, too far for the refinement
            # to climb from: a frame pinned only across parallel lines is placed along them by the
            # prior, a pixel or two off (simulated 3×3 flat chip, seed 3: six links dropped so,
            # 1.07 px mean error; refined again from the peak, 0.29 px).
            peak = _local_peak(link, target)
            if np.any(peak != target) and not (again := register(link.i, link.j, peak, 0.0)).reason:
                pair = again
        return dataclasses.replace(link, offset_px=pair.offset_px, score=pair.score, information=pair.information,
                                   reason=pair.reason)

    out = parallel_map(measured_there, links)
    return out, np.asarray(nominal, float) + displacement, confidence


def settled(nominal: np.ndarray, links: list[Link], placement: Placement, refine: Refine, *, min_score: float,
            max_residual_px: float, **prior) -> tuple[list[Link], Placement]:
    """Links that miss the placement by more than ``SETTLE_RESIDUAL_PX`` refined again from
    the offset the placement predicts for them (sub-pixel), kept where they then miss by
    less; then solved again. Why: the joint inference places frames to whole pixels, and on
    fine periodic structure a refinement from a pixel off ends on a neighbouring optimum
    1–2 px away (simulated 4×4 flat chip: max error 0.69 → 0.49 px)."""
    for _ in range(SETTLE_ROUNDS):
        resettled = parallel_map(functools.partial(_resettled, placement, refine), enumerate(links))
        if all(link is None for link in resettled):
            break
        links = [new or old for new, old in zip(resettled, links, strict=True)]
        placement = solve_positions(nominal, links, min_score=min_score, max_residual_px=max_residual_px,
                                    **prior)
    return links, placement


def _resettled(placement: Placement, refine: Refine, indexed: tuple[int, Link]) -> Link | None:
    """Link k (``indexed`` = (k, link)) refined again from the offset ``placement`` predicts for
    it, where it misses the placement by more than ``SETTLE_RESIDUAL_PX`` and then by less; else None."""
    k, link = indexed
    miss = placement.residual_px[k]
    if link.reason or k in placement.dropped or not miss > SETTLE_RESIDUAL_PX:
        return None
    predicted = placement.positions_px[link.j] - placement.positions_px[link.i]
    pair = refine(link.i, link.j, predicted)
    if pair.reason or not np.hypot(*(np.asarray(pair.offset_px) - predicted)) < miss - 0.05:
        return None
    return dataclasses.replace(link, offset_px=pair.offset_px, score=pair.score, information=pair.information,
                               reason="")


def voted(n: int, links: list[Link], register: Register, *, min_score: float) -> list[Link]:
    """The links with each offset chosen among its peaks by agreement around loops of frames
    (:func:`imaging.placement.vote_offsets`), refined there; links whose peaks all disagree
    with their group are measured again at the group's prediction."""
    chosen, rel, group = vote_offsets(n, links, min_score=min_score)
    out = []
    for k, link in enumerate(links):
        if k in chosen:
            target = chosen[k]
        elif not link.reason and group[link.i] == group[link.j]:
            target = rel[link.j] - rel[link.i]
        else:
            out.append(link)
            continue
        if not link.reason and np.all(np.abs(np.asarray(link.offset_px) - target) <= 1.0):
            out.append(link)
            continue
        pair = register(link.i, link.j, target, 2.0)
        out.append(Link(link.i, link.j, link.nominal_offset_px, pair.offset_px, pair.score,
                        pair.information, pair.reason, link.alternatives, lens_px=link.lens_px))
    return out


def constrained(link: Link, model: StageModel, spread_px, register: Register) -> Link:
    """Measure a link again inside the window the stage model allows (MIST's second pass).

    On periodic structures the first, wide search may lock onto an alias one period away;
    the stage's own repeatability (the spread of the links that agree with the model) bounds
    where the true offset can be, so the search is repeated there when the link strays.
    """
    predicted = model.predict(link.nominal_offset_px)
    radius = np.clip(3.0 * np.asarray(spread_px) + 2.0, 2.0, None)
    if not link.reason and np.all(np.abs(np.asarray(link.offset_px) - predicted) <= radius):
        return link
    pair = register(link.i, link.j, predicted, radius)
    return Link(link.i, link.j, link.nominal_offset_px, pair.offset_px, pair.score, pair.information,
                pair.reason, link.alternatives, lens_px=link.lens_px)
