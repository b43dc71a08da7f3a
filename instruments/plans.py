"""Scan plans: pure descriptions of what the engine should do, as a stream of messages.

A plan never touches hardware. ``raster_plan(spec)`` yields frozen message dataclasses; the
engine (``instruments.engine``) executes them. Test a plan by listing its messages::

    [type(m).__name__ for m in raster_plan(spec)]

Each grid point is one unit of work bracketed by ``BeginPoint`` … ``Save``, ``Checkpoint``:
nothing of a point is kept until ``Save``, so the engine may replay a point from its
``BeginPoint`` after a fault and a resumed scan simply skips saved points.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from instruments.trajectory import GridPoint, serpentine_grid, z_stack_offsets_nm

__all__ = [
    "ScanSpec", "grid_points", "raster_plan", "Msg",
    "Configure", "BeginPoint", "MoveXY", "Settle", "Approach", "BackOff", "Focus",
    "FocusOffset", "Trigger", "Read", "Fuse", "Save", "Checkpoint",
]


@dataclass(frozen=True)
class ScanSpec:
    """What a lab member asks for. Lengths in nm, times in s.

    origin_nm, area_nm : (x, y) lower-left corner and (width, height) of the area.
    fov_diameter_nm : the sphere's circular field of view on the sample.
    overlap : fraction of the usable square shared by neighbouring frames, [0, 0.9].
    exposure_s : camera exposure; roi : camera ROI ``(x0, y0, x1, y1)`` 0-based end-exclusive or None.
    contact_setpoint_nm : cantilever deflection that means "in contact".
    imaging_gap_nm : how far to back the sample off from the contact position before imaging.
    approach_speed_nm_s : Z speed of the contact approach (the deflection is read while Z rises).
    settle_s : wait after each XY move before measuring.
    focus_mode : ``"auto"`` autofocus at every point; ``"last"`` reuse the last good focus
        (autofocus only when there is none yet).
    focus_start_nm : focus-stage position to search around before any focus is known.
    focus_range_nm, focus_steps : autofocus sweeps ``focus_steps`` positions over this range.
    z_planes, z_step_nm : optional Z-stack per point (1 = no stack), fused to extended depth of field.
    """

    origin_nm: tuple[float, float]
    area_nm: tuple[float, float]
    fov_diameter_nm: float
    overlap: float = 0.2
    exposure_s: float = 0.01
    roi: tuple[int, int, int, int] | None = None
    binning: int = 1
    contact_setpoint_nm: float = 20.0
    imaging_gap_nm: float = 0.0
    approach_speed_nm_s: float = 10_000.0
    settle_s: float = 0.005
    focus_mode: Literal["auto", "last"] = "auto"
    focus_start_nm: float = 0.0
    focus_range_nm: float = 4_000.0
    focus_steps: int = 5
    z_planes: int = 1
    z_step_nm: float = 500.0

    def __post_init__(self) -> None:
        _positive("fov_diameter_nm", self.fov_diameter_nm)
        _positive("exposure_s", self.exposure_s)
        _positive("contact_setpoint_nm", self.contact_setpoint_nm)
        _positive("approach_speed_nm_s", self.approach_speed_nm_s)
        if self.imaging_gap_nm < 0:
            raise ValueError(f"imaging_gap_nm must be >= 0, got {self.imaging_gap_nm}")
        if self.settle_s < 0:
            raise ValueError(f"settle_s must be >= 0, got {self.settle_s}")
        if not 0.0 <= self.overlap <= 0.9:
            raise ValueError(f"overlap must be within [0, 0.9], got {self.overlap}")
        if self.focus_mode not in ("auto", "last"):
            raise ValueError(f"focus_mode must be 'auto' or 'last', got {self.focus_mode!r}")
        if self.focus_steps < 3:
            raise ValueError(f"focus_steps must be >= 3 to locate a peak, got {self.focus_steps}")
        _positive("focus_range_nm", self.focus_range_nm)
        if not 1 <= self.z_planes <= 101:
            raise ValueError(f"z_planes must be within 1..101, got {self.z_planes}")
        if self.z_planes > 1:
            _positive("z_step_nm", self.z_step_nm)
        if self.binning not in (1, 2, 4):
            raise ValueError(f"binning must be 1, 2 or 4, got {self.binning}")
        if self.roi is not None:
            x0, y0, x1, y1 = self.roi
            if not (0 <= x0 < x1 and 0 <= y0 < y1):
                raise ValueError(f"roi must be (x0, y0, x1, y1) with 0 <= x0 < x1 and 0 <= y0 < y1, got {self.roi}")


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")


# --- messages -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Configure:
    """Set up the camera once before the first point."""
    exposure_s: float
    roi: tuple[int, int, int, int] | None
    binning: int


@dataclass(frozen=True)
class BeginPoint:
    """Start of one grid point's unit of work (a fault replays from here)."""
    point: GridPoint


