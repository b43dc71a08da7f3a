"""Placement on a repeatable stage: the frames go where the stage put them, mapped into the camera by
the scanner's calibration as the overlaps measure it.

A closed-loop piezo scanner (the PI P-733.3CL reads capacitive sensors) lands within nanometres of
where it reads, a small fraction of a camera pixel (32.5 nm). What moves frames off their stage
positions then is the camera turned against the scanner's axes (0.35° on the simulated bench: 1.3 px
across a step of 217 px) and each axis's scale against the pixel size (+0.15 % and −0.10 %: up to
0.3 px a step). On deep chips the overlaps' own best matches are often wrong (aliases of periodic
layers, layers defocused differently in neighbouring frames): with such a stage (1.5 nm), the joint
inference over the links (:func:`imaging.consensus.consensus_placement`) put frames 1.1–5 px off on
average where the stage alone was 1.5–2.1 px off.

So here the stage decides, and the overlaps only measure its calibration:

1. the rotation whose predicted link offsets the links' NCC surfaces support best (Fisher z summed
   over the links, ±:data:`MAX_ROTATION_DEG`);
2. each link refined (Gauss–Newton, no search) from the offset the turned stage predicts; a link that
   lands over max(3σ, :data:`FAR_FROM_STAGE_PX`) away is dropped; the rotation fitted again to the
   rest (least squares, trimmed), :data:`ROUNDS` times;
3. the stage's map from nominal to camera offsets (rotation, each axis's scale, skew) fitted to the
   kept links, each weighted by its information (a lens of parallel lines pins one direction) and
   robustly (:data:`STAGE_FIT_SCALE_PX`): twenty-odd links, each off by its own tenths of a pixel,
   pin four numbers far better than they pin a frame (simulated default chips: 0.36–0.71 px with the
   rotation alone, 0.16–0.34 but one 0.92 with the map);
4. the kept links solved with every frame pulled to its mapped stage position by 1/σ², σ the stage's
   repeatability in px but at least :data:`STAGE_MODEL_FLOOR_PX`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from imaging.consensus import Polish, Register
from imaging.parallel import parallel_map
from imaging.placement import Link, Placement, link_weight, solve_positions, surface_z

__all__ = ["StageCalibration", "fitted_stage", "repeatable_stage_placement"]

#: The camera's rotation against the scanner searched for, degrees either way.
MAX_ROTATION_DEG = 2.0
ROTATION_STEP_DEG = 0.02

#: A link refined from the turned stage's prediction that lands further than this (px, or 3σ when
#: larger) found another structure: dropped (defocused layers and aliases, 0.5–1 px and more off).
FAR_FROM_STAGE_PX = 1.5

#: Rounds of refining the links from the turned stage and fitting the rotation again.
ROUNDS = 2

#: The least σ (px) of the pull towards the mapped stage, whatever repeatability is claimed: the
#: links' own interpolation floor (a stage said to repeat within 0 nm would otherwise be infinitely
#: firm).
STAGE_MODEL_FLOOR_PX = 0.05

#: How far (px) a link may miss the fitted stage map before it counts for less (Cauchy weight
#: 1 / (1 + (miss / this)²)): the kept links of deep chips miss by tenths of a pixel, some by 1–2.
STAGE_FIT_SCALE_PX = 0.5
#: Rounds of reweighting (the map settles within a few on simulated scans).
STAGE_FIT_ROUNDS = 20

#: The most the fitted map may depart from the rotation it starts from (each entry): a scanner's
#: axes are calibrated to tenths of a percent (simulated: +0.15 % and −0.1 %) and stand square to a
#: tenth of a degree; beyond a percent the links were too few or too parallel to tell (a stage
#: wrongly said to be repeatable, 6 links of a flat chip: one axis 39 % short).
MAX_MAP_DEPARTURE = 0.01

#: The turned stage is believed only where at least this share of the measured links land on it:
#: with a precise stage (simulated, 1.5 nm), 0.43–0.8 on deep chips and 0.67–1 on flat ones; with a
#: stage that misses by 10 % of the step but said to be repeatable, 0.15–0.2 on planar chips (the
#: stitcher then places the frames by the overlaps instead, and says so), but 0.35–0.5 on deep chips,
#: whose defocused layers give a refinement started anywhere something nearby to land on: there the
#: claim is believed, wrongly. The repeatability must be the stage's.
MIN_AGREEING_SHARE = 0.3


@dataclasses.dataclass(frozen=True)
class StageCalibration:
    """What the overlaps measured of the stage: the camera's rotation against the scanner (degrees,
    image axes), each scanner axis's scale against the pixel size (x, y: 1.0015 is 0.15 % long) and
    how far its axes are from square (degrees), how many links agreed with the stage and how far off
    they sat (median, px), and whether that was enough to believe it (:data:`MIN_AGREEING_SHARE`)."""

    rotation_deg: float
    links_agreeing: int
    links_measured: int
    median_residual_px: float
    scale: tuple[float, float] = (1.0, 1.0)
    skew_deg: float = 0.0

    @property
    def believed(self) -> bool:
        return self.links_measured > 0 and self.links_agreeing >= MIN_AGREEING_SHARE * self.links_measured

    def to_dict(self) -> dict:
        return {"rotation_deg": round(self.rotation_deg, 4), "scale": [round(v, 5) for v in self.scale],
                "skew_deg": round(self.skew_deg, 4), "links_agreeing": self.links_agreeing,
                "links_measured": self.links_measured,
                "median_residual_px": None if not np.isfinite(self.median_residual_px)
                else round(self.median_residual_px, 3), "believed": self.believed}


def _rotation(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


def _surface_support(links: list[Link], angles: np.ndarray) -> np.ndarray:
    """Σ over links of the Fisher z of each link's NCC surface (bilinear) at its nominal offset
    turned by each angle (radians); a link whose surface does not reach there adds nothing."""
    total = np.zeros(len(angles))
    for link in links:
        surface = surface_z(link, blank=0.0)
        ry, rx = (surface.shape[0] - 1) // 2, (surface.shape[1] - 1) // 2
        nominal = np.asarray(link.nominal_offset_px, float)
        c, s = np.cos(angles), np.sin(angles)
        fx = rx + c * nominal[0] - s * nominal[1] - link.surface_base[0]
        fy = ry + s * nominal[0] + c * nominal[1] - link.surface_base[1]
        x0, y0 = np.floor(fx).astype(int), np.floor(fy).astype(int)
        inside = (x0 >= 0) & (y0 >= 0) & (x0 + 1 < surface.shape[1]) & (y0 + 1 < surface.shape[0])
        x0, y0, ax, ay = x0[inside], y0[inside], (fx - np.floor(fx))[inside], (fy - np.floor(fy))[inside]
        total[inside] += (surface[y0, x0] * (1 - ax) * (1 - ay) + surface[y0, x0 + 1] * ax * (1 - ay)
                          + surface[y0 + 1, x0] * (1 - ax) * ay + surface[y0 + 1, x0 + 1] * ax * ay)
    return total


def _fitted_rotation(nominal: np.ndarray, measured: np.ndarray) -> tuple[float, np.ndarray]:
    """Least-squares rotation taking nominal link offsets to measured ones, refitted without the
    links far off it (a structure the refinement found instead); (angle, kept mask)."""
    keep = np.ones(len(nominal), bool)
    for _ in range(3):
        n, m = nominal[keep], measured[keep]
        theta = float(np.arctan2(np.sum(n[:, 0] * m[:, 1] - n[:, 1] * m[:, 0]), np.sum(n * m)))
        residual = np.hypot(*(nominal @ _rotation(theta).T - measured).T)
        keep = residual <= max(2.5 * float(np.median(residual[keep])), 0.3)
    return theta, keep


def fitted_stage(links: list[Link], start: np.ndarray) -> np.ndarray:
    """The 2×2 map from nominal to measured link offsets (step 3 of the module docstring), by
    iteratively reweighted least squares from ``start``, which keeps what the links do not pin."""
    weights = [link_weight(link) for link in links]
    nominal = np.array([link.nominal_offset_px for link in links], float).reshape(-1, 2)
    measured = np.array([link.offset_px for link in links], float).reshape(-1, 2)
    stage = np.asarray(start, float)
    for _ in range(STAGE_FIT_ROUNDS):
        miss = np.hypot(*(nominal @ stage.T - measured).T)
        trust = 1.0 / (1.0 + (miss / STAGE_FIT_SCALE_PX) ** 2)
        normal, rhs = np.zeros((4, 4)), np.zeros(4)
        for w, n, o, t in zip(weights, nominal, measured, trust, strict=True):
            jacobian = np.array([[n[0], n[1], 0.0, 0.0], [0.0, 0.0, n[0], n[1]]])  # (A n) by A's entries
            normal += t * jacobian.T @ w @ jacobian
            rhs += t * jacobian.T @ w @ o
        # held faintly at ``start``: what the links do not pin (a line scan's y axis) stays there
        hold = 1e-6 * np.trace(normal) / 4 + 1e-12
        stage = np.linalg.solve(normal + hold * np.eye(4), rhs + hold * np.ravel(start)).reshape(2, 2)
    if np.abs(stage - start).max() > MAX_MAP_DEPARTURE:
        return np.asarray(start, float)  # links that pin one direction well and the other barely
    return stage


def _described(stage: np.ndarray) -> tuple[float, tuple[float, float], float]:
    """A stage map as (rotation of its x axis in degrees, (x, y) axis scales, skew in degrees)."""
    x_axis, y_axis = stage[:, 0], stage[:, 1]
    rotation = float(np.arctan2(x_axis[1], x_axis[0]))
    between = float(np.arctan2(x_axis[0] * y_axis[1] - x_axis[1] * y_axis[0], x_axis @ y_axis))
    return float(np.rad2deg(rotation)), (float(np.hypot(*x_axis)), float(np.hypot(*y_axis))), \
        float(np.rad2deg(between) - 90.0)


def repeatable_stage_placement(nominal: np.ndarray, links: list[Link], *, register: Register, stage_sigma_px: float,
                               min_score: float, max_residual_px: float, polish: Polish | None = None,
                               ) -> tuple[list[Link], Placement, StageCalibration]:
    """Links and placement of frames on a repeatable stage (see the module docstring), and what was
    measured of the stage. ``nominal`` : (N, 2) stage positions, px; ``stage_sigma_px`` : the stage's
    repeatability (1σ per axis), px; ``register(i, j, offset, 0.0)`` refines a link from ``offset``."""
    sigma = max(float(stage_sigma_px), STAGE_MODEL_FLOOR_PX)
    tolerance = max(3.0 * sigma, FAR_FROM_STAGE_PX)
    surfaced = [link for link in links if link.surface is not None and link.reason in ("", "unrefined")
                and np.isfinite(link.surface).any()]
    theta = 0.0
    if surfaced:
        angles = np.deg2rad(np.arange(-MAX_ROTATION_DEG, MAX_ROTATION_DEG + ROTATION_STEP_DEG / 2, ROTATION_STEP_DEG))
        theta = float(angles[int(np.argmax(_surface_support(surfaced, angles)))])

    def from_stage(link: Link, turn: np.ndarray) -> Link:
        if link.reason not in ("", "unrefined"):
            return link  # the measurement itself failed (no overlap, blank): nothing to refine
        predicted = turn @ np.asarray(link.nominal_offset_px, float)
        pair = register(link.i, link.j, predicted, 0.0)
        reason = pair.reason
        if not reason and np.abs(np.asarray(pair.offset_px) - predicted).max() > tolerance:
            reason = "far from the stage"
        return dataclasses.replace(link, offset_px=pair.offset_px, score=pair.score, information=pair.information,
                                   reason=reason)

    def measured_from(theta: float) -> list[Link]:
        turn = _rotation(theta)
        return parallel_map(lambda link: from_stage(link, turn), links)

    def sound_of(links: list[Link]) -> list[Link]:
        return [link for link in links if not link.reason and link.score >= min_score]

    agreeing, residual = 0, float("nan")
    for _ in range(ROUNDS):
        sound = sound_of(measured_from(theta))
        if not sound:
            break
        offsets_nominal = np.array([link.nominal_offset_px for link in sound], float)
        offsets = np.array([link.offset_px for link in sound], float)
        theta, keep = _fitted_rotation(offsets_nominal, offsets)
        agreeing = int(keep.sum())
        residual = float(np.median(np.hypot(*(offsets_nominal @ _rotation(theta).T - offsets).T)[keep]))
    measured = measured_from(theta)
    stage = fitted_stage(sound_of(measured), _rotation(theta))
    centre = nominal.mean(axis=0)

    def placed(links: list[Link], stage: np.ndarray) -> Placement:
        return solve_positions(nominal, links, min_score=min_score, max_residual_px=max_residual_px,
                               prior_xy_px=(nominal - centre) @ stage.T + centre, prior_weight=1.0 / sigma**2)

    placement = placed(measured, stage)
    if polish is not None:
        measured = polish(measured, placement)
        stage = fitted_stage(sound_of(measured), stage)
        placement = placed(measured, stage)
    kept = [link for k, link in enumerate(measured) if k not in placement.dropped]
    if kept:
        residual = float(np.median([np.hypot(*(stage @ link.nominal_offset_px - np.asarray(link.offset_px)))
                                    for link in kept]))
    rotation, scale, skew = _described(stage)
    calibration = StageCalibration(rotation_deg=rotation, links_agreeing=agreeing, links_measured=len(surfaced),
                                   median_residual_px=residual, scale=scale, skew_deg=skew)
    return measured, placement, calibration
