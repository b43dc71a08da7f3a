"""A wire-level fake of the PI E-727 piezo controller speaking GCS 2.0.

The unmodified ``pipython`` driver talks to it over TCP (``PISocket``) or a pty (``PISerial``).
Protocol as the real controller: commands end with LF; single control bytes (#5, #7, #24)
come without LF; multi-line replies continue with space+LF; ``ERR?`` returns and clears the
first error since the last read. Positions are in µm (axes ``1 2 3`` = X Y Z, P-733.3CL
100 × 100 × 10 µm). Motion takes simulated time held in this object's state — replies are
immediate, because pipython busy-waits on the socket.

Analog input channel ``DEFLECTION_CHANNEL`` reports the cantilever deflection in volts
(``nm_per_volt`` nm per V) from the shared simulated world, for ``TSP?``/``TAD?``.
"""

from __future__ import annotations

import os
import socketserver
import threading
import time
from collections.abc import Callable

import numpy as np

from instruments.fakes.clock import SimClock
from instruments.fakes.held_replies import HeldReplies

__all__ = ["E727State", "FakeE727", "DEFLECTION_CHANNEL"]

AXES = ("1", "2", "3")
DEFLECTION_CHANNEL = "4"
IDN = "(c)2015 Physik Instrumente (PI) GmbH & Co. KG, E-727, 0000000000, 13.21.00.09"
_HELP_COMMANDS = [
    "*IDN? - Get Device Identification", "CSV? - Get Current Syntax Version", "ERR? - Get Error Number",
    "HLP? - Get List Of Available Commands", "SAI? - Get List Of Current Axis Identifiers",
    "SVO - Set Servo Mode", "SVO? - Get Servo Mode", "MOV - Set Target Position", "MOV? - Get Target Position",
    "MVR - Set Target Relative To Current Position", "POS? - Get Real Position", "ONT? - Get On Target State",
    "VEL - Set Closed-Loop Velocity", "VEL? - Get Closed-Loop Velocity", "TMN? - Get Minimum Commandable Position",
    "TMX? - Get Maximum Commandable Position", "STP - Stop All Axes", "HLT - Halt Motion Smoothly",
    "TSP? - Get Input Signal Position Value", "TAD? - Get ADC Value Of Input Signal", "TNS? - Get Normalized Input",
    "OVF? - Get Overflow State", "#5 - Request Motion Status", "#7 - Request Controller Ready Status",
    "#24 - Stop All Axes",
]
ERR_UNKNOWN_COMMAND, ERR_SYNTAX, ERR_NO_SERVO, ERR_OUT_OF_LIMITS, ERR_STOP, ERR_BAD_AXIS = 2, 1, 5, 7, 10, 15