@dataclass(frozen=True)
class MoveXY:
    """Move the sample (piezo X, Y) to an absolute position, with Z retracted first."""
    x_nm: float
    y_nm: float


@dataclass(frozen=True)
class Settle:
    seconds: float


@dataclass(frozen=True)
class Approach:
    """Raise the sample in Z at ``speed_nm_s`` until the deflection reaches ``setpoint_nm``."""
    setpoint_nm: float
    speed_nm_s: float


@dataclass(frozen=True)
class BackOff:
    """Lower the sample ``gap_nm`` from the contact position to the imaging gap."""
    gap_nm: float


@dataclass(frozen=True)
class Focus:
    """Bring the microscope to the virtual-image plane.

    ``mode="auto"``: sweep ``steps`` focus positions over ``range_nm`` around the last good
    focus (or ``start_nm``) and keep the sharpest; ``"last"``: reuse the last good focus.
    """
    mode: Literal["auto", "last"]
    range_nm: float
    steps: int
    start_nm: float


@dataclass(frozen=True)
class FocusOffset:
    """Move the focus stage to best focus + ``offset_nm`` (one Z-stack plane)."""
    offset_nm: float


@dataclass(frozen=True)
class Trigger:
    pass


@dataclass(frozen=True)
class Read:
    """Collect the triggered frame as plane ``plane`` of this point."""
    plane: int


@dataclass(frozen=True)
class Fuse:
    """Fuse the planes read at this point into one extended-depth-of-field frame."""
    pass


@dataclass(frozen=True)
class Save:
    """Persist this point's frame (and stack) before anything else moves."""
    point: GridPoint


@dataclass(frozen=True)
class Checkpoint:
    """A safe place to pause or abort: ``done`` points of the plan are saved."""
    index: int


Msg = (Configure | BeginPoint | MoveXY | Settle | Approach | BackOff | Focus | FocusOffset
       | Trigger | Read | Fuse | Save | Checkpoint)


def grid_points(spec: ScanSpec) -> tuple[GridPoint, ...]:
    """The grid a plan visits, in acquisition order."""
    return serpentine_grid(origin_nm=spec.origin_nm, area_nm=spec.area_nm,
                           fov_diameter_nm=spec.fov_diameter_nm, overlap=spec.overlap)


def raster_plan(spec: ScanSpec, *, skip: Iterable[int] = ()) -> Iterator[Msg]:
    """Yield the messages of a serpentine raster scan, leaving out points whose index is in ``skip``.

    Per point: BeginPoint, MoveXY, Settle, Approach, BackOff, Focus, then either Trigger, Read(0)
    or, for a Z-stack, (FocusOffset, Trigger, Read(i)) per plane followed by Fuse; then Save and
    Checkpoint. ``skip`` is how a resumed scan avoids duplicates.
    """
    skipped = frozenset(skip)
    yield Configure(exposure_s=spec.exposure_s, roi=spec.roi, binning=spec.binning)
    offsets = z_stack_offsets_nm(planes=spec.z_planes, step_nm=spec.z_step_nm)
    for point in grid_points(spec):
        if point.index in skipped:
            continue
        yield BeginPoint(point)
        yield MoveXY(point.x_nm, point.y_nm)
        yield Settle(spec.settle_s)
        yield Approach(setpoint_nm=spec.contact_setpoint_nm, speed_nm_s=spec.approach_speed_nm_s)
        yield BackOff(gap_nm=spec.imaging_gap_nm)
        yield Focus(mode=spec.focus_mode, range_nm=spec.focus_range_nm, steps=spec.focus_steps,
                    start_nm=spec.focus_start_nm)
        if spec.z_planes == 1:
            yield Trigger()
            yield Read(plane=0)
        else:
            for plane, offset in enumerate(offsets):
                yield FocusOffset(offset)
                yield Trigger()
                yield Read(plane=plane)
            yield Fuse()
        yield Save(point)
        yield Checkpoint(point.index)
