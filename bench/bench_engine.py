"""Engine overhead per frame against the simulated hardware's own time.

The bench rig runs at clock rate 1, so the fakes' moves, settling and the simulated camera's
exposures take their real duration; the fakes add up that duration ("hardware time", the
baseline: what the rig itself needs). The scan is then run by the real engine through the real
drivers, and we print per frame:

* hardware  — simulated moves + settle + exposures (baseline)
* wall      — what the scan actually took (includes the simulator rendering frames on this CPU)
* pipeline  — wall − hardware: engine + drivers + wire + store (goal: < 5 % of hardware)
* engine    — wall − time inside device calls − time inside store.save: the engine's own work
* store     — time inside DirectoryFrameStore.save (atomic 16-bit TIFF write + fsync)

    .venv/bin/python bench/bench_engine.py [--quick] [--stand-in]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from instruments.bench_rig import start_bench_rig  # noqa: E402
from instruments.engine import Devices, ScanEngine, ScanState  # noqa: E402
from instruments.framestore import DirectoryFrameStore  # noqa: E402
from instruments.plans import ScanSpec, grid_points  # noqa: E402


class _Timed:
    """Proxy adding the wall time of every method call to a shared counter."""

    def __init__(self, target, counter: list[float]):
        self._target, self._counter = target, counter

    def __getattr__(self, name):
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                self._counter[0] += time.perf_counter() - t0
        return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 × 2 grid instead of 4 × 4")
    parser.add_argument("--stand-in", action="store_true", help="use the tests' cheap stand-in world")
    args = parser.parse_args()

    if args.stand_in:
        from tests.instruments.stand_in_world import StandInWorld
        world = StandInWorld(seed=0)
        roi, focus_start = (0, 0, 128, 128), world.virtual_image_focus_nm() + 1_000
        fov = 14_000.0
    else:
        from instruments.sim.world import SimWorld
        world = SimWorld(seed=0)
        x, y, _, _ = world.default_roi
        roi = (x + 128, y + 128, x + 384, y + 384)       # 256 × 256 on the sphere
        focus_start = world.virtual_image_focus_nm() + 1_000
        fov = 2 * world.fov_radius_nm
    usable = fov / 2 ** 0.5
    n = 2 if args.quick else 4
    extent = usable * (1 + (n - 1) * 0.8)               # exactly n × n frames at 20 % overlap
    spec = ScanSpec(origin_nm=(40_000, 40_000), area_nm=(extent, extent), fov_diameter_nm=fov,
                    overlap=0.2, roi=roi, exposure_s=0.01, settle_s=0.0, focus_start_nm=focus_start,
                    focus_range_nm=4_000, focus_mode="last")
    frames = len(grid_points(spec))

    with start_bench_rig(world=world, clock_rate=1.0) as rig, tempfile.TemporaryDirectory() as tmp:
        device_s, store_s = [0.0], [0.0]
        devices = Devices(piezo=_Timed(rig.piezo, device_s), focus=_Timed(rig.focus, device_s),
                          camera=_Timed(rig.camera, device_s), feedback=_Timed(rig.feedback, device_s))
        store = _Timed(DirectoryFrameStore(tmp), store_s)
        hw0 = rig.hardware_busy_s()
        t0 = time.perf_counter()
        result = ScanEngine(devices, store).run(spec)
        wall = time.perf_counter() - t0
        hardware = rig.hardware_busy_s() - hw0
    if result.state is not ScanState.COMPLETED:
        raise SystemExit(f"scan did not complete: {result}")

    pipeline = wall - hardware
    engine_own = wall - device_s[0] - store_s[0]
    world_name = "stand-in world" if args.stand_in else "SimWorld"
    print(f"scan: {frames} frames, ROI {roi[2] - roi[0]}×{roi[3] - roi[1]}, {world_name}, clock rate 1")
    print(f"{'per frame':<44}{'ms':>9}{'vs hardware':>14}")
    print(f"{'hardware (baseline: moves+settle+exposure)':<44}{1e3 * hardware / frames:9.2f}{'1.000':>14}")
    for label, value in (("wall (what the scan took)", wall), ("pipeline = wall - hardware", pipeline),
                         ("engine own (outside devices and store)", engine_own),
                         ("store.save (atomic TIFF + fsync)", store_s[0]),
                         ("inside device calls (incl. hardware waits)", device_s[0])):
        print(f"{label:<44}{1e3 * value / frames:9.2f}{value / hardware:14.3f}")
    verdict = "meets" if engine_own / hardware < 0.05 else "misses"
    print(f"engine overhead {100 * engine_own / hardware:.2f}% of hardware time ({verdict} the < 5% goal); "
          f"whole pipeline incl. drivers/wire/polling/store {100 * pipeline / hardware:.1f}%")


if __name__ == "__main__":
    main()
