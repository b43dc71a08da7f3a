"""Trajectory maths for raster scans: grid step from the sphere's field of view, serpentine order.

Pure functions, nanometres throughout. ``(x, y)`` are sample-stage coordinates;
``(row, col)`` index the grid (row along y, col along x).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["GridPoint", "usable_side_nm", "step_from_fov", "serpentine_grid", "z_stack_offsets_nm"]


@dataclass(frozen=True)
class GridPoint:
    """One frame position. ``index`` is the acquisition order (0-based)."""

    index: int
    row: int
    col: int
    x_nm: float
    y_nm: float


def usable_side_nm(fov_diameter_nm: float) -> float:
    """Side of the square inscribed in the sphere's circular field of view (D / sqrt 2)."""
    if not fov_diameter_nm > 0:
        raise ValueError(f"fov_diameter_nm must be > 0, got {fov_diameter_nm}")
    return fov_diameter_nm / math.sqrt(2.0)


def step_from_fov(*, fov_diameter_nm: float, overlap: float) -> float:
    """Grid step so neighbouring usable squares overlap by ``overlap`` (fraction in [0, 0.9])."""
    if not 0.0 <= overlap <= 0.9:
        raise ValueError(f"overlap must be within [0, 0.9], got {overlap}")
    return usable_side_nm(fov_diameter_nm) * (1.0 - overlap)


def _count(extent_nm: float, side_nm: float, step_nm: float) -> int:
    # fewest frames n with (n-1)*step + side >= extent; a zero extent is one frame.
    if extent_nm <= side_nm:
        return 1
    return int(math.ceil((extent_nm - side_nm) / step_nm - 1e-9)) + 1


def serpentine_grid(*, origin_nm: tuple[float, float], area_nm: tuple[float, float],
                    fov_diameter_nm: float, overlap: float) -> tuple[GridPoint, ...]:
    """Frame centres covering a rectangle, in serpentine (boustrophedon) order.

    Parameters
    ----------
    origin_nm : (x, y)
        Lower-left corner of the area to cover, stage coordinates in nm.
    area_nm : (width, height)
        Size of the area in nm (>= 0).
    fov_diameter_nm : float
        Diameter of the sphere's circular field of view projected on the sample, nm.
    overlap : float
        Fraction of the usable square shared by neighbours, in [0, 0.9].

    Returns
    -------
    tuple of GridPoint
        Row 0 runs +x, row 1 runs -x, and so on; ``index`` follows that order. The grid is
        centred on the area, so it overhangs evenly when the area is not a whole number of steps.
    """
    width, height = area_nm
    if width < 0 or height < 0:
        raise ValueError(f"area_nm must be non-negative, got {area_nm}")
    side = usable_side_nm(fov_diameter_nm)
    step = step_from_fov(fov_diameter_nm=fov_diameter_nm, overlap=overlap)
    n_cols, n_rows = _count(width, side, step), _count(height, side, step)
    cx0 = origin_nm[0] + width / 2 - (n_cols - 1) * step / 2
    cy0 = origin_nm[1] + height / 2 - (n_rows - 1) * step / 2
    points = []
    for row in range(n_rows):
        cols = range(n_cols) if row % 2 == 0 else range(n_cols - 1, -1, -1)
        for col in cols:
            points.append(GridPoint(index=len(points), row=row, col=col,
                                    x_nm=cx0 + col * step, y_nm=cy0 + row * step))
    return tuple(points)


def z_stack_offsets_nm(*, planes: int, step_nm: float) -> tuple[float, ...]:
    """Focus offsets of a Z-stack centred on best focus: ``planes`` values ``step_nm`` apart."""
    if planes < 1:
        raise ValueError(f"planes must be >= 1, got {planes}")
    if planes > 1 and not step_nm > 0:
        raise ValueError(f"step_nm must be > 0 for a stack, got {step_nm}")
    return tuple((i - (planes - 1) / 2) * step_nm for i in range(planes))