class E727State(HeldReplies):
    """Controller state and the GCS command interpreter (transport-independent).

    Parameters
    ----------
    world : object with ``set_piezo_nm(x, y, z)`` and ``deflection_nm()`` (the SimWorld).
    clock : SimClock providing simulated time.
    limits_um : per-axis travel (min, max) in µm.
    velocity_um_s : initial closed-loop velocity per axis (VEL).
    settle_s : time after arrival until ONT? reports on target.
    noise_nm : RMS sensor noise added to POS? replies (seeded).
    nm_per_volt : deflection sensitivity of the analog input.
    """

    def __init__(self, world, *, clock: SimClock, limits_um=((0.0, 100.0), (0.0, 100.0), (0.0, 10.0)),
                 velocity_um_s: float = 1000.0, settle_s: float = 0.005, noise_nm: float = 0.3,
                 nm_per_volt: float = 100.0, seed: int = 0):
        self.world = world
        self.clock = clock
        self.lock = threading.RLock()
        self.limits = dict(zip(AXES, limits_um, strict=False))
        self.svo = dict.fromkeys(AXES, False)
        self.pos = dict.fromkeys(AXES, 0.0)          # true position, µm
        self.start = dict.fromkeys(AXES, 0.0)
        self.target = dict.fromkeys(AXES, 0.0)
        self.vel = dict.fromkeys(AXES, float(velocity_um_s))
        self.move_t0 = 0.0
        self.arrive_t = dict.fromkeys(AXES, 0.0)
        self.settle_s = settle_s
        self.noise_nm = noise_nm
        self.nm_per_volt = nm_per_volt
        self.rng = np.random.default_rng(seed)
        self.error = 0
        self.busy_s = 0.0                           # simulated time spent moving + settling
        self.busy_until = 0.0                       # when the move in progress will have settled
        self.world_s = 0.0                          # CPU at rest in the simulated world's maths (not a controller's)
        self.commands: list[str] = []               # every command received, for tests
        self._injected: list[tuple[int, tuple[str, ...]]] = []
        HeldReplies.__init__(self)
        self._publish()

    # --- fault knobs ----------------------------------------------------------------------
    def inject_error(self, code: int, *, count: int = 1, commands: tuple[str, ...] = ("MOV",)) -> None:
        """Make the next ``count`` commands named in ``commands`` fail with GCS error ``code``."""
        with self.lock:
            self._injected.extend([(code, commands)] * count)

    # --- motion model ---------------------------------------------------------------------
    def _advance(self) -> None:
        now = self.clock.now()
        for a in AXES:
            if now >= self.arrive_t[a] or self.arrive_t[a] <= self.move_t0:
                self.pos[a] = self.target[a]
            else:
                frac = (now - self.move_t0) / (self.arrive_t[a] - self.move_t0)
                self.pos[a] = self.start[a] + (self.target[a] - self.start[a]) * frac
        # The world learns XY once per completed move (it draws that move's errors then), but
        # follows Z while it moves, so the deflection rises during a constant-speed approach.
        if all(self.pos[a] == self.target[a] for a in AXES[:2]):
            self._publish()

    def _publish(self) -> None:
        # The world learns a position once per completed move (it draws that move's errors then).
        position = tuple(self.pos[a] * 1000.0 for a in AXES)
        if position != getattr(self, "_published", None):
            self._published = position
            started = time.perf_counter()
            self.world.set_piezo_nm(*position)
            self._count_world_time(started)

    def _count_world_time(self, started: float) -> None:
        # Only while the axes rest: during a move the maths overlaps motion already in busy_s.
        if self.clock.now() >= self.busy_until:
            self.world_s += time.perf_counter() - started

    def _on_target(self, a: str) -> bool:
        return self.clock.now() >= self.arrive_t[a] + self.settle_s

    def _set_targets(self, targets: dict[str, float]) -> None:
        now = self.clock.now()
        self._cut_busy(now)  # a new target replaces what is left of the move in progress
        self.move_t0 = now
        longest = 0.0
        for a in AXES:
            self.start[a] = self.pos[a]
            if a in targets:
                self.target[a] = targets[a]
            duration = abs(self.target[a] - self.pos[a]) / self.vel[a]
            self.arrive_t[a] = now + duration
            if a in targets:
                longest = max(longest, duration)
        self.busy_s += longest + self.settle_s
        self.busy_until = now + longest + self.settle_s

    def _cut_busy(self, now: float) -> None:
        """Take back the unfinished part of the current move from ``busy_s``."""
        if self.busy_until > now:
            self.busy_s -= self.busy_until - now
            self.busy_until = now

    def _stop(self) -> None:
        self._advance()
        self._cut_busy(self.clock.now())
        for a in AXES:
            self.target[a] = self.pos[a]
            self.arrive_t[a] = self.clock.now()

    def _seterr(self, code: int) -> None:
        if not self.error:
            self.error = code

    # --- interpreter ----------------------------------------------------------------------
    def handle(self, line: str) -> str | None:
        """Execute one command; return the reply text (with its terminator) or None."""
        with self.lock:
            self.commands.append(line)
            self._advance()
            if len(line) == 1 and ord(line) < 32:
                return self._control(line)
            cmd, *args = line.split()
            if self._injected and self._injected[0][1] and cmd in self._injected[0][1]:
                code, _ = self._injected.pop(0)
                self._seterr(code)
                return None
            handler = _HANDLERS.get(cmd)
            if handler is None:
                self._seterr(ERR_UNKNOWN_COMMAND)
                return None
            return handler(self, args)

    def _control(self, char: str) -> str | None:
        if char == "\x07":
            return "\xb1\n"  # ready = chr(177), busy would be chr(176)
        if char == "\x05":
            mask = sum(1 << i for i, a in enumerate(AXES) if not self._on_target(a))
            return f"{mask:X}\n"
        if char == "\x18":
            self._stop()
            self._seterr(ERR_STOP)
            return None
        self._seterr(ERR_UNKNOWN_COMMAND)
        return None

    def _axes(self, args: list[str]) -> list[str] | None:
        axes = list(args) if args and args != ["ALL"] else list(AXES)
        if any(a not in AXES for a in axes):
            self._seterr(ERR_BAD_AXIS)
            return None
        return axes

    def _pairs(self, args: list[str]) -> dict[str, float] | None:
        if not args or len(args) % 2:
            self._seterr(ERR_SYNTAX)
            return None
        try:
            pairs = {a: float(v) for a, v in zip(args[::2], args[1::2], strict=False)}
        except ValueError:
            self._seterr(ERR_SYNTAX)
            return None
        if any(a not in AXES for a in pairs):
            self._seterr(ERR_BAD_AXIS)
            return None
        return pairs

    def _reply(self, items: list[str], fmt: Callable[[str], str]) -> str:
        return " \n".join(f"{k}={fmt(k)}" for k in items) + "\n"

    def cmd_idn(self, args):
        return IDN + "\n"

    def cmd_csv(self, args):
        return "2.0\n"

    def cmd_err(self, args):
        code, self.error = self.error, 0
        return f"{code}\n"

    def cmd_hlp(self, args):
        return "The following commands are available: \n" + " \n".join(_HELP_COMMANDS) + " \nend of help\n"

    def cmd_sai(self, args):
        return " \n".join(AXES) + "\n"

    def cmd_svo(self, args):
        pairs = self._pairs(args)
        if pairs is None:
            return None
        for a, v in pairs.items():
            self.svo[a] = v == 1.0
            self.target[a] = self.pos[a]
            self.arrive_t[a] = self.clock.now()
        return None

    def cmd_qsvo(self, args):
        axes = self._axes(args)
        return None if axes is None else self._reply(axes, lambda a: str(int(self.svo[a])))

    def cmd_mov(self, args, relative=False):
        pairs = self._pairs(args)
        if pairs is None:
            return None
        if relative:
            pairs = {a: self.target[a] + v for a, v in pairs.items()}
        for a, v in pairs.items():
            if not self.svo[a]:
                self._seterr(ERR_NO_SERVO)
                return None
            lo, hi = self.limits[a]
            if not lo - 1e-9 <= v <= hi + 1e-9:
                self._seterr(ERR_OUT_OF_LIMITS)
                return None
        self._set_targets(pairs)
        return None

    def cmd_mvr(self, args):
        return self.cmd_mov(args, relative=True)

    def cmd_qmov(self, args):
        axes = self._axes(args)
        return None if axes is None else self._reply(axes, lambda a: f"{self.target[a]:.6f}")

    def cmd_qpos(self, args):
        axes = self._axes(args)
        if axes is None:
            return None
        noise = {a: self.rng.normal(0.0, self.noise_nm) / 1000.0 for a in axes}
        return self._reply(axes, lambda a: f"{self.pos[a] + noise[a]:.6f}")

    def cmd_qont(self, args):
        axes = self._axes(args)
        return None if axes is None else self._reply(axes, lambda a: str(int(self._on_target(a))))

    def cmd_vel(self, args):
        pairs = self._pairs(args)
        if pairs is None:
            return None
        if any(v <= 0 for v in pairs.values()):
            self._seterr(ERR_OUT_OF_LIMITS)
            return None
        self.vel.update(pairs)
        return None

    def cmd_qvel(self, args):
        axes = self._axes(args)
        return None if axes is None else self._reply(axes, lambda a: f"{self.vel[a]:.6f}")

    def cmd_qtmn(self, args):
        axes = self._axes(args)
        return None if axes is None else self._reply(axes, lambda a: f"{self.limits[a][0]:.6f}")

    def cmd_qtmx(self, args):
        axes = self._axes(args)
        return None if axes is None else self._reply(axes, lambda a: f"{self.limits[a][1]:.6f}")

    def cmd_stp(self, args):
        self._stop()
        self._seterr(ERR_STOP)
        return None

    def _input(self, args, fmt: Callable[[str], str]):
        channels = args or list(AXES) + [DEFLECTION_CHANNEL]
        if any(c not in AXES and c != DEFLECTION_CHANNEL for c in channels):
            self._seterr(ERR_BAD_AXIS)
            return None
        return self._reply(channels, fmt)

    def _signal(self, channel: str) -> float:
        if channel == DEFLECTION_CHANNEL:
            started = time.perf_counter()
            deflection = float(self.world.deflection_nm())
            self._count_world_time(started)
            return deflection / self.nm_per_volt
        return self.pos[channel]

    def cmd_qtsp(self, args):
        return self._input(args, lambda c: f"{self._signal(c):.6f}")

    def cmd_qtns(self, args):
        return self._input(args, lambda c: f"{self._signal(c) / 10.0:.6f}")

    def cmd_qtad(self, args):
        return self._input(args, lambda c: str(int(round(self._signal(c) * 3276.8)) + 32768))

    def cmd_qovf(self, args):
        axes = self._axes(args)
        return None if axes is None else self._reply(axes, lambda a: "0")


