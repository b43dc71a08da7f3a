"""Flat field calibrated on bare silicon vs estimated from a chip scan, against the true shading.

For each seed, on the simulated bench (one focal plane):

- a 4×4 scan of the default chip (30 % overlap): the flat field estimated from its own frames
  (``imaging.flatfield.estimate_flatfield``, BaSiC-style) is the baseline; stitching then fits it
  again to where the placed frames overlap (``flatfield_from_overlaps`` at the stitch's positions,
  the frames it placed from links; the seconds exclude the stitch);
- ``--bare N`` frames of a bare-silicon wafer with dust on it (``instruments.sim.chip.bare_silicon``
  mounted on the same bench, a scan step apart): the flat field calibrated from them
  (``flatfield_from_calibration``: the per-pixel median, what the app does), and their mean (what it
  did before, and what it still does with fewer than three frames); and the median with the camera's
  dark frame subtracted, which the app does not take yet (the PCO.edge adds ~100 ADU of offset).

Truth: the bench's noise-free image of a wafer without particles (the Köhler field × the sphere's
vignetting and rim darkening), normalised to mean 1 inside the useful field of view (the inner
``USEFUL_FOV_FRACTION`` of the sphere's radius, where stitching uses the frames). Error:
|flat / truth − 1| there, mean and 99th percentile, in %. Seconds: the flat field alone.

    .venv/bin/python bench/bench_flatfield.py [--seeds 1 2 3] [--bare 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_stitching import stopwatch  # noqa: E402

from imaging.flatfield import estimate_flatfield, flatfield_from_calibration, flatfield_from_overlaps  # noqa: E402
from imaging.stitching import USEFUL_FOV_FRACTION, stitch  # noqa: E402
from instruments.sim.camera import expose  # noqa: E402
from instruments.sim.chip import bare_silicon  # noqa: E402
from instruments.sim.dataset import default_step_nm, simulate_scan  # noqa: E402
from instruments.sim.world import SimWorld  # noqa: E402


def true_shading(world: SimWorld, mask: np.ndarray) -> np.ndarray:
    """The shading alone: the noise-free image of a clean wafer, mean 1 inside ``mask``."""
    world.mount(bare_silicon(world.layout.bounds_nm, particles_per_mm2=0))
    rate = world.expected_electrons_per_s()
    return rate / rate[mask].mean()


def error_pct(flat: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    flat = flat / flat[mask].mean()  # a flat field's overall gain is arbitrary
    err = np.abs(flat[mask] / truth[mask] - 1) * 100
    return float(err.mean()), float(np.percentile(err, 99))


def run_seed(seed: int, n_bare: int) -> list[tuple[str, float, float, float]]:
    world = SimWorld(seed=seed)
    chip = world.layout
    step = default_step_nm(world.optics, overlap=0.3)
    scan = simulate_scan(world=world, grid=(4, 4), start_nm=(30_000, 30_000), step_nm=step)
    mask = world.fov_mask(fraction=USEFUL_FOV_FRACTION)
    world.mount(bare_silicon(chip.bounds_nm, seed=seed))
    cols = int(np.ceil(np.sqrt(n_bare)))
    bare = simulate_scan(world=world, grid=(int(np.ceil(n_bare / cols)), cols), start_nm=(30_000, 30_000),
                         step_nm=step).frames[:n_bare]
    dark = expose(np.zeros(bare[0].shape, np.float32), camera=world.camera, exposure_s=0.01,
                  rng=np.random.default_rng(seed), noise_seed=seed)
    truth = true_shading(world, mask)
    placed = stitch(list(scan.frames), scan.nominal_xy_nm, pixel_size_nm=scan.pixel_size_nm, fov_mask=mask,
                    anchor="center")
    by_links = [k for k in range(len(scan.frames)) if k not in placed.report.placed_by_stage]
    rows = []
    for name, make in [
        (f"estimated from the {len(scan.frames)} chip frames (baseline)", lambda: estimate_flatfield(scan.frames, mask=mask)),
        ("fitted to the chip scan's overlaps (stitching's)", lambda: flatfield_from_overlaps(
            scan.frames[by_links], placed.positions_px[by_links], mask=mask)),
        (f"bare silicon, median of {n_bare} (ours)", lambda: flatfield_from_calibration(bare, mask=mask)),
        (f"bare silicon, mean of {n_bare}", lambda: flatfield_from_calibration(
            [np.round(bare.mean(0)).astype(np.uint16)], mask=mask)),
        (f"bare silicon, median of {n_bare}, dark subtracted (not in the app)",
         lambda: flatfield_from_calibration(bare, dark_frames=dark, mask=mask)),
    ]:
        elapsed = stopwatch()
        ff = make()
        rows.append((name, *error_pct(ff.flat, truth, mask), elapsed().wall_s))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--bare", type=int, default=5, help="bare-silicon frames (≥ 3 for the median)")
    args = parser.parse_args(argv)
    print(f"{'seed':>4}  {'flat field':<58} {'mean %':>7} {'p99 %':>7} {'s':>6}")
    for seed in args.seeds:
        for name, mean, p99, seconds in run_seed(seed, args.bare):
            print(f"{seed:>4}  {name:<58} {mean:7.2f} {p99:7.2f} {seconds:6.2f}", flush=True)


if __name__ == "__main__":
    main()
