"""Newport ESP301 driving the IMS100V vertical stage, through ``pyserial``, behind ``FocusStage``.

The port comes from an address (``esp301+socket://host:port`` or ``esp301+serial:///dev/ttyUSB1``)
opened with ``serial.serial_for_url``, so the same code reaches the rig or the fake. Commands end
with CR, replies with CR LF. After every set command the driver reads ``TB?`` (code, time,
message) so an error surfaces at the command that caused it.

Replies carry no echo of their question, so one that comes after its timeout would be read as the
answer to the next question, and every answer after it would be one behind (an ``MD?`` "1" taken
for ``TB?`` error code 1, a "1" for a position). The driver counts the replies it gave up on and
reads them off before its next question. Where it cannot know what is in flight (a write cut
short, an owed reply that never came) it falls back in step on the answer to a ``VE?`` of its own.
"""

from __future__ import annotations

import time

from instruments.addresses import InstrumentAddress, parse_address
from instruments.errors import DeviceError, DeviceTimeout, DeviceUnavailable, LimitError

__all__ = ["ESP301FocusStage"]

_NM_PER_MM = 1e6
_LIMIT_SUBCODES = (4, 5, 6, 7)  # hardware/software limit errors are axis*100 + these


class ESP301FocusStage:
    """One ESP301 axis in mm, seen from outside in nm.

    Parameters
    ----------
    port : an open pyserial port (``serial_for_url`` result).
    axis : controller axis number (1–3).
    poll_s : delay between ``MD?`` polls while waiting for motion to finish.
    """

    def __init__(self, port, *, axis: int = 1, poll_s: float = 0.001):
        if axis not in (1, 2, 3):
            raise ValueError(f"axis must be 1, 2 or 3, got {axis}")
        self.port = port
        self.axis = axis
        self.poll_s = poll_s
        self.owed = 0  # replies to questions that timed out, still to be read off the line
        self.lost_step = False  # what is in flight is unknown: fall back in step before the next question
        self.versions_owed = 0  # replies to our own VE? still to come (each one must be read off)
        self._partial = b""  # the start of a line a fall-back timed out in (its end comes later)
        self.version = self.query("VE?")  # proves something answers the ESP300 language
        units = self.query(f"{axis}SN?")
        if units.strip() != "2":
            raise DeviceError(f"axis {axis} units are SN={units.strip()}, expected 2 (mm); set 1SN2 on the "
                              f"controller", device="focus")
        self.command(f"{axis}MO")
        lo, hi = float(self.query(f"{axis}SL?")), float(self.query(f"{axis}SR?"))
        self._travel_nm = (lo * _NM_PER_MM, hi * _NM_PER_MM)

    @classmethod
    def connect(cls, address: str | InstrumentAddress, *, timeout_s: float = 1.0, **kwargs) -> ESP301FocusStage:
        if isinstance(address, str):
            address = parse_address(address, role="focus")
        import serial

        try:
            port = serial.serial_for_url(address.serial_url(), baudrate=address.baud, timeout=timeout_s,
                                         write_timeout=timeout_s)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise DeviceUnavailable(f"cannot open the ESP301 at {address.text}: {exc}") from None
        axis = int(address.option("axis", "1"))
        try:
            return cls(port, axis=axis, **kwargs)
        except Exception:
            port.close()
            raise

    # --- wire ----------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        import serial

        try:
            self.port.write(data)
        except serial.SerialTimeoutException:
            # pyserial says so also where every byte went out (a socket port checks the clock after
            # sending): the command may have run, and its reply may come
            self.lost_step = True
            raise DeviceTimeout("focus: the line to the ESP301 did not take a command in time") from None
        except (serial.SerialException, OSError) as exc:
            raise DeviceError(f"connection to the ESP301 lost ({exc})", device="focus") from None

    def _reply(self, question: str) -> bytes:
        """The reply line to ``question`` (just sent), CR LF included."""
        reply = self.port.read_until(b"\r\n")
        if not reply.endswith(b"\r\n"):
            self.owed += 1  # it may still come: the next question must not take it for its own
            raise DeviceTimeout(f"focus: ESP301 did not answer {question} in time")
        return reply

    def _ask(self, data: bytes, question: str) -> bytes:
        """Send ``data``, which asks exactly one question, and return its reply line."""
        self._catch_up()
        self._write(data)
        return self._reply(question)

    def _catch_up(self) -> None:
        """Read off the late replies to questions that timed out, so each reply meets its question."""
        while self.owed and not self.lost_step:
            if self.port.read_until(b"\r\n").endswith(b"\r\n"):
                self.owed -= 1
            else:  # lost (the controller was reset, say), or later still
                self.lost_step = True
        if self.lost_step:
            self._fall_in_step()

    def _fall_in_step(self) -> None:
        """End any half-sent command, drop every reply up to the answer to a ``VE?`` sent now (and
        to any sent before that timed out), and empty the error queue of what a fragment of a
        command put there."""
        self.versions_owed += 1
        self._write(b"\rVE?\r")
        while self.versions_owed:
            line, self._partial = self._partial + self.port.read_until(b"\r\n"), b""
            if not line.endswith(b"\r\n"):
                self._partial = line
                raise DeviceTimeout("focus: ESP301 did not answer in time, nor the replies it owed")
            if line[:-2].decode("ascii", "replace") == self.version:
                self.versions_owed -= 1
        self.owed, self.lost_step = 0, False
        for _ in range(10):  # the queue's depth
            if self.query("TE?").strip() == "0":
                break

    def query(self, text: str) -> str:
        """Send a query and return its reply line without CR LF."""
        return self._ask(text.encode("ascii") + b"\r", repr(text))[:-2].decode("ascii", "replace")

    def command(self, text: str) -> None:
        """Send a set command and the error-buffer read (``TB?``) in one write; raise on an error.

        One write, not two: on a ``socket://`` port (a serial-to-Ethernet server, or the fake) two
        small back-to-back writes meet Nagle's algorithm and the peer's delayed ACK, which cost
        ~40 ms per command (bench/bench_engine.py). The bytes on the wire are the same."""
        reply = self._ask(text.encode("ascii") + b"\rTB?\r", f"TB? after {text!r}")
        code, _, message = reply[:-2].decode("ascii", "replace").partition(",")
        code = int(code.strip() or 0)
        if code == 0:
            return
        message = message.split(",", 1)[-1].strip()
        if code >= 100 and code % 100 in _LIMIT_SUBCODES:
            raise LimitError(f"focus: {text!r}: {message} (ESP301 error {code})")
        raise DeviceError(f"{text!r}: {message}", device="focus", code=code)

    # --- FocusStage ----------------------------------------------------------------------
    def travel_nm(self) -> tuple[float, float]:
        return self._travel_nm

    def move_to_nm(self, z_nm: float) -> None:
        lo, hi = self._travel_nm
        if not lo <= z_nm <= hi:
            raise LimitError(f"focus z={z_nm:.0f} nm is outside travel [{lo:.0f}, {hi:.0f}] nm")
        self.command(f"{self.axis}PA{z_nm / _NM_PER_MM:.6f}")

    def wait_done(self, *, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.query(f"{self.axis}MD?").strip() != "1":
            if time.monotonic() > deadline:
                raise DeviceTimeout(f"focus: motion not done after {timeout_s:.2f} s")
            time.sleep(self.poll_s)

    def position_nm(self) -> float:
        return float(self.query(f"{self.axis}TP?")) * _NM_PER_MM

    def stop(self) -> None:
        self.command(f"{self.axis}ST")

    def close(self) -> None:
        try:
            self.port.close()
        except Exception:
            pass
