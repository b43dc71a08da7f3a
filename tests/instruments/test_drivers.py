"""Real drivers against the fakes: units, error mapping, one-line unavailability messages."""

import pytest

from instruments.drivers.pco_camera import PcoCamera
from instruments.errors import DeviceError, DeviceTimeout, DeviceUnavailable, LimitError


def test_piezo_moves_in_nm_and_reads_travel(bench_rig):
    piezo = bench_rig.piezo
    assert piezo.travel_nm() == ((0.0, 100_000.0), (0.0, 100_000.0), (0.0, 10_000.0))
    piezo.move_nm(x=12_345.0, y=54_321.0)
    piezo.wait_on_target(timeout_s=2)
    x, y, _ = piezo.position_nm()
    assert x == pytest.approx(12_345, abs=2) and y == pytest.approx(54_321, abs=2)
    assert piezo.on_target()


def test_piezo_limits_and_gcs_errors_map_to_family(bench_rig):
    with pytest.raises(LimitError, match="outside travel"):
        bench_rig.piezo.move_nm(z=10_500)
    bench_rig.e727.state.inject_error(7)
    with pytest.raises(LimitError, match="GCS error 7"):
        bench_rig.piezo.move_nm(x=1_000)
    bench_rig.e727.state.inject_error(1024)
    with pytest.raises(DeviceError) as info:
        bench_rig.piezo.move_nm(x=1_000)
    assert info.value.code == 1024 and info.value.device == "piezo"


def test_a_late_gcs_reply_is_not_taken_for_the_next_one(bench_rig):
    from instruments.drivers.pi_e727 import E727AnalogFeedback, E727Piezo

    piezo = E727Piezo.connect(bench_rig.e727.address, timeout_s=1.0)  # gives up on a reply after 1 s
    try:
        piezo.move_nm(x=12_000.0, y=34_000.0)
        piezo.wait_on_target(timeout_s=5)
        bench_rig.e727.state.delay_replies(1.4)
        with pytest.raises(DeviceTimeout):
            piezo.on_target()
        x, y, _ = piezo.position_nm()  # POS?'s own reply, not the late ONT? (1=1 2=1 3=1: x = 1000 nm)
        assert x == pytest.approx(12_000, abs=2) and y == pytest.approx(34_000, abs=2)
        feedback = E727AnalogFeedback(piezo, channel=4, nm_per_unit=bench_rig.e727.state.nm_per_volt)
        # late, and so is the *IDN? the driver falls back in step on: the next fall-back reads off both
        bench_rig.e727.state.delay_replies(1.6)
        bench_rig.e727.state.delay_replies(0.6)
        for _ in range(2):
            with pytest.raises(DeviceTimeout):
                feedback.deflection_nm()
        assert piezo.on_target() and not piezo.lost_step
    finally:
        piezo.close()


def test_feedback_reads_deflection_through_analog_input(bench_rig, stand_in_world):
    bench_rig.piezo.move_nm(z=6_300)
    bench_rig.piezo.wait_on_target(timeout_s=2)
    assert bench_rig.feedback.deflection_nm() == pytest.approx(300, abs=1e-3)


def test_focus_stage_moves_and_maps_errors(bench_rig, stand_in_world):
    focus = bench_rig.focus
    assert focus.travel_nm() == (0.0, 100e6)
    focus.move_to_nm(50_002_000)
    focus.wait_done(timeout_s=2)
    assert focus.position_nm() == pytest.approx(50_002_000, abs=1)
    assert stand_in_world.focus == pytest.approx(50_002_000, abs=1)
    with pytest.raises(LimitError):
        focus.move_to_nm(101e6)
    bench_rig.esp301.state.inject_error(103)
    with pytest.raises(DeviceError, match="FOLLOWING ERROR") as info:
        focus.move_to_nm(50e6)
    assert info.value.code == 103
    bench_rig.esp301.state.stall = True
    focus.move_to_nm(50_001_000)
    with pytest.raises(DeviceTimeout):
        focus.wait_done(timeout_s=0.05)


@pytest.fixture
def impatient_focus(bench_rig):
    """A second ESP301 driver on the rig's controller, giving up on a reply after 0.5 s."""
    from instruments.drivers.esp301 import ESP301FocusStage

    focus = ESP301FocusStage.connect(bench_rig.esp301.address, timeout_s=0.5)
    yield focus
    focus.close()


def test_a_reply_that_comes_after_its_timeout_is_not_taken_for_the_next_one(bench_rig, impatient_focus):
    focus, controller = impatient_focus, bench_rig.esp301.state
    focus.move_to_nm(50_002_000)
    controller.delay_replies(0.8)
    with pytest.raises(DeviceTimeout, match="MD"):
        focus.wait_done(timeout_s=5)
    # The late "1" (motion done) arrives while the next command waits for its TB?: taken for it, it
    # would read as error code 1, and every reply after it would answer the question before.
    focus.move_to_nm(50_003_000)
    focus.wait_done(timeout_s=5)
    assert focus.position_nm() == pytest.approx(50_003_000, abs=1)
    controller.delay_replies(0.8, count=2)  # two late in a row
    for _ in range(2):
        with pytest.raises(DeviceTimeout):
            focus.position_nm()
    assert focus.position_nm() == pytest.approx(50_003_000, abs=1)
    assert focus.query("1SN?") == "2"


