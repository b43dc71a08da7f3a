"""A wire-level fake of the Newport ESP301 motion controller (ESP300 command language).

Reached by an unmodified pyserial driver through ``serial.serial_for_url("socket://host:port")``.
Commands end with CR (several may share a line separated by ``;``), replies end with CR LF.
Supported: ``nMO nMF nMO? nPA nPA? nPR nTP nTP? nMD? nVA nVA? nST nSL? nSR? nSN? nID? TE? TB? VE?``.
Units are mm (``SN`` = 2). Errors queue FIFO and ``TE?``/``TB?`` pop the oldest; axis errors are
``axis*100 + code`` (x06/x07 software limit, x13 motor not enabled, x03 following error).
Motion takes simulated time held here; replies never wait, unless ``delay_replies`` holds some
back (a serial server or host that stalls).
"""

from __future__ import annotations

import re
import socketserver
import threading
import time

from instruments.fakes.clock import SimClock
from instruments.fakes.held_replies import HeldReplies

__all__ = ["ESP301State", "FakeESP301"]

_MESSAGES = {
    0: "NO ERROR DETECTED", 6: "COMMAND DOES NOT EXIST", 7: "PARAMETER OUT OF RANGE", 9: "AXIS NUMBER OUT OF RANGE",
}
_CMD = re.compile(r"^\s*(\d*)\s*([A-Z]{2})\s*(\?)?\s*([-+0-9.eE]*)\s*$")


def _message(code: int) -> str:
    if code >= 100:
        axis, sub = divmod(code, 100)
        return f"AXIS {axis} " + {3: "FOLLOWING ERROR THRESHOLD EXCEEDED", 6: "POSITIVE SOFTWARE LIMIT DETECTED",
                                  7: "NEGATIVE SOFTWARE LIMIT DETECTED", 13: "MOTOR NOT ENABLED"}.get(sub, "ERROR")
    return _MESSAGES.get(code, "UNKNOWN ERROR")


