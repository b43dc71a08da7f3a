"""The scan engine on the bench rig: real pipython/pyserial/simulated-pco paths against the fakes."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from instruments.engine import RetryPolicy, ScanEngine, ScanState
from instruments.framestore import DirectoryFrameStore, MemoryFrameStore
from instruments.plans import grid_points
from tests.instruments.conftest import small_spec

FAST_RETRY = RetryPolicy(attempts=2, delay_s=0.0)
REPO = Path(__file__).resolve().parents[2]


def _engine(rig, store, events=None, **kwargs):
    return ScanEngine(rig.devices, store, on_event=(events.append if events is not None else None),
                      retry=kwargs.pop("retry", FAST_RETRY), **kwargs)


def _run_in_thread(engine, spec):
    result = {}
    thread = threading.Thread(target=lambda: result.update(r=engine.run(spec)), daemon=True)
    thread.start()
    return thread, result


def _wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


def _assert_complete_once(store, spec):
    expected = [p.index for p in grid_points(spec)]
    assert sorted(store.saves) == expected  # every point saved exactly once


def test_full_scan_frames_match_plan(bench_rig, stand_in_world):
    spec = small_spec()
    store, events, live = MemoryFrameStore(), [], []
    engine = ScanEngine(bench_rig.devices, store, on_event=events.append, on_live_frame=live.append)
    result = engine.run(spec)
    assert result.state is ScanState.COMPLETED and result.saved == result.total == 4
    _assert_complete_once(store, spec)
    for point in grid_points(spec):
        frame = store.frames[point.index]
        assert (frame.row, frame.col) == (point.row, point.col)
        assert frame.commanded_xy_nm == (point.x_nm, point.y_nm)
        assert frame.measured_xyz_nm[0] == pytest.approx(point.x_nm, abs=3)   # sensor noise 0.3 nm
        assert frame.measured_xyz_nm[1] == pytest.approx(point.y_nm, abs=3)
        assert frame.image.shape == (128, 128) and frame.image.dtype == np.uint16
        assert frame.deflection_nm >= spec.contact_setpoint_nm                 # contact reached...
        assert frame.deflection_nm <= spec.contact_setpoint_nm + engine.setpoint_tolerance_nm  # ...and held there
        assert frame.focus_nm == pytest.approx(stand_in_world.virtual_image_focus_nm(), abs=150)  # true focus
        assert frame.captured_at.tzinfo is not None
    kinds = [e["type"] for e in events]
    assert kinds[0] == "state" and events[-1]["payload"]["state"] == "completed"
    assert kinds.count("frame_saved") == 4
    assert events[-2]["payload"] == {"done": 4, "total": 4, "eta_s": None}
    assert len(live) >= 4
    assert stand_in_world.piezo[2] == 0.0  # safety wrapper left the sphere retracted


def test_stage_moves_on_only_after_the_save_returns_and_the_sphere_is_lifted_meanwhile(bench_rig, stand_in_world):
    seen = []

    class SlowStore(MemoryFrameStore):
        def save(self, frame):
            xy_before = stand_in_world.piezo[:2]
            time.sleep(0.05)                                   # a slow disk
            seen.append((frame.commanded_xy_nm, xy_before, stand_in_world.piezo[:2],
                         bench_rig.e727.state.target["3"]))
            super().save(frame)

    spec = small_spec()
    result = _engine(bench_rig, SlowStore()).run(spec)
    assert result.state is ScanState.COMPLETED and len(seen) == 4
    for commanded, xy_before, xy_after, z_target_um in seen:
        assert xy_before == xy_after == pytest.approx(commanded)  # XY still where the frame was taken
        assert z_target_um == 0.0                                # the retract was already under way


def test_focus_stage_left_alone_when_already_in_focus(bench_rig):
    spec = small_spec()                                        # focus_mode "last": one autofocus, then reuse
    result = _engine(bench_rig, MemoryFrameStore()).run(spec)
    assert result.state is ScanState.COMPLETED
    moves = [c for c in bench_rig.esp301.state.commands if "PA" in c]
    assert len(moves) == spec.focus_steps + 1                  # the sweep and the move to its best, nothing more


def test_z_stack_saved_whole_and_fused(bench_rig, tmp_path):
    spec = small_spec(area_nm=(0, 0), z_planes=3, z_step_nm=800)
    store = DirectoryFrameStore(tmp_path)
    result = _engine(bench_rig, store).run(spec)
    assert result.state is ScanState.COMPLETED
    image, meta = store.load(0)
    assert image.shape == (128, 128) and image.dtype == np.uint16
    best = meta["focus_nm"]
    assert meta["z_positions_nm"] == pytest.approx([best - 800, best, best + 800])
    import tifffile
    assert tifffile.imread(tmp_path / "frame_000000_zstack.tif").shape == (3, 128, 128)


def test_pause_resume_and_abort_at_checkpoints(bench_rig):
    spec = small_spec(area_nm=(25_000, 14_000))   # 3 × 2
    store, events = MemoryFrameStore(), []
    engine = _engine(bench_rig, store, events)
    engine.pause()                                  # honoured before the first point
    thread, result = _run_in_thread(engine, spec)
    _wait_for(lambda: engine.state is ScanState.PAUSED)
    assert store.saves == []
    engine.resume()
    _wait_for(lambda: len(store.saves) >= 1)
    engine.pause()
    _wait_for(lambda: engine.state is ScanState.PAUSED)
    paused_at = len(store.saves)
    time.sleep(0.05)
    assert len(store.saves) == paused_at            # nothing moves while paused
    assert bench_rig.world.piezo[2] == 0.0          # and the sphere is retracted
    engine.resume()
    _wait_for(lambda: len(store.saves) >= paused_at + 1)
    engine.abort()
    thread.join(5)
    assert result["r"].state is ScanState.ABORTED
    assert len(set(store.saves)) == len(store.saves) < 6
    # a new run on the same store finishes the rest without duplicates
    again = _engine(bench_rig, store).run(spec)
    assert again.state is ScanState.COMPLETED and again.saved == 6
    _assert_complete_once(store, spec)


def test_abort_while_paused(bench_rig):
    store = MemoryFrameStore()
    engine = _engine(bench_rig, store)
    engine.pause()
    thread, result = _run_in_thread(engine, small_spec())
    _wait_for(lambda: engine.state is ScanState.PAUSED)
    engine.abort()
    thread.join(5)
    assert result["r"].state is ScanState.ABORTED and store.saves == []


@pytest.mark.parametrize("fault", ["camera_timeout", "stage_error", "gcs_error_7"])
def test_transient_fault_is_retried(bench_rig, fault):
    inject = {"camera_timeout": lambda n: bench_rig.simcam.fail_next_recordings(n),
              "stage_error": lambda n: bench_rig.esp301.state.inject_error(103, count=n),
              "gcs_error_7": lambda n: bench_rig.e727.state.inject_error(7, count=n)}[fault]
    # 6 points; the focus stage must move at each one for its fault to hit: a 2-plane Z-stack
    stack = {"z_planes": 2, "z_step_nm": 400} if fault == "stage_error" else {}
    # 30 ms of settling per point keeps the scan from finishing between this thread's looks at it
    spec = small_spec(area_nm=(25_000, 14_000), settle_s=0.03, **stack)
    store, events = MemoryFrameStore(), []
    engine = _engine(bench_rig, store, events)
    thread, result = _run_in_thread(engine, spec)
    _wait_for(lambda: len(store.saves) >= 1)
    inject(1)                                    # one failure: retried, scan goes on
    _wait_for(lambda: any(e["type"] == "fault" for e in events))
    _wait_for(lambda: len(store.saves) >= 3)
    inject(FAST_RETRY.attempts)                  # persistent: pauses with the reason
    _wait_for(lambda: engine.state is ScanState.PAUSED)
    reason = [e for e in events if e["type"] == "state"][-1]["payload"]["reason"]
    assert "after 2 attempts" in reason
    assert len(store.saves) < 6
    engine.resume()
    thread.join(10)
    assert result["r"].state is ScanState.COMPLETED
    _assert_complete_once(store, spec)
    faults = [e["payload"] for e in events if e["type"] == "fault"]
    assert [f["will_retry"] for f in faults] == [True, True, False]
    assert all(f["reason"] and f["index"] is not None for f in faults)


def test_contact_never_reached_pauses_without_crashing(bench_rig, stand_in_world):
    spec = small_spec()
    store, events = MemoryFrameStore(), []
    engine = _engine(bench_rig, store, events)
    thread, result = _run_in_thread(engine, spec)
    _wait_for(lambda: len(store.saves) >= 1)
    stand_in_world.contact_offset_nm = 50_000     # sample far out of reach
    _wait_for(lambda: engine.state is ScanState.PAUSED)
    reason = [e for e in events if e["type"] == "state"][-1]["payload"]["reason"]
    assert reason.startswith("contact not reached")
    assert stand_in_world.piezo[2] == 0.0         # retracted, never beyond travel
    assert max(p[2] for p, _ in stand_in_world.renders) <= 10_000
    stand_in_world.contact_offset_nm = 0.0
    engine.resume()
    thread.join(10)
    assert result["r"].state is ScanState.COMPLETED
    _assert_complete_once(store, spec)


def test_plan_outside_travel_fails_before_moving(bench_rig):
    spec = small_spec(origin_nm=(95_000, 0))
    result = _engine(bench_rig, MemoryFrameStore()).run(spec)
    assert result.state is ScanState.FAILED and "outside the piezo XY travel" in result.reason
    assert not any(c.startswith("MOV 1") for c in bench_rig.e727.state.commands)


_KILLED_RUN = """
import sys
from instruments.bench_rig import start_bench_rig
from instruments.engine import ScanEngine
from instruments.framestore import DirectoryFrameStore
from tests.instruments.conftest import small_spec, CLOCK_RATE
from tests.instruments.stand_in_world import StandInWorld
rig = start_bench_rig(world=StandInWorld(seed=0), clock_rate=CLOCK_RATE)
ScanEngine(rig.devices, DirectoryFrameStore(sys.argv[1])).run(small_spec(area_nm=(25_000, 14_000), settle_s=0.05))
"""


def test_engine_killed_mid_scan_resumes_on_directory_store(tmp_path, bench_rig):
    spec = small_spec(area_nm=(25_000, 14_000))   # 6 points (the killed run settles 50 ms at each: killed mid-scan)
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_RUN, str(tmp_path)], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    store = DirectoryFrameStore(tmp_path)
    try:
        _wait_for(lambda: len(store.saved_indices()) >= 2 or proc.poll() is not None, timeout=30)
    finally:
        proc.kill()                                   # SIGKILL: no cleanup, no goodbye
        proc.wait()
    before = store.saved_indices()
    assert 2 <= len(before) < 6, "the worker should have died mid-scan"
    mtimes = {i: store.path(i).stat().st_mtime_ns for i in before}
    result = _engine(bench_rig, store).run(spec)
    assert result.state is ScanState.COMPLETED and result.saved == 6
    assert store.saved_indices() == set(range(6))
    assert {i: store.path(i).stat().st_mtime_ns for i in before} == mtimes   # not re-captured
    for index in range(6):
        image, meta = store.load(index)
        assert image.shape == (128, 128) and meta["index"] == index
