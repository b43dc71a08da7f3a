"""PI E-727 + P-733.3CL through ``pipython``, behind the ``Piezo`` and ``Feedback`` protocols.

Uses ``GCSDevice(gateway=PISocket(host, port))`` (or ``PISerial``) so no PI DLL is needed.
Positions cross this boundary in nm; the controller speaks µm. GCS errors are mapped to the
project's exception family: error 7 → ``LimitError``, host timeout −7 → ``DeviceTimeout``,
anything else → ``DeviceError`` carrying the GCS code.

GCS replies carry no echo of their question: one that comes after pipython gave up on it would
be read as the answer to the next (a position for ``ONT?``). After a timeout the driver falls
back in step before its next call: it drops everything up to the answer to a ``*IDN?`` of its own.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import TypeVar

from instruments.addresses import InstrumentAddress, parse_address
from instruments.errors import DeviceError, DeviceTimeout, DeviceUnavailable, LimitError

__all__ = ["E727Piezo", "E727AnalogFeedback"]

T = TypeVar("T")
_AXIS_NAMES = ("x", "y", "z")
_GCS_OUT_OF_LIMITS = 7
_GCS_COM_TIMEOUT = -7


def _gcs_call(fn: Callable[[], T], what: str) -> T:
    """Run one pipython call, translating its errors into the instrument exception family."""
    from pipython import GCSError

    try:
        return fn()
    except GCSError as exc:
        code = getattr(exc, "val", None)
        if code == _GCS_OUT_OF_LIMITS:
            raise LimitError(f"piezo: {what}: position out of travel limits (GCS error 7)") from exc
        if code == _GCS_COM_TIMEOUT:
            raise DeviceTimeout(f"piezo: {what}: E-727 did not answer in time") from exc
        raise DeviceError(f"{what}: {exc}", device="piezo", code=code) from exc
    except SystemError as exc:  # pitools.waitontarget signals its timeout this way
        raise DeviceTimeout(f"piezo: {what}: {exc}") from exc
    except OSError as exc:
        raise DeviceError(f"{what}: connection to E-727 lost ({exc})", device="piezo") from exc


class E727Piezo:
    """The sample scanner. Axes ``1 2 3`` of the E-727 are X, Y, Z.

    Parameters
    ----------
    device : pipython.GCSDevice, connected.
    axes : controller axis names for (x, y, z).
    poll_s : delay between ``ONT?`` polls while waiting on target.

    Use ``E727Piezo.connect(address)`` to open one from an address string.
    """

    def __init__(self, device, *, axes: tuple[str, str, str] = ("1", "2", "3"), poll_s: float = 0.0002):
        self.device = device
        self.axes = tuple(axes)
        self.poll_s = poll_s
        self.lost_step = False  # a reply timed out: it may still come, so fall back in step first
        self.idns_owed = 0  # replies to our own *IDN? still to come (each one must be read off)
        self._partial = ""  # the start of a line a fall-back timed out in (its end comes later)
        self.idn = _gcs_call(device.qIDN, "identify (*IDN?)").strip()
        tmn = _gcs_call(lambda: device.qTMN(list(self.axes)), "read travel (TMN?)")
        tmx = _gcs_call(lambda: device.qTMX(list(self.axes)), "read travel (TMX?)")
        self._travel_nm = tuple((float(tmn[a]) * 1000.0, float(tmx[a]) * 1000.0) for a in self.axes)
        vel = _gcs_call(lambda: device.qVEL(list(self.axes)), "read velocity (VEL?)")
        #: the velocity moves use unless told otherwise (µm/s per axis), and what the controller has now
        self.travel_velocity_um_s = {a: float(vel[a]) for a in self.axes}
        self._velocity_um_s = dict(self.travel_velocity_um_s)

    @contextlib.contextmanager
    def _unchecked(self):
        """Skip pipython's ``ERR?`` after each command: queries with valid arguments cannot fail on a
        connected E-727, and every round trip saved is time the scan gets back. Callers read ``ERR?``
        once where an error could have arisen."""
        errcheck, self.device.errcheck = self.device.errcheck, False
        try:
            yield
        finally:
            self.device.errcheck = errcheck

    def _call(self, fn: Callable[[], T], what: str) -> T:
        """``_gcs_call`` on a line in step: after a timeout, the late reply is read off first."""
        if self.lost_step:
            self._fall_in_step()
        try:
            return _gcs_call(fn, what)
        except DeviceTimeout:
            self.lost_step = True
            raise

    def _fall_in_step(self) -> None:
        """Drop every reply up to the answer to a ``*IDN?`` sent now (and to any sent before that
        timed out), and clear the error a reply read as another's may have latched (``ERR?``)."""
        gateway = self.device.messages.interface
        deadline = time.monotonic() + self.device.messages.timeout / 1000.0
        self.idns_owed += 1
        try:
            gateway.send("*IDN?\n")
        except OSError as exc:
            raise DeviceError(f"connection to E-727 lost ({exc})", device="piezo") from exc
        while True:
            *lines, self._partial = self._partial.split("\n")
            self.idns_owed -= sum(line.strip() == self.idn for line in lines)
            if self.idns_owed <= 0:
                break
            if time.monotonic() > deadline:
                raise DeviceTimeout("piezo: E-727 did not answer in time, nor the replies it owed")
            self._partial += gateway.read()  # '' after a short wait when nothing came (pipython's PISocket)
        self.idns_owed, self.lost_step, self._partial = 0, False, ""
        with self._unchecked():
            _gcs_call(self.device.qERR, "clear the error (ERR?)")

    @classmethod
    def connect(cls, address: str | InstrumentAddress, *, velocity_um_s: float | None = None,
                timeout_s: float = 7.0, **kwargs) -> E727Piezo:
        """Open the controller at ``address`` (``gcs+tcp://…`` or ``gcs+serial://…``), switch servos on."""
        if isinstance(address, str):
            address = parse_address(address, role="piezo")
        from pipython import GCSDevice, pitools

        try:
            if address.transport == "tcp":
                gateway = _socket_gateway(address.host, address.port)
            else:
                from pipython.pidevice.interfaces.piserial import PISerial
                gateway = PISerial(port=address.path, baudrate=address.baud)
        except OSError as exc:
            raise DeviceUnavailable(f"cannot reach the PI E-727 at {address.text}: {exc}") from None
        except Exception as exc:  # pyserial's SerialException is not an OSError
            raise DeviceUnavailable(f"cannot open the PI E-727 at {address.text}: {exc}") from None
        gateway.settimeout(int(timeout_s * 1000))
        device = GCSDevice(gateway=gateway)
        try:
            _gcs_call(lambda: pitools.startup(device, servostates=True), "startup (servo on)")
            piezo = cls(device, **kwargs)
            if velocity_um_s is not None:
                _gcs_call(lambda: device.VEL(list(piezo.axes), [velocity_um_s] * 3), "set velocity")
                piezo.travel_velocity_um_s = dict.fromkeys(piezo.axes, float(velocity_um_s))
                piezo._velocity_um_s = dict(piezo.travel_velocity_um_s)
        except Exception:
            _close_device(device)
            raise
        return piezo

    def travel_nm(self):
        return self._travel_nm

    def move_nm(self, *, x: float | None = None, y: float | None = None, z: float | None = None,
                velocity_nm_s: float | None = None) -> None:
        targets = {}
        for name, axis, value, (lo, hi) in zip(_AXIS_NAMES, self.axes, (x, y, z), self._travel_nm, strict=False):
            if value is None:
                continue
            if not lo - 1e-6 <= value <= hi + 1e-6:
                raise LimitError(f"piezo {name}={value:.1f} nm is outside travel [{lo:.0f}, {hi:.0f}] nm")
            targets[axis] = value / 1000.0
        if not targets:
            return
        if velocity_nm_s is not None and not velocity_nm_s > 0:
            raise ValueError(f"velocity_nm_s must be > 0, got {velocity_nm_s}")
        want = {a: velocity_nm_s / 1000.0 if velocity_nm_s is not None else self.travel_velocity_um_s[a]
                for a in targets}
        change = {a: v for a, v in want.items() if v != self._velocity_um_s[a]}
        if change:  # VEL persists on the controller: send it only when it differs
            with self._unchecked():  # a VEL error is still the first error the MOV's ERR? reads
                self._call(lambda: self.device.VEL(list(change), list(change.values())), "set velocity (VEL)")
            self._velocity_um_s.update(change)
        self._call(lambda: self.device.MOV(list(targets), list(targets.values())), "move (MOV)")

    def wait_on_target(self, *, timeout_s: float) -> None:
        """Poll ``ONT?`` alone every ``poll_s`` until all axes are on target; one ``ERR?`` at the end.

        Not ``pitools.waitontarget``: that sends #7, SVO? and ONT? (each followed by pipython's
        ``ERR?``) per poll, and pipython reads a reply by spinning on a non-blocking socket, so
        every round trip costs CPU as well as time. The servos were switched on at connect."""
        deadline = time.monotonic() + timeout_s
        axes = list(self.axes)
        with self._unchecked():
            while True:
                state = self._call(lambda: self.device.qONT(axes), "ONT?")
                if all(bool(state[a]) for a in axes):
                    break
                if time.monotonic() > deadline:
                    raise DeviceTimeout(f"piezo: not on target after {timeout_s:.2f} s")
                time.sleep(self.poll_s)
        self._call(self.device.checkerror, "wait on target (ERR?)")

    def on_target(self) -> bool:
        with self._unchecked():
            state = self._call(lambda: self.device.qONT(list(self.axes)), "ONT?")
        return all(bool(state[a]) for a in self.axes)

    def position_nm(self) -> tuple[float, float, float]:
        with self._unchecked():
            pos = self._call(lambda: self.device.qPOS(list(self.axes)), "POS?")
        return tuple(float(pos[a]) * 1000.0 for a in self.axes)  # type: ignore[return-value]

    def stop(self) -> None:
        # STP always latches error 10 ("stopped"); that is the expected outcome here.
        self._call(lambda: self.device.STP(noraise=True), "stop (STP)")

    def close(self) -> None:
        _close_device(self.device)


