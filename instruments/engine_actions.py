"""Multi-step device actions the engine runs for one message: contact approach and autofocus."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from instruments.errors import ContactError, DeviceTimeout
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


def _z_step(piezo, feedback, z: float, timeout_s: float, velocity_nm_s: float | None = None) -> float:
    piezo.move_nm(z=z, velocity_nm_s=velocity_nm_s)
    piezo.wait_on_target(timeout_s=timeout_s)
    return feedback.deflection_nm()


def approach(piezo, feedback, *, setpoint_nm: float, speed_nm_s: float, start_nm: float | None,
             margin_nm: float, lookahead_nm: float, tolerance_nm: float, timeout_s: float,
             check: Callable[[], None]) -> tuple[float, float]:
    """Raise the sample in Z until the deflection reaches ``setpoint_nm``, and hold it there.

    As an AFM controller approaches: Z rises at a constant ``speed_nm_s`` while the deflection is
    read continuously, so the host's round trips overlap the motion instead of adding to it. The
    commanded target runs at most ``lookahead_nm`` ahead of the sample and is extended as it
    rises, so a host that stalls leaves the piezo stopped at most that far past contact. Once
    the deflection crosses the set-point the sample is stopped; at rest, position minus
    deflection is the contact Z (the sample is rigid), and one move sets the deflection to the
    set-point within ``tolerance_nm``.

    Starts ``margin_nm`` below the last contact (``start_nm``) or, with none known, at the bottom
    of the travel. Returns ``(contact_z_nm, deflection_nm)``: the Z held and its deflection.
    Raises ``ContactError`` if the top of the Z travel is reached without contact, or the
    cantilever is bent even fully retracted.
    """
    z_lo, z_hi = piezo.travel_nm()[2]
    z = z_lo if start_nm is None else max(z_lo, start_nm - margin_nm)
    piezo.move_nm(z=z)
    piezo.wait_on_target(timeout_s=timeout_s)
    for attempt in range(4):  # a stop that lost contact sweeps again from there, estimating safe-side
        z, deflection = _sweep_to_contact(piezo, feedback, z, setpoint_nm=setpoint_nm,
                                          hold_nm=setpoint_nm + tolerance_nm / 2, speed_nm_s=speed_nm_s,
                                          lookahead_nm=lookahead_nm, z_lo=z_lo, z_hi=z_hi, timeout_s=timeout_s,
                                          check=check, safe_side=attempt > 0)
        # at rest: z − deflection is where contact begins (the sample is rigid)
        for _ in range(3):
            if setpoint_nm <= deflection <= setpoint_nm + tolerance_nm or (z >= z_hi and deflection >= setpoint_nm):
                return z, deflection
            if deflection <= 0:
                break
            up = setpoint_nm + tolerance_nm / 2 - deflection
            z = min(z_hi, z + up)
            deflection = _z_step(piezo, feedback, z, timeout_s, speed_nm_s if up > 0 else None)
    raise ContactError(f"could not hold the deflection at the set-point {setpoint_nm:.1f} nm "
                       f"(last {deflection:.1f} nm at z {z:.0f} nm)")


def _sweep_to_contact(piezo, feedback, z: float, *, setpoint_nm: float, hold_nm: float, speed_nm_s: float,
                      lookahead_nm: float, z_lo: float, z_hi: float, timeout_s: float,
                      check: Callable[[], None], safe_side: bool = False) -> tuple[float, float]:
    """Rise from ``z`` (where the sample rests) at ``speed_nm_s`` until the deflection reaches the
    set-point; stop where it is ``hold_nm``, and return ``(z, deflection)`` read at rest. Already
    past the set-point at ``z`` (the sample rose since the last point), it stops lower instead.
    ``safe_side`` takes the Z read after the deflection as where it was read: never short of
    contact, at the cost of up to speed × two round trips over ``hold_nm``."""
    z_before, t_before = z, time.monotonic()  # the sample rests at z until the move below reaches it
    deadline = t_before + (z_hi - z) / speed_nm_s + timeout_s
    target = min(z_hi, z + lookahead_nm)
    piezo.move_nm(z=target, velocity_nm_s=speed_nm_s)
    while True:
        check()
        t0 = time.monotonic()
        deflection = feedback.deflection_nm()
        t1 = time.monotonic()
        z_now = piezo.position_nm()[2]
        t_now = (t1 + time.monotonic()) / 2  # each reading taken mid-way through its round trip
        if deflection >= setpoint_nm:
            if z_now - deflection + setpoint_nm < z_lo:
                raise ContactError(f"the cantilever is deflected {deflection:.1f} nm even with Z fully retracted")
            break
        if target >= z_hi and z_now >= z_hi - 1.0 and piezo.on_target():
            deflection = feedback.deflection_nm()
            if deflection >= setpoint_nm:
                break
            raise ContactError(f"no contact within the Z travel: at {z_hi:.0f} nm the deflection is "
                               f"{deflection:.1f} nm, below the set-point {setpoint_nm:.1f} nm")
        if target < z_hi and target - z_now < lookahead_nm / 2:
            target = min(z_hi, z_now + lookahead_nm)
            piezo.move_nm(z=target, velocity_nm_s=speed_nm_s)
        if time.monotonic() > deadline:
            raise DeviceTimeout(f"piezo: approach did not reach contact in time (z {z_now:.0f} nm)")
        z_before, t_before = z_now, t_now
    # Z was read before and after the deflection; at constant speed, interpolating in time gives
    # where the sample was when the deflection was read (each reading taken mid-way through its
    # round trip), and that minus the deflection is the contact Z. The stop moves away from the
    # sample, so it may go at the travel speed.
    fraction = min(1.0, max(0.0, ((t0 + t1) / 2 - t_before) / max(t_now - t_before, 1e-9)))
    z_read = z_now if safe_side else z_before + fraction * (z_now - z_before)
    z = min(z_hi, z_read - deflection + hold_nm)
    return z, _z_step(piezo, feedback, z, timeout_s)


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
