"""The unmodified pipython and pyserial talk to the wire-level fakes exactly as to the hardware."""

import socket
from contextlib import contextmanager

import pytest
import serial
from pipython import GCSDevice, GCSError, pitools
from pipython.pidevice.interfaces.pisocket import PISocket

from instruments.drivers.pi_e727 import _close_device
from instruments.fakes.clock import SimClock
from instruments.fakes.e727 import E727State, FakeE727, split_commands
from instruments.fakes.esp301 import FakeESP301
from tests.instruments.stand_in_world import StandInWorld


@contextmanager
def closing(device):
    try:
        yield device
    finally:
        _close_device(device)


@pytest.fixture
def e727():
    world = StandInWorld()
    with FakeE727(world, clock=SimClock(rate=1.0), velocity_um_s=100.0, settle_s=0.0) as fake:
        yield fake, world


def _raw(fake, payload: bytes, expect_reply=True) -> bytes:
    with socket.create_connection((fake.host, fake.port), timeout=2) as s:
        s.sendall(payload)
        if not expect_reply:
            return b""
        data = b""
        while not (data.endswith(b"\n") and not data.endswith(b" \n")):
            data += s.recv(4096)
        return data


def test_split_commands_control_bytes_have_no_lf():
    assert split_commands("\x05POS? 1\n\x18MOV 1 2\nERR") == (["\x05", "POS? 1", "\x18", "MOV 1 2"], "ERR")


def test_continuation_lines_and_control_bytes_on_the_wire(e727):
    fake, _ = e727
    lines = _raw(fake, b"POS?\n").decode().split("\n")
    assert [line[:2] for line in lines[:3]] == ["1=", "2=", "3="] and lines[0].endswith(" ") and lines[3] == ""
    reply = _raw(fake, b"TMX?\n")
    assert reply == b"1=100.000000 \n2=100.000000 \n3=10.000000\n"
    assert _raw(fake, b"\x07") == "\xb1\n".encode("cp1252")
    assert _raw(fake, b"\x05") == b"0\n"


def test_err_returns_and_clears_first_error(e727):
    fake, _ = e727
    with socket.create_connection((fake.host, fake.port), timeout=2) as s:
        s.sendall(b"BOGUS\nMOV 1 5\n")          # unknown command (2), then servo off (5): first wins
        s.sendall(b"ERR?\n")
        assert s.recv(100) == b"2\n"
        s.sendall(b"ERR?\n")
        assert s.recv(100) == b"0\n"


def test_pipython_startup_move_and_limits(e727):
    fake, world = e727
    with closing(GCSDevice(gateway=PISocket(host=fake.host, port=fake.port))) as dev:
        assert "E-727" in dev.qIDN()
        assert dev.axes == ["1", "2", "3"]
        pitools.startup(dev, servostates=True)
        assert dict(dev.qSVO()) == {"1": True, "2": True, "3": True}
        assert dict(dev.qTMX()) == {"1": 100.0, "2": 100.0, "3": 10.0}
        dev.MOV({"1": 10.0, "2": 5.0})
        # 10 µm at 100 µm/s takes 0.1 s of simulated time: not there yet, and the reply came at once
        assert dev.qONT(["1"])["1"] is False
        pitools.waitontarget(dev, axes=["1", "2"], polldelay=0.005)
        pos = dev.qPOS()
        assert pos["1"] == pytest.approx(10.0, abs=0.01) and pos["2"] == pytest.approx(5.0, abs=0.01)
        assert world.piezo[0] == pytest.approx(10_000) and world.piezo[1] == pytest.approx(5_000)
        with pytest.raises(GCSError) as info:
            dev.MOV("3", 12.0)
        assert info.value.val == 7
        assert dev.qERR() == 0
        dev.StopAll(noraise=True)
        world._contact = -1_000.0  # Z sits at 0, so the cantilever is bent by 1 µm
        assert dev.qTSP(4)[4] == pytest.approx(1_000 / 100.0)  # 1 µm deflection at 100 nm/V


def test_pipython_over_serial_pty():
    from pipython.pidevice.interfaces.piserial import PISerial

    world = StandInWorld()
    with FakeE727(world, clock=SimClock(rate=50.0)) as fake:
        path = fake.open_pty()
        with closing(GCSDevice(gateway=PISerial(port=path, baudrate=115200))) as dev:
            pitools.startup(dev, servostates=True)
            dev.MOV("2", 3.5)
            pitools.waitontarget(dev, axes=["2"], polldelay=0.002)
            assert dev.qPOS("2")["2"] == pytest.approx(3.5, abs=0.01)


def test_esp301_fake_through_pyserial_socket_url():
    world = StandInWorld()
    with FakeESP301(world, clock=SimClock(rate=1.0), velocity_mm_s=1.0, settle_s=0.0) as fake:
        port = serial.serial_for_url(f"socket://127.0.0.1:{fake.port}", timeout=1)

        def ask(cmd):
            port.write(cmd.encode() + b"\r")
            return port.read_until(b"\r\n").decode().strip()

        port.write(b"1PA10.5\r")
        assert ask("TE?") == "113"               # motor not enabled
        port.write(b"1MO;1PA50.1\r")             # two commands on one line
        assert ask("1MD?") == "0"                # 0.1 mm at 1 mm/s: still moving
        assert ask("TB?").startswith("0, ")
        port.write(b"1PA150\r")
        assert ask("TB?").endswith("AXIS 1 POSITIVE SOFTWARE LIMIT DETECTED")
        port.close()


def test_world_follows_z_while_it_moves_and_a_new_target_takes_back_the_rest_of_the_move():
    world = StandInWorld()
    clock = SimClock(rate=1.0)
    state = E727State(world, clock=clock, velocity_um_s=10.0, settle_s=0.0)
    state.handle("SVO 1 1 2 1 3 1")
    state.handle("MOV 3 8")                   # 8 µm at 10 µm/s: 0.8 s of simulated time
    t0 = clock.now()
    clock.sleep(0.2)
    state.handle("POS? 3")
    z_mid = world.piezo[2]
    assert 1_500 < z_mid < 7_000               # the world saw Z part-way, not only at the end
    state.handle("MOV 3 0")                   # retarget: the unfinished 0.6 s is not hardware time
    assert state.busy_s == pytest.approx((clock.now() - t0) + z_mid / 10_000.0, abs=0.05)


def test_fake_counts_world_maths_only_while_the_axes_rest():
    world = StandInWorld()
    clock = SimClock(rate=1.0)
    state = E727State(world, clock=clock, velocity_um_s=1.0, settle_s=0.0)
    state.handle("SVO 1 1 2 1 3 1")
    state.handle("TSP? 4")
    at_rest = state.world_s
    assert at_rest > 0
    state.handle("MOV 3 5")                   # 5 s move: deflection maths now overlaps motion
    state.handle("TSP? 4")
    assert state.world_s == at_rest
