"""Z-stacks through the scan engine: how far a deep chip's stitch lands from the truth, one plane against stacks.

Not a timing. The real engine and drivers scan the physics simulator's default chip (layers 0–1.9 µm deep) over
the bench rig, as a lab would: contact, autofocus at every point (the sharpest plane, which on a deep chip may be
any layer), then either one frame (the baseline, in the same run) or a Z-stack centred on that focus and fused to
extended depth of field. The simulator's own closed-loop stage; the truth is its frame→chip map at each saved
frame's exposure. Each scan is stitched as the final stitch does ("ours"), and told the stage repeats within 2 nm
("ours+rep"), and the "floor" (``bench_stitching.py``'s: our links refined from their true offsets, the frames' own
disagreement); error as there (mean/max px after the best common translation). Seconds: the scan at the rig's
simulated clock, rendering included.

    .venv/bin/python bench/bench_zstack.py [--seeds 1 2 3] [--grid 3] [--stacks 51x1500 51x1100]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from bench_stitching import (  # noqa: E402
    USEFUL_FOV_FRACTION,
    BenchScan,
    run_floor,
    run_ours,
    run_ours_repeatable,
    true_offsets_px,
)

from instruments.bench_rig import FOCUS_ORIGIN_NM, start_bench_rig  # noqa: E402
from instruments.engine import ScanEngine, ScanState  # noqa: E402
from instruments.framestore import MemoryFrameStore  # noqa: E402
from instruments.plans import ScanSpec  # noqa: E402
from instruments.scan_plan import InstrumentLimits  # noqa: E402
from instruments.sim.world import SimWorld  # noqa: E402
from tests.imaging.scan_factory import position_errors  # noqa: E402

OVERLAP = 0.3


def engine_scan(*, seed: int, grid: int, planes: int, step_nm: float) -> tuple[BenchScan, list[float]]:
    """A ``grid`` × ``grid`` engine scan of the default chip (its frames in index order, commanded positions and
    truth) and the autofocus's position at each point (µm)."""
    world = SimWorld(seed=seed)
    x, y, w, h = world.default_roi
    rendered = []  # the truth at each exposure: the last one before a save is the saved frame's (or its stack's)
    render = world.render_frame

    def recorded(**kwargs):
        rendered.append(world.frame_to_chip(kwargs.get("roi"), kwargs.get("binning", 1)))
        return render(**kwargs)

    world.render_frame = recorded
    fov_nm = 2 * world.optics.fov_radius_nm()
    usable = fov_nm / np.sqrt(2)
    side = usable + usable * (1 - OVERLAP) * (grid - 1) - 1.0  # just under `grid` frames' worth
    spec = ScanSpec(origin_nm=(40_000, 40_000), area_nm=(side, side), fov_diameter_nm=fov_nm, overlap=OVERLAP,
                    roi=(x, y, x + w, y + h), exposure_s=0.01, settle_s=0.0, focus_mode="auto",
                    focus_start_nm=FOCUS_ORIGIN_NM, focus_range_nm=40_000, focus_steps=21,
                    z_planes=planes, z_step_nm=step_nm)
    rig = start_bench_rig(world=world, clock_rate=50.0)
    try:
        store, truths = MemoryFrameStore(), []
        save = store.save

        def saved(frame):
            truths.append(rendered[-1])
            save(frame)

        store.save = saved
        result = ScanEngine(rig.devices, store).run(spec)
        if result.state is not ScanState.COMPLETED:
            raise SystemExit(f"the scan ended {result.state.value}: {result.reason}")
    finally:
        rig.close()
    frames = [store.frames[index] for index in store.saves]  # one save per point, in the order taken
    order = np.argsort([frame.index for frame in frames])
    frames, t = [frames[k] for k in order], np.array(truths)[order]
    pixel_nm = float(np.sqrt(abs(np.linalg.det(t[0][:2, :2]))))
    nominal = np.array([f.commanded_xy_nm for f in frames], float)
    scan = BenchScan([f.image for f in frames], nominal, pixel_nm, world.fov_mask(world.default_roi, 1), (grid, grid),
                     float(np.hypot(*(nominal[1] - nominal[0]))) / pixel_nm, true_offsets_px(t), USEFUL_FOV_FRACTION,
                     seed)
    return scan, [(frame.focus_nm - FOCUS_ORIGIN_NM) / 1000 for frame in frames]


def stack(text: str) -> tuple[int, float]:
    """``PLANESxSTEP_NM`` → (planes, step nm)."""
    try:
        planes, step = text.split("x")
        planes, step = int(planes), float(step)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not PLANESxSTEP_NM, e.g. 51x1500") from None
    most = InstrumentLimits().max_z_planes
    if not (2 <= planes <= most and step > 0):
        raise argparse.ArgumentTypeError(f"{text!r}: 2–{most} planes, a positive step")
    return planes, step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--grid", type=int, default=3)
    parser.add_argument("--stacks", nargs="+", type=stack, default=[(51, 1500.0)],
                        help="Z-stacks as PLANESxSTEP_NM (focus travel between planes)")
    args = parser.parse_args()
    stacks = [(1, 0.0), *args.stacks]
    print(f"the scan engine on the simulator's default chip (layers 0–1.9 µm deep), {args.grid}×{args.grid}, "
          f"{OVERLAP:.0%} overlap, closed-loop stage; mean/max px from the truth")
    print(f"{'seed':>4} {'Z-stack':>20} {'autofocus µm':>16} {'ours':>14} {'ours+rep':>14} {'floor':>14} {'scan s':>7}")
    for seed in args.seeds:
        for planes, step in stacks:
            started = time.perf_counter()
            scan, focus = engine_scan(seed=seed, grid=args.grid, planes=planes, step_nm=step)
            scan_s = time.perf_counter() - started
            cells = []
            for run in (run_ours, run_ours_repeatable, run_floor):
                positions, *_ = run(scan)
                error = position_errors(positions - positions[0], scan.true_xy_px)
                cells.append(f"{error.mean():.3f}/{error.max():.3f}")
            label = "one plane (baseline)" if planes == 1 else f"{planes} × {step / 1000:g} µm"
            print(f"{seed:>4} {label:>20} {min(focus):>7.1f} – {max(focus):>6.1f} "
                  + " ".join(f"{cell:>14}" for cell in cells) + f" {scan_s:>7.1f}", flush=True)


if __name__ == "__main__":
    main()