_HANDLERS = {
    "*IDN?": E727State.cmd_idn, "CSV?": E727State.cmd_csv, "ERR?": E727State.cmd_err, "HLP?": E727State.cmd_hlp,
    "SAI?": E727State.cmd_sai, "SVO": E727State.cmd_svo, "SVO?": E727State.cmd_qsvo, "MOV": E727State.cmd_mov,
    "MVR": E727State.cmd_mvr, "MOV?": E727State.cmd_qmov, "POS?": E727State.cmd_qpos, "ONT?": E727State.cmd_qont,
    "VEL": E727State.cmd_vel, "VEL?": E727State.cmd_qvel, "TMN?": E727State.cmd_qtmn, "TMX?": E727State.cmd_qtmx,
    "STP": E727State.cmd_stp, "HLT": E727State.cmd_stp, "TSP?": E727State.cmd_qtsp, "TNS?": E727State.cmd_qtns,
    "TAD?": E727State.cmd_qtad, "OVF?": E727State.cmd_qovf,
}


def split_commands(buffer: str) -> tuple[list[str], str]:
    """Split received text into complete GCS commands; return (commands, remainder).

    A control byte (< 32, not LF) is a command by itself; anything else ends at LF.
    """
    commands = []
    while buffer:
        if ord(buffer[0]) < 32 and buffer[0] != "\n":
            commands.append(buffer[0])
            buffer = buffer[1:]
        elif "\n" in buffer:
            line, buffer = buffer.split("\n", 1)
            if line.strip():
                commands.append(line.strip())
        else:
            break
    return commands, buffer


