"""The scan engine: executes plan messages against devices, owns the scan's state machine.

States: ``idle → running ⇄ paused → completed | failed | aborted``. ``run(spec)`` blocks in the
calling (hardware) thread until the scan ends; ``pause``, ``resume`` and ``abort`` may be called
from any other thread and return at once. Pause takes effect at the next checkpoint (after a
frame is saved), abort between any two messages; both retract the sphere. One safety wrapper
retracts it on every exit, whatever happened.

Faults: an ``InstrumentError`` inside a grid point is retried per ``RetryPolicy`` by replaying the
point from its start (nothing of a point is kept before its ``Save``); when retries run out the
scan pauses with the reason. Contact never reached (``ContactError``) pauses at once. A resumed
run — even in a new process — skips the indices the store already holds, so no frame is lost
or saved twice. No Django here: the shell passes a ``FrameStore`` and callbacks.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from instruments import plans as P
from instruments.devices import Camera, Feedback, FocusStage, Light, Piezo
from instruments.engine_actions import PointContext, approach, autofocus
from instruments.errors import ContactError, InstrumentError, LimitError
from instruments.focus import fuse_extended_depth, sharpness
from instruments.framestore import CapturedFrame, FrameStore

__all__ = ["ScanEngine", "ScanState", "ScanResult", "RetryPolicy", "Timeouts", "Devices"]

log = logging.getLogger(__name__)


class ScanState(enum.StrEnum):
    IDLE = "idle"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    ABORTED = "aborted"


@dataclass(frozen=True)
class RetryPolicy:
    """A faulty grid point is tried ``attempts`` times in all, ``delay_s`` apart, then the scan pauses."""
    attempts: int = 3
    delay_s: float = 0.05

    def __post_init__(self):
        if self.attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {self.attempts}")
        if self.delay_s < 0:
            raise ValueError(f"delay_s must be >= 0, got {self.delay_s}")


@dataclass(frozen=True)
class Timeouts:
    """Seconds allowed for a piezo move, a focus move, and a frame beyond its exposure."""
    piezo_s: float = 5.0
    focus_s: float = 10.0
    camera_extra_s: float = 2.0


@dataclass(frozen=True)
class Devices:
    piezo: Piezo
    focus: FocusStage
    camera: Camera
    feedback: Feedback
    light: Light | None = None


@dataclass(frozen=True)
class ScanResult:
    state: ScanState
    saved: int            # frames on the store for this plan
    total: int            # grid points in the plan
    reason: str = ""


class _Aborted(Exception):
    pass


@dataclass
class _Control:
    lock: threading.Condition = field(default_factory=threading.Condition)
    pause_reason: str | None = None
    abort: bool = False


class ScanEngine:
    """Run one plan at a time on one set of devices.

    Parameters
    ----------
    devices : Devices
    store : FrameStore — ``save`` must be durable when it returns.
    on_event : called with ``{"type": ..., "payload": {...}}`` for ``state``, ``progress``
        (done, total, eta_s), ``frame_saved`` and ``fault``; called in the engine's thread, keep it fast.
    on_live_frame : called with each frame read, ``(rows, cols) uint16``; keep it fast (hand off).
    retry, timeouts : fault policy.
    approach_margin_nm : the approach starts this far below the last contact Z.
    approach_lookahead_nm : how far ahead of the rising sample the approach's Z target may run:
        the most it can overshoot contact if the host stalls.
    setpoint_tolerance_nm : the deflection held is within [set-point, set-point + this].
    """

    def __init__(self, devices: Devices, store: FrameStore, *, on_event: Callable[[dict], None] | None = None,
                 on_live_frame: Callable[[np.ndarray], None] | None = None, retry: RetryPolicy = RetryPolicy(),
                 timeouts: Timeouts = Timeouts(), approach_margin_nm: float = 200.0,
                 approach_lookahead_nm: float = 100.0, setpoint_tolerance_nm: float = 5.0):
        self.devices = devices
        self.store = store
        self.on_event = on_event or (lambda event: None)
        self.on_live_frame = on_live_frame or (lambda frame: None)
        self.retry = retry
        self.timeouts = timeouts
        self.approach_margin_nm = approach_margin_nm
        self.approach_lookahead_nm = approach_lookahead_nm
        self.setpoint_tolerance_nm = setpoint_tolerance_nm
        self._ctl = _Control()
        self._state = ScanState.IDLE
        self._z_retract_nm = devices.piezo.travel_nm()[2][0]
        self._last_contact_z: float | None = None
        self._last_focus: float | None = None
        self._lifting = False  # a retract was commanded and not yet waited for
        self._focus_at: float | None = None  # where this engine last left the focus stage
        self._exposure_s = 0.01

    # --- control, from any thread --------------------------------------------------------
    @property
    def state(self) -> ScanState:
        return self._state

    def pause(self, reason: str = "Paused by a user.") -> None:
        """Ask the scan to pause at the next checkpoint."""
        with self._ctl.lock:
            if self._ctl.pause_reason is None:
                self._ctl.pause_reason = reason
            self._ctl.lock.notify_all()

    def resume(self) -> None:
        with self._ctl.lock:
            self._ctl.pause_reason = None
            self._ctl.lock.notify_all()

    def abort(self) -> None:
        """End the scan at the next message boundary (also from paused); saved frames stay."""
        with self._ctl.lock:
            self._ctl.abort = True
            self._ctl.lock.notify_all()

    # --- run ------------------------------------------------------------------------------
    def run(self, spec: P.ScanSpec) -> ScanResult:
        """Execute ``spec`` until completed, aborted or failed; blocks while paused."""
        points = P.grid_points(spec)
        total = len(points)
        valid = {p.index for p in points}
        with self._ctl.lock:
            self._ctl.abort = False
        self._t_start, self._done_at_start = time.monotonic(), None
        self._focus_at = None
        reason = ""
        try:
            self._preflight(spec, points)
            done = self.store.saved_indices() & valid
            self._done_at_start = len(done)
            self._set_state(ScanState.RUNNING)
            self._progress(len(done), total)
            with self._safety():
                self._wait_if_paused()
                for group in _group_by_point(P.raster_plan(spec, skip=done)):
                    self._run_group(group, total)
            state = ScanState.COMPLETED
        except _Aborted:
            state, reason = ScanState.ABORTED, "Aborted by a user."
        except LimitError as exc:
            state, reason = ScanState.FAILED, str(exc)
        except Exception as exc:
            log.exception("scan failed")
            state, reason = ScanState.FAILED, f"{type(exc).__name__}: {exc}"
        saved = len(self.store.saved_indices() & valid)
        self._set_state(state, reason)
        return ScanResult(state=state, saved=saved, total=total, reason=reason)

    def _preflight(self, spec: P.ScanSpec, points) -> None:
        (x_lo, x_hi), (y_lo, y_hi), _ = self.devices.piezo.travel_nm()
        outside = [p.index for p in points if not (x_lo <= p.x_nm <= x_hi and y_lo <= p.y_nm <= y_hi)]
        if outside:
            raise LimitError(f"{len(outside)} grid points lie outside the piezo XY travel "
                             f"[{x_lo:.0f}, {x_hi:.0f}] × [{y_lo:.0f}, {y_hi:.0f}] nm (first: index {outside[0]})")

    def _run_group(self, group: list, total: int) -> None:
        attempt = 0
        while True:
            self._check_abort()
            ctx = PointContext()
            try:
                for msg in group:
                    self._check_abort()
                    self._execute(msg, ctx, total)
                return
            except ContactError as exc:
                self._fault(exc, ctx, attempt=attempt + 1, giving_up=True)
                self._pause_now(f"contact not reached: {exc}")
                attempt = 0
            except InstrumentError as exc:
                attempt += 1
                giving_up = attempt >= self.retry.attempts
                self._fault(exc, ctx, attempt=attempt, giving_up=giving_up)
                if giving_up:
                    self._pause_now(f"{exc} (after {attempt} attempts)")
                    attempt = 0
                else:
                    time.sleep(self.retry.delay_s)

    # --- messages -------------------------------------------------------------------------
    def _execute(self, msg, ctx: PointContext, total: int) -> None:
        d = self.devices
        t = self.timeouts
        if isinstance(msg, P.Configure):
            d.camera.configure(exposure_s=msg.exposure_s, roi=msg.roi, binning=msg.binning)
            self._exposure_s = msg.exposure_s
        elif isinstance(msg, P.BeginPoint):
            ctx.point = msg.point
        elif isinstance(msg, P.MoveXY):
            self._retract(already_moving=self._lifting)
            d.piezo.move_nm(x=msg.x_nm, y=msg.y_nm)
            d.piezo.wait_on_target(timeout_s=t.piezo_s)
        elif isinstance(msg, P.Settle):
            if msg.seconds > 0:
                time.sleep(msg.seconds)
        elif isinstance(msg, P.Approach):
            ctx.contact_z_nm, ctx.deflection_nm = approach(
                d.piezo, d.feedback, setpoint_nm=msg.setpoint_nm, speed_nm_s=msg.speed_nm_s,
                start_nm=self._last_contact_z, margin_nm=self.approach_margin_nm,
                lookahead_nm=self.approach_lookahead_nm, tolerance_nm=self.setpoint_tolerance_nm,
                timeout_s=t.piezo_s, check=self._check_abort)
            self._last_contact_z = ctx.contact_z_nm
        elif isinstance(msg, P.BackOff):
            if msg.gap_nm > 0:  # imaging in contact needs no move (and no settling)
                d.piezo.move_nm(z=max(self._z_retract_nm, ctx.contact_z_nm - msg.gap_nm))
                d.piezo.wait_on_target(timeout_s=t.piezo_s)
        elif isinstance(msg, P.Focus):
            if msg.mode == "last" and self._last_focus is not None:
                ctx.focus_nm = self._last_focus
                self._focus_to(ctx.focus_nm)
            else:
                centre = self._last_focus if self._last_focus is not None else msg.start_nm
                self._focus_at = None
                ctx.focus_nm = autofocus(d.focus, d.camera, centre_nm=centre, range_nm=msg.range_nm,
                                         steps=msg.steps, timeout_s=t.focus_s,
                                         frame_timeout_s=self._exposure_s + t.camera_extra_s,
                                         on_frame=self.on_live_frame, check=self._check_abort)
                self._focus_at = ctx.focus_nm  # autofocus leaves the stage at its answer
            self._last_focus = ctx.focus_nm
        elif isinstance(msg, P.FocusOffset):
            self._focus_to(ctx.focus_nm + msg.offset_nm)
            ctx.z_positions.append(ctx.focus_nm + msg.offset_nm)
        elif isinstance(msg, P.Trigger):
            d.camera.trigger()
            ctx.measured_xyz_nm = d.piezo.position_nm()  # where the sample is during the exposure
        elif isinstance(msg, P.Read):
            frame = d.camera.read(timeout_s=self._exposure_s + t.camera_extra_s)
            ctx.planes.append(frame)
            self.on_live_frame(frame)
        elif isinstance(msg, P.Fuse):
            ctx.image = fuse_extended_depth(ctx.planes)
            self._focus_to(ctx.focus_nm)  # leave the stage at best focus for the next point
        elif isinstance(msg, P.Save):
            # Every plane is read: lift the sphere while the frame is written, so the disk's time
            # hides under the retract's; the XY stage still moves only after the save returns.
            d.piezo.move_nm(z=self._z_retract_nm)
            self._lifting = True
            self._save(msg.point, ctx, total)
        elif isinstance(msg, P.Checkpoint):
            self._wait_if_paused()
        else:
            raise TypeError(f"unknown plan message {msg!r}")

    def _save(self, point, ctx: PointContext, total: int) -> None:
        stack = len(ctx.planes) > 1
        image = ctx.image if stack else ctx.planes[-1]
        frame = CapturedFrame(
            index=point.index, row=point.row, col=point.col, commanded_xy_nm=(point.x_nm, point.y_nm),
            measured_xyz_nm=ctx.measured_xyz_nm, focus_nm=ctx.focus_nm, focus_score=sharpness(image),
            deflection_nm=ctx.deflection_nm, contact_z_nm=ctx.contact_z_nm, exposure_s=self._exposure_s,
            captured_at=datetime.now(UTC), image=image,
            z_stack=tuple(ctx.planes) if stack else None, z_positions_nm=tuple(ctx.z_positions))
        self.store.save(frame)
        done = len(self.store.saved_indices())
        self._emit("frame_saved", index=point.index, row=point.row, col=point.col,
                   commanded_xy_nm=[point.x_nm, point.y_nm], focus_nm=ctx.focus_nm)
        self._progress(done, total)

    def _focus_to(self, z_nm: float) -> None:
        """Move the focus stage, unless this engine left it there (a move in place still settles)."""
        if z_nm != self._focus_at:
            self._focus_at = None  # unknown until the move is done
            self.devices.focus.move_to_nm(z_nm)
            self.devices.focus.wait_done(timeout_s=self.timeouts.focus_s)
            self._focus_at = z_nm

    # --- safety, pause, events -------------------------------------------------------------
    def _retract(self, *, already_moving: bool = False) -> None:
        piezo = self.devices.piezo
        if not already_moving:
            piezo.move_nm(z=self._z_retract_nm)
        piezo.wait_on_target(timeout_s=self.timeouts.piezo_s)
        self._lifting = False

    class _SafetyWrapper:
        def __init__(self, engine: ScanEngine):
            self.engine = engine

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            try:
                self.engine._retract()
            except Exception as err:  # the original exit reason matters more; report this one too
                log.error("could not retract the sphere: %s", err)
                self.engine._emit("fault", reason=f"could not retract the sphere: {err}", index=None)
            return False

    def _safety(self) -> ScanEngine._SafetyWrapper:
        """The one place that guarantees the sample is lowered away from the sphere on exit."""
        return ScanEngine._SafetyWrapper(self)

    def _check_abort(self) -> None:
        if self._ctl.abort:
            raise _Aborted

    def _pause_now(self, reason: str) -> None:
        with self._ctl.lock:
            self._ctl.pause_reason = reason
        self._wait_if_paused()

    def _wait_if_paused(self) -> None:
        with self._ctl.lock:
            reason = self._ctl.pause_reason
        if reason is None:
            self._check_abort()
            return
        try:
            self._retract()
        except InstrumentError as exc:
            self._emit("fault", reason=f"could not retract before pausing: {exc}", index=None)
        self._set_state(ScanState.PAUSED, reason)
        self._focus_at = None  # a paused instrument can be jogged: trust the stage, not memory
        with self._ctl.lock:
            while self._ctl.pause_reason is not None and not self._ctl.abort:
                self._ctl.lock.wait()
        self._check_abort()
        self._set_state(ScanState.RUNNING)

    def _fault(self, exc: Exception, ctx: PointContext, *, attempt: int, giving_up: bool) -> None:
        index = ctx.point.index if ctx.point is not None else None
        self._emit("fault", reason=str(exc), error=type(exc).__name__, index=index, attempt=attempt,
                   will_retry=not giving_up)

    def _set_state(self, state: ScanState, reason: str = "") -> None:
        self._state = state
        self._emit("state", state=state.value, reason=reason)

    def _progress(self, done: int, total: int) -> None:
        eta = None
        new = done - (self._done_at_start or 0)
        if new > 0 and done < total:
            eta = (time.monotonic() - self._t_start) / new * (total - done)
        self._emit("progress", done=done, total=total, eta_s=eta)

    def _emit(self, kind: str, **payload) -> None:
        try:
            self.on_event({"type": kind, "payload": payload})
        except Exception:  # a broken listener must never stop the hardware
            log.exception("on_event callback failed")


def _group_by_point(messages: Iterable) -> Iterator[list]:
    """Cut the message stream into units of work ending at each Checkpoint."""
    group: list = []
    for msg in messages:
        group.append(msg)
        if isinstance(msg, P.Checkpoint):
            yield group
            group = []
    if group:
        yield group