def test_a_reply_that_never_comes_is_given_up_and_the_line_falls_back_in_step(impatient_focus):
    impatient_focus.owed = 1  # as when the controller is reset before it answers
    assert impatient_focus.position_nm() == pytest.approx(50e6, abs=1)
    assert impatient_focus.owed == 0 and not impatient_focus.lost_step


class ScriptedLine:
    """A port whose reads return the given chunks in turn (one without CR LF: the rest came too late)."""

    def __init__(self, *chunks: bytes):
        self.chunks, self.written = list(chunks), []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def read_until(self, terminator: bytes) -> bytes:
        return self.chunks.pop(0)


def test_a_fall_back_reply_cut_by_its_timeout_is_still_recognised_when_its_end_comes():
    from instruments.drivers.esp301 import ESP301FocusStage

    version = b"ESP301 Version 3.0.2 6/20/17\r\n"
    line = ScriptedLine(version, b"2\r\n", b"0, 1, NO ERROR DETECTED\r\n", b"0.000000\r\n", b"100.000000\r\n")
    focus = ESP301FocusStage(line)
    focus.lost_step = True
    line.chunks += [version[:10]]  # the VE? reply starts, and the timeout comes
    with pytest.raises(DeviceTimeout):
        focus.position_nm()
    line.chunks += [version[10:], version, b"0\r\n", b"50.000000\r\n"]  # its end, then the next VE?'s, TE?, TP?
    assert focus.position_nm() == 50e6
    assert not line.chunks and line.written[-4:] == [b"\rVE?\r", b"\rVE?\r", b"TE?\r", b"1TP?\r"]


@pytest.mark.parametrize("sent", ["all", "half"])
def test_a_write_cut_short_falls_back_in_step(impatient_focus, monkeypatch, sent):
    """pyserial's socket port raises its write timeout after sending (every byte out, the command
    run, its reply on the way); a real line may also have sent only part of the command."""
    import serial

    focus, write = impatient_focus, impatient_focus.port.write

    def cut_short(data):
        monkeypatch.setattr(focus.port, "write", write)
        write(data if sent == "all" else data[:2])
        raise serial.SerialTimeoutException("Write timeout")

    monkeypatch.setattr(focus.port, "write", cut_short)
    with pytest.raises(DeviceTimeout, match="did not take"):
        focus.move_to_nm(50_004_000)
    focus.move_to_nm(50_005_000)  # neither the first TB? reply nor the fragment's error is taken for its own
    focus.wait_done(timeout_s=5)
    assert focus.position_nm() == pytest.approx(50_005_000, abs=1)


def test_camera_driver_on_simulated_pco(bench_rig):
    cam = bench_rig.camera
    cam.configure(exposure_s=0.01, roi=(0, 0, 128, 96))
    assert bench_rig.simcam.configuration["roi"] == (1, 1, 128, 96)
    cam.trigger()
    frame = cam.read(timeout_s=1)
    assert frame.shape == (96, 128) and frame.dtype.name == "uint16"
    assert cam.latest_frame() is frame
    bench_rig.simcam.fail_next_recordings(1)
    cam.trigger()
    with pytest.raises(DeviceTimeout):
        cam.read(timeout_s=0.2)
    with pytest.raises(LimitError):
        cam.configure(exposure_s=5.0)


def test_real_pco_missing_says_so_in_one_line():
    with pytest.raises(DeviceUnavailable) as info:
        PcoCamera.open("pco")
    message = str(info.value)
    assert message.startswith("PCO camera unavailable:") and "\n" not in message


def test_unreachable_controller_is_one_clear_error():
    from instruments.drivers.pi_e727 import E727Piezo

    with pytest.raises(DeviceUnavailable, match="cannot reach the PI E-727"):
        E727Piezo.connect("gcs+tcp://127.0.0.1:1")


def test_socket_gateway_sleeps_while_the_controller_thinks():
    """A reply that takes 0.2 s costs the waiting thread almost no CPU (pipython alone would spin)."""
    import socket
    import threading
    import time

    from pipython.pidevice.gcsmessages import GCSMessages

    from instruments.drivers.pi_e727 import _socket_gateway

    server = socket.create_server(("127.0.0.1", 0))

    def slow_controller():  # answers ERR? (pipython asks once more after each reply) with "0", first after 0.2 s
        conn, _ = server.accept()
        delay = 0.2
        with conn:
            while data := conn.recv(64):
                for _ in range(data.count(b"ERR?")):
                    time.sleep(delay)
                    delay = 0.0
                    conn.sendall(b"0\n")

    threading.Thread(target=slow_controller, daemon=True).start()
    gateway = _socket_gateway("127.0.0.1", server.getsockname()[1])
    try:
        cpu0, wall0 = time.thread_time(), time.monotonic()
        assert GCSMessages(gateway).read("ERR?").strip() == "0"
        assert time.monotonic() - wall0 >= 0.19
        assert time.thread_time() - cpu0 < 0.05
    finally:
        gateway.close()
        server.close()