class _Handler(socketserver.BaseRequestHandler):
    def handle(self):
        state: E727State = self.server.state  # type: ignore[attr-defined]
        buffer = ""
        while True:
            try:
                data = self.request.recv(4096)
            except OSError:
                return
            if not data:
                return
            commands, buffer = split_commands(buffer + data.decode("cp1252"))
            for command in commands:
                reply = state.handle(command)
                if reply:
                    time.sleep(state.reply_delay_s())
                    self.request.sendall(reply.encode("cp1252"))


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


class FakeE727:
    """Serve an ``E727State`` on TCP (``127.0.0.1``, port 0 = any free port) and optionally a pty.

    Use as a context manager or call ``start()``/``stop()``. ``state`` holds the controller.
    """

    def __init__(self, world, *, clock: SimClock, host: str = "127.0.0.1", port: int = 0, **state_kwargs):
        self.state = E727State(world, clock=clock, **state_kwargs)
        self._server = _Server((host, port), _Handler)
        self._server.state = self.state  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None
        self._pty_master: int | None = None

    @property
    def host(self) -> str:
        return self._server.server_address[0]

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def address(self) -> str:
        return f"gcs+tcp://{self.host}:{self.port}"

    def start(self) -> FakeE727:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-e727", daemon=True)
        self._thread.start()
        return self

    def open_pty(self) -> str:
        """Also serve on a new pseudo-terminal (for ``PISerial``); returns its ``/dev/pts/N`` path."""
        import pty
        import tty
        master, slave = pty.openpty()
        tty.setraw(slave)
        self._pty_master = master
        path = os.ttyname(slave)
        threading.Thread(target=self._serve_pty, args=(master, slave), name="fake-e727-pty", daemon=True).start()
        return path

    def _serve_pty(self, master: int, slave: int) -> None:
        buffer = ""
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                os.close(slave)
                return
            commands, buffer = split_commands(buffer + data.decode("cp1252"))
            for command in commands:
                reply = self.state.handle(command)
                if reply:
                    os.write(master, reply.encode("cp1252"))

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._pty_master is not None:
            os.close(self._pty_master)
            self._pty_master = None

    def __enter__(self) -> FakeE727:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
