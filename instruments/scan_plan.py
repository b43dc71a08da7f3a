"""A scan plan's numbers checked against the instrument that will run it (pure; no Django).

The grid is the scan engine's own (instruments.trajectory.serpentine_grid): the usable square
inscribed in the sphere's circular field of view (side D/√2) tiles the area with neighbours
sharing `overlap` of that side, so step = D/√2 × (1 − overlap). A plan may give the step
instead of the overlap; the overlap then follows from it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from instruments.trajectory import step_from_fov, usable_side_nm

MAX_OVERLAP = 0.9


def grid_count(extent_nm: float, side_nm: float, step_nm: float) -> int:
    """Frames along one axis: the fewest n with (n − 1)·step + side ≥ extent (as serpentine_grid)."""
    if extent_nm <= side_nm:
        return 1
    return int(math.ceil((extent_nm - side_nm) / step_nm - 1e-9)) + 1


def area_for_grid(frames_across: int, *, fov_diameter_nm: float, overlap: float) -> float:
    """Side in nm of a square area that a ``frames_across`` × ``frames_across`` grid covers at ``overlap``: the
    usable square and (n − 1) steps, rounded down to 100 nm (which never costs a frame: a step is far longer)."""
    if frames_across < 1:
        raise ValueError(f"frames_across must be at least 1, got {frames_across}")
    side = usable_side_nm(fov_diameter_nm)
    step = step_from_fov(fov_diameter_nm=fov_diameter_nm, overlap=overlap)
    return math.floor((side + (frames_across - 1) * step) / 100.0) * 100.0


class PlanError(ValueError):
    """A plan value out of range; `field` names it for the API's error body."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class ScanPlan:
    origin_x_nm: float
    origin_y_nm: float
    size_x_nm: float
    size_y_nm: float
    step_nm: float
    overlap: float
    exposure_ms: float
    contact_setpoint_nm: float
    z_planes: int = 1
    z_step_nm: float = 0.0
    rows: int = 1
    cols: int = 1

    @property
    def frames_total(self) -> int:
        return self.rows * self.cols


@dataclass(frozen=True)
class InstrumentLimits:
    fov_diameter_nm: float = 14_000.0
    travel_x_nm: float = 100_000.0
    travel_y_nm: float = 100_000.0
    max_frames: int = 10_000
    max_exposure_ms: float = 10_000.0
    max_setpoint_nm: float = 500.0
    max_z_planes: int = 51
    #: The widest Z-stack (focus travel from its first plane to its last). The sphere's virtual image magnifies
    #: depth by M² and more: 1.9 µm of sample depth (the simulator's default chip) is 38 µm of travel at M = 4,
    #: and the stack is centred on the autofocus's plane, which on a deep chip may be any layer.
    focus_travel_nm: float = 100_000.0


def _finite(field: str, value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise PlanError(field, "must be a number.") from None
    if not math.isfinite(number):
        raise PlanError(field, "must be a finite number.")
    return number


def validate_plan(values: dict, limits: InstrumentLimits = InstrumentLimits()) -> ScanPlan:
    """Check a plan's values and derive the step (when not given) and the grid shape.

    `values` holds origin_x_nm, origin_y_nm, size_x_nm, size_y_nm, overlap, exposure_ms,
    contact_setpoint_nm and optionally step_nm, z_planes, z_step_nm. Raises `PlanError`.
    """
    v = {k: values.get(k) for k in ("origin_x_nm", "origin_y_nm", "size_x_nm", "size_y_nm", "overlap",
                                    "exposure_ms", "contact_setpoint_nm")}
    for field, value in v.items():
        if value is None:
            raise PlanError(field, "is required.")
        v[field] = _finite(field, value)
    fov = limits.fov_diameter_nm
    side = usable_side_nm(fov)
    step = values.get("step_nm")
    if step in (None, ""):
        if not 0.0 <= v["overlap"] <= MAX_OVERLAP:
            raise PlanError("overlap", f"must be between 0 and {MAX_OVERLAP} (a fraction of the field of view).")
        step = step_from_fov(fov_diameter_nm=fov, overlap=v["overlap"])
    else:
        step = _finite("step_nm", step)
        if step <= 0:
            raise PlanError("step_nm", "must be positive.")
        if step > side:  # the limit is the usable square, not the sphere's circle around it
            raise PlanError("step_nm", f"{step:.0f} nm is larger than the usable square of the field of view "
                                       f"({side:.0f} nm wide, inside the {fov:.0f} nm circle): frames would leave gaps.")
        v["overlap"] = 1.0 - step / side
        if v["overlap"] > MAX_OVERLAP:
            raise PlanError("step_nm", f"{step:.0f} nm is too small: neighbours would overlap by more than {MAX_OVERLAP}.")
    for axis, travel in (("x", limits.travel_x_nm), ("y", limits.travel_y_nm)):
        origin, size = v[f"origin_{axis}_nm"], v[f"size_{axis}_nm"]
        if size < 0:
            raise PlanError(f"size_{axis}_nm", "must not be negative.")
        if not 0 <= origin <= travel:
            raise PlanError(f"origin_{axis}_nm", f"must lie within the scanner's travel, 0 to {travel:.0f} nm.")
        if origin + size > travel:
            raise PlanError(f"size_{axis}_nm", f"origin + size exceeds the scanner's travel of {travel:.0f} nm.")
    cols = grid_count(v["size_x_nm"], side, step)
    rows = grid_count(v["size_y_nm"], side, step)
    if rows * cols > limits.max_frames:
        raise PlanError("size_x_nm", f"this plan needs {rows * cols} frames; the limit is {limits.max_frames}.")
    if not 0 < v["exposure_ms"] <= limits.max_exposure_ms:
        raise PlanError("exposure_ms", f"must be above 0 and at most {limits.max_exposure_ms:.0f} ms.")
    if not 0 < v["contact_setpoint_nm"] <= limits.max_setpoint_nm:
        raise PlanError("contact_setpoint_nm", f"must be above 0 and at most {limits.max_setpoint_nm:.0f} nm of deflection.")
    z_planes = values.get("z_planes", 1)
    if isinstance(z_planes, bool) or not isinstance(z_planes, int) and not (isinstance(z_planes, float) and z_planes.is_integer()):
        raise PlanError("z_planes", "must be a whole number.")
    z_planes = int(z_planes)
    if not 1 <= z_planes <= limits.max_z_planes:
        raise PlanError("z_planes", f"must be between 1 and {limits.max_z_planes}.")
    z_step = _finite("z_step_nm", values.get("z_step_nm", 0.0) or 0.0)
    if z_planes > 1 and z_step <= 0:
        raise PlanError("z_step_nm", "must be positive when more than one Z plane is asked for.")
    if z_step < 0 or (z_planes - 1) * z_step > limits.focus_travel_nm:
        raise PlanError("z_step_nm", f"the Z-stack must fit the focus travel of {limits.focus_travel_nm:.0f} nm.")
    return ScanPlan(
        origin_x_nm=v["origin_x_nm"], origin_y_nm=v["origin_y_nm"], size_x_nm=v["size_x_nm"],
        size_y_nm=v["size_y_nm"], step_nm=step, overlap=v["overlap"], exposure_ms=v["exposure_ms"],
        contact_setpoint_nm=v["contact_setpoint_nm"], z_planes=z_planes, z_step_nm=z_step, rows=rows, cols=cols,
    )