class ESP301State(HeldReplies):
    """One-axis ESP301 driving the IMS100V; writes the focus position into the world.

    Parameters
    ----------
    world : object with ``set_focus_nm(z)``.
    clock : SimClock.
    limits_mm : software travel limits (SL, SR).
    velocity_mm_s : initial velocity (VA).
    settle_s : time after arrival until ``MD?`` reports done.
    world_offset_nm : world focus coordinate = stage position (nm) + this offset.
    start_mm : position at power-up.
    """

    def __init__(self, world, *, clock: SimClock, limits_mm=(0.0, 100.0), velocity_mm_s: float = 2.0,
                 settle_s: float = 0.01, world_offset_nm: float = 0.0, start_mm: float = 50.0):
        self.world = world
        self.clock = clock
        self.lock = threading.RLock()
        self.limits = tuple(limits_mm)
        self.vel = float(velocity_mm_s)
        self.settle_s = settle_s
        self.world_offset_nm = world_offset_nm
        self.motor_on = False
        self.pos = self.start = self.target = float(start_mm)
        self.t0 = self.arrive_t = 0.0
        self.errors: list[int] = []
        self.busy_s = 0.0
        self.stall = False                 # fault knob: motion never reports done
        self.commands: list[str] = []
        self._injected: list[tuple[int, tuple[str, ...]]] = []
        HeldReplies.__init__(self)
        self._publish()

    def inject_error(self, code: int, *, count: int = 1, commands: tuple[str, ...] = ("PA",)) -> None:
        """Make the next ``count`` commands named in ``commands`` fail with error ``code``."""
        with self.lock:
            self._injected.extend([(code, commands)] * count)

    def _advance(self) -> None:
        now = self.clock.now()
        if now >= self.arrive_t or self.arrive_t <= self.t0:
            self.pos = self.target
        else:
            self.pos = self.start + (self.target - self.start) * (now - self.t0) / (self.arrive_t - self.t0)
        if self.pos == self.target:
            self._publish()

    def _publish(self) -> None:
        position = self.pos * 1e6 + self.world_offset_nm
        if position != getattr(self, "_published", None):
            self._published = position
            self.world.set_focus_nm(position)

    def _move(self, target: float, axis: int) -> None:
        if not self.motor_on:
            self.errors.append(axis * 100 + 13)
            return
        if target > self.limits[1] + 1e-12:
            self.errors.append(axis * 100 + 6)
            return
        if target < self.limits[0] - 1e-12:
            self.errors.append(axis * 100 + 7)
            return
        now = self.clock.now()
        self.start, self.target, self.t0 = self.pos, target, now
        duration = abs(target - self.pos) / self.vel
        self.arrive_t = now + duration
        self.busy_s += duration + self.settle_s

    def handle_line(self, line: str) -> list[str]:
        """Execute a CR-terminated line (may hold ``;``-separated commands); return reply lines."""
        replies = []
        for part in line.split(";"):
            if part.strip():
                reply = self.handle(part.strip())
                if reply is not None:
                    replies.append(reply)
        return replies

    def handle(self, command: str) -> str | None:
        with self.lock:
            self.commands.append(command)
            self._advance()
            match = _CMD.match(command)
            if not match:
                self.errors.append(6)
                return None
            axis_text, name, query, param = match.groups()
            axis = int(axis_text) if axis_text else 0
            if self._injected and name in self._injected[0][1]:
                code, _ = self._injected.pop(0)
                self.errors.append(code)
                return None
            if query:
                return self._query(axis, name)
            if name in ("MO", "MF", "PA", "PR", "VA", "ST") and axis != 1:
                self.errors.append(9)
                return None
            try:
                value = float(param) if param else None
            except ValueError:
                self.errors.append(7)
                return None
            if name == "MO":
                self.motor_on = True
            elif name == "MF":
                self.motor_on = False
            elif name in ("PA", "PR") and value is not None:
                self._move(value if name == "PA" else self.target + value, axis)
            elif name == "VA" and value is not None and value > 0:
                self.vel = value
            elif name == "ST":
                self.target = self.pos
                self.arrive_t = self.clock.now()
            elif name == "TP":
                return f"{self.pos:.6f}"
            else:
                self.errors.append(7 if name in ("PA", "PR", "VA") else 6)
            return None

    def _query(self, axis: int, name: str) -> str | None:
        if name == "TE":
            return str(self.errors.pop(0) if self.errors else 0)
        if name == "TB":
            code = self.errors.pop(0) if self.errors else 0
            return f"{code}, {int(self.clock.now() * 1000) % 100000}, {_message(code)}"
        if name == "VE":
            return "ESP301 Version 3.0.2 6/20/17"
        if axis != 1:
            self.errors.append(9)
            return None
        done = self.clock.now() >= self.arrive_t + self.settle_s and not self.stall
        answers = {"TP": f"{self.pos:.6f}", "PA": f"{self.target:.6f}", "MD": str(int(done)),
                   "MO": str(int(self.motor_on)), "VA": f"{self.vel:.6f}", "SL": f"{self.limits[0]:.6f}",
                   "SR": f"{self.limits[1]:.6f}", "SN": "2", "ID": "IMS100V, 00000000"}
        if name not in answers:
            self.errors.append(6)
            return None
        return answers[name]


class _Handler(socketserver.BaseRequestHandler):
    def handle(self):
        state: ESP301State = self.server.state  # type: ignore[attr-defined]
        buffer = b""
        while True:
            try:
                data = self.request.recv(4096)
            except OSError:
                return
            if not data:
                return
            buffer += data
            while b"\r" in buffer:
                line, buffer = buffer.split(b"\r", 1)
                for reply in state.handle_line(line.decode("ascii", "replace").strip("\n")):
                    time.sleep(state.reply_delay_s())
                    self.request.sendall(reply.encode("ascii") + b"\r\n")


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


class FakeESP301:
    """Serve an ``ESP301State`` on TCP; pyserial reaches it as ``socket://host:port``."""

    def __init__(self, world, *, clock: SimClock, host: str = "127.0.0.1", port: int = 0, **state_kwargs):
        self.state = ESP301State(world, clock=clock, **state_kwargs)
        self._server = _Server((host, port), _Handler)
        self._server.state = self.state  # type: ignore[attr-defined]

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def address(self) -> str:
        return f"esp301+socket://{self._server.server_address[0]}:{self.port}"

    def start(self) -> FakeESP301:
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         name="fake-esp301", daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeESP301:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