def _socket_gateway(host: str, port: int):
    """pipython's ``PISocket``, reading replies with a blocking ``recv``.

    ``PISocket`` leaves its socket non-blocking and ``GCSMessages`` spins on it until a reply is
    complete: a core busy for every round trip, which on a shared host (and with the fakes in the
    same process, under one GIL) delays the very reply it waits for. A blocking ``recv`` with a short
    timeout returns as soon as bytes arrive and sleeps until then; on the timeout it reads as empty,
    exactly as before, so pipython's own reply timeout still applies."""
    from pipython.pidevice.interfaces.pisocket import PISocket

    class BlockingPISocket(PISocket):
        def ConnectTCPIP(self, ipaddress, ipport=50000):  # noqa: N802 (pipython's name)
            super().ConnectTCPIP(ipaddress, ipport)
            self._socket.settimeout(_RECV_WAIT_S)

    return BlockingPISocket(host=host, port=port)


_RECV_WAIT_S = 0.02


def _close_device(device) -> None:
    gateway = device.messages.interface
    # pipython keeps connection callbacks in a class-level list: a closed device left there is
    # re-probed (and fails) whenever any later gateway connects in this process.
    with contextlib.suppress(Exception):
        gateway.unregister_connection_status_changed_callback(device.connection_status_changed)
    with contextlib.suppress(Exception):
        device.close()
    # GCSDevice.__del__ closes the gateway again, which raises on a closed socket; make it a no-op.
    gateway.close = lambda: None


class E727AnalogFeedback:
    """Cantilever deflection read through an E-727 analog input (``TSP?`` on ``channel``).

    ``nm_per_unit`` converts the input's physical value (V on the lab's wiring) to nm.
    """

    def __init__(self, piezo: E727Piezo, *, channel: int = 4, nm_per_unit: float = 100.0):
        if channel < 1:
            raise ValueError(f"channel must be >= 1, got {channel}")
        if not nm_per_unit > 0:
            raise ValueError(f"nm_per_unit must be > 0, got {nm_per_unit}")
        self.piezo = piezo
        self.channel = channel
        self.nm_per_unit = nm_per_unit
        # One checked read proves the channel exists (else GCS error 15 now, not mid-scan); later
        # reads skip ERR?, as the approach reads the deflection continuously while Z moves.
        _gcs_call(lambda: piezo.device.qTSP(channel), f"read input {channel} (TSP?)")

    def deflection_nm(self) -> float:
        with self.piezo._unchecked():
            values = self.piezo._call(lambda: self.piezo.device.qTSP(self.channel), f"read input {self.channel} (TSP?)")
        return float(values[self.channel]) * self.nm_per_unit
