"""Placement on a repeatable stage: the frames go where the stage put them, turned by the camera's
rotation against the scanner, which the overlaps measure.

A closed-loop piezo scanner (the PI P-733.3CL reads capacitive sensors) lands within nanometres of
where it reads, a small fraction of a camera pixel (32.5 nm). What moves frames off their stage
positions then is the camera turned against the scanner's axes (0.35° on the simulated bench: 1.3 px
across a step of 217 px), and, less, the scale of the pixel size's calibration. On deep chips the
overlaps' own best matches are often wrong (aliases of periodic layers, layers defocused differently
in neighbouring frames): with such a stage (1.5 nm), the joint inference over the links
(:func:`imaging.consensus.consensus_placement`) put frames 1.1–5 px off on average where the stage
alone was 1.5–2.1 px off, and this 0.36–0.71 px (simulated default chips, 3×3 and 4×4, seeds 1–6).

So here the stage decides, and the overlaps only measure the rotation:

1. the rotation whose predicted link offsets the links' NCC surfaces support best (Fisher z summed
   over the links, ±:data:`MAX_ROTATION_DEG`);
2. each link refined (Gauss–Newton, no search) from the offset the turned stage predicts; a link that
   lands over max(3σ, :data:`FAR_FROM_STAGE_PX`) away is dropped; the rotation fitted again to the
   rest (least squares, trimmed), :data:`ROUNDS` times;
3. the kept links solved with every frame pulled to its turned stage position by 1/σ², σ the
   stage's repeatability in px but at least :data:`STAGE_MODEL_FLOOR_PX`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from imaging.consensus import Polish, Register
from imaging.parallel import parallel_map
from imaging.placement import Link, Placement, solve_positions, surface_z

__all__ = ["StageCalibration", "repeatable_stage_placement"]

#: The camera's rotation against the scanner searched for, degrees either way.
MAX_ROTATION_DEG = 2.0
ROTATION_STEP_DEG = 0.02

#: A link refined from the turned stage's prediction that lands further than this (px, or 3σ when
#: larger) found another structure: dropped (defocused layers and aliases, 0.5–1 px and more off).
FAR_FROM_STAGE_PX = 1.5

#: Rounds of refining the links from the turned stage and fitting the rotation again.
ROUNDS = 2

#: The turned stage is a rotation only: the stage's scale against the camera (the pixel size's
#: calibration, off by 0.1–0.2 %) moves a frame up to ~0.3 px a step, so the pull towards the stage
#: is no firmer than this σ (px), and sound links (100–400 px⁻²) still place frames to a tenth of a
#: pixel where the frames agree (simulated flat chips: 0.06–0.43 px, as without). Fitting the scale
#: too followed the links' biases on deep chips (0.9 % off: 2.1 px mean error, 0.6 rotation only).
STAGE_MODEL_FLOOR_PX = 0.3

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
    image axes), how many links agreed with the turned stage and how far off they sat (median, px),
    and whether that was enough to believe it (:data:`MIN_AGREEING_SHARE`)."""

    rotation_deg: float
    links_agreeing: int
    links_measured: int
    median_residual_px: float

    @property
    def believed(self) -> bool:
        return self.links_measured > 0 and self.links_agreeing >= MIN_AGREEING_SHARE * self.links_measured

    def to_dict(self) -> dict:
        return {"rotation_deg": round(self.rotation_deg, 4), "links_agreeing": self.links_agreeing,
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

    agreeing, residual = 0, float("nan")
    for _ in range(ROUNDS):
        sound = [link for link in measured_from(theta) if not link.reason and link.score >= min_score]
        if len(sound) < 2:
            break
        offsets_nominal = np.array([link.nominal_offset_px for link in sound], float)
        offsets = np.array([link.offset_px for link in sound], float)
        theta, keep = _fitted_rotation(offsets_nominal, offsets)
        agreeing = int(keep.sum())
        residual = float(np.median(np.hypot(*(offsets_nominal @ _rotation(theta).T - offsets).T)[keep]))
    measured = measured_from(theta)
    turn = _rotation(theta)
    centre = nominal.mean(axis=0)
    pulled = {"prior_xy_px": (nominal - centre) @ turn.T + centre, "prior_weight": 1.0 / sigma**2}
    placement = solve_positions(nominal, measured, min_score=min_score, max_residual_px=max_residual_px, **pulled)
    if polish is not None:
        measured = polish(measured, placement)
        placement = solve_positions(nominal, measured, min_score=min_score, max_residual_px=max_residual_px, **pulled)
    calibration = StageCalibration(rotation_deg=float(np.rad2deg(theta)), links_agreeing=agreeing,
                                   links_measured=len(surfaced), median_residual_px=residual)
    return measured, placement, calibration
