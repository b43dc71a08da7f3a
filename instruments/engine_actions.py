"""Multi-step device actions the engine runs for one message: contact approach and autofocus."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from instruments.errors import ContactError
from instruments.focus import peak_focus_nm, sharpness

__all__ = ["PointContext", "approach", "autofocus"]


@dataclass
class PointContext:
    """What the engine has learnt so far about the grid point in progress."""
    point: object = None
    contact_z_nm: float = 0.0
    deflection_nm: float = 0.0
    focus_nm: float = 0.0
    measured_xyz_nm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    planes: list = field(default_factory=list)
    z_positions: list = field(default_factory=list)
    image: np.ndarray | None = None


def _z_step(piezo, feedback, z: float, timeout_s: float) -> float:
    piezo.move_nm(z=z)
    piezo.wait_on_target(timeout_s=timeout_s)
    return feedback.deflection_nm()


def approach(piezo, feedback, *, setpoint_nm: float, step_nm: float, start_nm: float | None,
             margin_nm: float, coarse_step_nm: float, timeout_s: float,
             check: Callable[[], None]) -> tuple[float, float]:
    """Raise the sample in Z until the deflection reaches ``setpoint_nm``.

    Starts ``margin_nm`` below the last contact (``start_nm``) with fine steps; with no contact
    known, first climbs in coarse steps, stops at the first deflection, drops one coarse step and
    continues fine — so the cantilever is never pushed more than one step past the set-point.

    Returns ``(contact_z_nm, deflection_nm)``. Raises ``ContactError`` if the top of the Z travel
    is reached without contact, or the cantilever is bent even fully retracted.
    """
    z_lo, z_hi = piezo.travel_nm()[2]
    if start_nm is None:
        z = z_lo
        while True:
            check()
            deflection = _z_step(piezo, feedback, z, timeout_s)
            if deflection >= setpoint_nm:
                break
            if z >= z_hi:
                raise ContactError(f"no contact within the Z travel: at {z_hi:.0f} nm the deflection is "
                                   f"{deflection:.1f} nm, below the set-point {setpoint_nm:.1f} nm")
            z = min(z + coarse_step_nm, z_hi)
        z = max(z_lo, z - coarse_step_nm)
    else:
        z = max(z_lo, start_nm - margin_nm)
    # start below contact: if already bent (the sample rose), back off first
    while (deflection := _z_step(piezo, feedback, z, timeout_s)) >= setpoint_nm:
        check()
        if z <= z_lo:
            raise ContactError(f"the cantilever is deflected {deflection:.1f} nm even with Z fully retracted")
        z = max(z_lo, z - 4 * margin_nm)
    while True:
        check()
        if z >= z_hi:
            raise ContactError(f"no contact within the Z travel: at {z_hi:.0f} nm the deflection is "
                               f"{deflection:.1f} nm, below the set-point {setpoint_nm:.1f} nm")
        z = min(z + step_nm, z_hi)
        deflection = _z_step(piezo, feedback, z, timeout_s)
        if deflection >= setpoint_nm:
            return z, deflection


def autofocus(focus, camera, *, centre_nm: float, range_nm: float, steps: int, timeout_s: float,
              frame_timeout_s: float, on_frame: Callable[[np.ndarray], None],
              check: Callable[[], None], max_sweeps: int = 3) -> float:
    """Sweep the focus stage over ``range_nm`` around ``centre_nm``; return the sharpest position.

    A peak on the edge of the sweep re-centres the sweep there (at most ``max_sweeps`` sweeps),
    so a poor first guess still converges. Leaves the stage at the returned position.
    """
    lo, hi = focus.travel_nm()
    best = centre_nm
    for _ in range(max_sweeps):
        positions = np.clip(np.linspace(centre_nm - range_nm / 2, centre_nm + range_nm / 2, steps), lo, hi)
        positions = np.unique(positions)
        scores = []
        for z in positions:
            check()
            focus.move_to_nm(float(z))
            focus.wait_done(timeout_s=timeout_s)
            camera.trigger()
            frame = camera.read(timeout_s=frame_timeout_s)
            on_frame(frame)
            scores.append(sharpness(frame))
        if len(positions) < 3:
            best = float(positions[int(np.argmax(scores))])
            break
        best = peak_focus_nm(positions, scores)
        on_edge = best in (positions[0], positions[-1]) and best not in (lo, hi)
        if not on_edge:
            break
        centre_nm = best
    focus.move_to_nm(best)
    focus.wait_done(timeout_s=timeout_s)
    return best
