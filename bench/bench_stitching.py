"""Stitching accuracy and speed: ours vs ashlar and m2stitch on the same simulated frames.

Default (``--source sim``): the physics simulator's SSUM scans
(``instruments.sim.dataset.simulate_scan``): a serpentine raster with 30 % overlap of the FOV's
inscribed square, the sphere's circular field of view with its darkening rim, field-dependent blur,
camera noise; a planar chip (layer heights × 0.01: 19 nm from top to bottom, within the sphere's
±35 nm depth of field, so every layer is in focus), a flat one (heights
× 0.1: its lowest layers, up to 190 nm down, are blurred by up to ~8 px, by how far the sphere
rests above them, which changes from frame to frame), the default chip (one plane focused on the
contact surface: lower layers defocused, differently from frame to frame) and the default chip "stacked" (a Z-stack per point, planes
a depth of field apart from what may stand above the contact surface down the chip's 1.9 µm, fused to extended depth of field as the scan engine does). Stage errors: ``StageErrors(noise_nm = 10 % of the step / 3)`` (3σ = 10 %
of the step per axis, plus the default scanner rotation, scale error and drift); the measured
largest error is printed with each scan. Truth: the simulator's ``frame_to_chip`` maps, as frame
top-left offsets in frame 0's pixels. Ours runs with the useful field of view
(``USEFUL_FOV_FRACTION`` of the circle's radius) and ``anchor="center"``; the peers get the same
frames and stage positions. Error = Euclidean distance of each frame's position (relative to
frame 0) from the truth after removing the best common translation (px). The "stage" row is
the nominal positions unstitched: the error a method has when it trusts the stage alone. The
"floor" row is no stitcher: it refines each of our links from its true offset and solves as we
do, so what remains is the frames' own disagreement with the truth (on the simulator: field-
and depth-dependent blur, whose gather model moves fine lines by tenths of a pixel between
frames, and camera noise): about the least error a stitcher that picks every right peak has. Not
a strict bound: a refinement started at the truth can slide to a neighbouring optimum a pixel
or two away, where ours, refining from the inferred peak, may not. Under ours, a line gives the
frames its report calls uncertain (``StitchReport.uncertain_frames``) and their mean error beside
the others'.

``--stage repeatable``: the simulator's own closed-loop scanner instead (``StageErrors()``: 1.5 nm settling
noise and slow drift; the camera turned 0.35° against it, its scale 0.1–0.15 % off, which alone moves the stage
positions 1.5–2 px off), and a row "ours+rep" beside ours: the same stitch told the stage repeats within
``REPEATABLE_STAGE_NM`` (``imaging.repeatable_stage``: frames where the stage put them, mapped by the rotation
and per-axis scale the overlaps measure). The peers run as always.

``--live``: rows for the live mosaic beside them (``IncrementalStitcher.add_frame``, frames one by one in the
scan's serpentine order, the flat field a 3×3 scan of the simulator's bare silicon gives): "live" as each frame
was placed, "live+s" settled after each frame (``IncrementalStitcher.settle``, as the live thread does when no
frame waits); with ``--stage repeatable`` also "live+rep" and "live+rep+s", told the stage repeats. Their time is
the whole scan's, every frame's placing included.

``--source synthetic``: IC-like scene cut into a grid of frames with a circular field of view (diameter = frame
width), 30 % overlap, uniform stage errors up to 10 % of the step per axis, 35 % radial
vignetting and Poisson noise (tests/imaging/scan_factory.py). Error = Euclidean distance of each
frame's position from its true one after removing the best common translation (px).

    .venv/bin/python bench/bench_stitching.py [--quick] [--source sim|synthetic] [--seeds 1 2 3 4]
        [--chips planar flat default stacked] [--stage noisy|repeatable] [--live] [--repeat 3]

Times on a shared machine vary by ±20 % from run to run: ``--repeat 3`` reports each method's
fastest of three runs on the same frames. "time s" is wall-clock, "cpu s" the process's CPU
time over all its threads and child processes: ours measures a scan's links on every core
(:func:`imaging.parallel.parallel_map`) and forks its joint inference's back-and-forth run to a
second one, ashlar's JVM runs threads of its own, and an idle OpenBLAS thread spinning on a peer's
small products counts as CPU too.

Peers (bench-only extras, skipped with a line if missing): ashlar==1.20.0 (needs a JDK; set
JAVA_HOME), m2stitch==0.7.2. ashlar gets the frames through an in-memory numpy Reader with the
stage positions; m2stitch gets the grid indices and the stage positions as its initial guess (overlap_diff_threshold=25 %: the relative stage error
reaches 14 % of a frame, beyond its 10 % default; ncc_threshold=0.1, see imaging_anchors §1.2).
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imaging.consensus import INFERRED_PRIOR_WEIGHT  # noqa: E402
from imaging.fieldblur import cross_blurred, estimate_edge_blur  # noqa: E402
from imaging.flatfield import estimate_flatfield, flatfield_from_calibration  # noqa: E402
from imaging.pairwise import refine_pair  # noqa: E402
from imaging.placement import Link, solve_positions  # noqa: E402
from imaging.stitching import (  # noqa: E402
    FIELD_BLUR_LINKS,
    MATCHED_LENS_FRACTION,
    USEFUL_FOV_FRACTION,
    IncrementalStitcher,
    stitch,
    useful_fov_mask,
)
from tests.imaging.scan_factory import position_errors, synthetic_scan  # noqa: E402


@dataclass(frozen=True)
class BenchScan:
    """What every stitcher gets: frames (N, rows, cols) uint16, nominal (x, y) stage positions in
    nm, pixel size (nm), full-circle FOV mask, (rows, cols) grid, step (px) and the truth (N, 2)
    (x, y) px; ``useful_fov`` is passed to ours (USEFUL_FOV_FRACTION on simulator frames)."""

    frames: list
    nominal_xy_nm: np.ndarray
    pixel_size_nm: float
    fov_mask: np.ndarray
    grid: tuple[int, int]
    step_px: float
    true_xy_px: np.ndarray
    useful_fov: float = 1.0
    seed: int | None = None  # the simulator's (its bare silicon gives the live rows their flat field)


#: How deep (nm below the contact surface) the "stacked" scans' Z-stacks reach: the default chip's layers span 0–1.9 µm.
STACK_DEPTH_NM = 1900.0


def stack_depths_nm(optics, depth_nm: float = STACK_DEPTH_NM) -> tuple[float, ...]:
    """Feature depths (nm below the contact surface) of a Z-stack's planes that leave no feature in the field
    blurred by defocus more than by the sphere's own PSF: from the sphere's sag at the field's rim above the
    contact surface (r_FOV² / D: a taller feature there clears the sphere) down to ``depth_nm``. A feature Δ from a
    plane's depth blurs by σ ≈ defocus slope · M · Δ (M² of focus travel per nm, seen back through M), so the
    planes lie at most 2 σ_PSF / (slope · M) apart (68 nm at M = 4: 43 planes from 890 nm above to 1.9 µm below).
    Planes 300 nm apart from the surface down (7) left most layers ~6 px blurred in every plane, differently from
    frame to frame (the sphere rests on the tallest feature under it): the frames disagreed at their true offsets
    by up to 1.6 px (3×3 scans on the closed-loop stage, seeds 1–3, the "floor": 0.29–0.61 px mean). From the
    surface down at this spacing, a dot array standing above the contact surface near the rim was never in
    focus: with a perfect stage and no noise, seed 2's frames still disagreed by up to 5.8 px (0.07 from the sag
    down)."""
    spacing = 2 * optics.psf_sigma_nm(0.0) / (optics.defocus_slope * optics.magnification_at(0.0))
    top = -optics.rim_sag_nm()
    return tuple(np.linspace(top, depth_nm, int(np.ceil((depth_nm - top) / spacing)) + 1))


#: Chip kinds: the default chip's layer heights scaled by this factor (1: as they are).
CHIP_HEIGHTS = {"planar": 0.01, "flat": 0.1, "default": 1.0, "stacked": 1.0}


#: The repeatability ``--stage repeatable`` tells ours (nm, 1σ): the simulated scanner's 1.5 nm settling noise
#: and its drift over a scan.
REPEATABLE_STAGE_NM = 2.0


def sim_scan(grid: tuple[int, int], *, seed: int, chip: str = "default", stage: str = "noisy") -> tuple[BenchScan, float]:
    """A simulator scan of a ``CHIP_HEIGHTS`` kind in raster order (row-major, as the peers expect)
    and its largest stage error as a fraction of the step (relative to frame 0, per axis).
    "stacked": a Z-stack per point fused to extended depth of field (:func:`stack_depths_nm`).
    ``stage``: "noisy" (3σ = 10 % of the step) or "repeatable" (the simulator's closed-loop scanner)."""
    from instruments.sim.chip import Chip, scaled_layers
    from instruments.sim.dataset import default_step_nm, simulate_scan
    from instruments.sim.world import SimWorld, StageErrors

    probe = SimWorld(seed=seed)
    step_nm = default_step_nm(probe.optics, overlap=0.3)
    errors = StageErrors(noise_nm=0.1 * step_nm / 3) if stage == "noisy" else StageErrors()  # noisy: 3σ = 10 % of the step
    layout = Chip(seed=seed, layers=scaled_layers(CHIP_HEIGHTS[chip]))
    scan = simulate_scan(world=SimWorld(seed=seed, layout=layout, stage_errors=errors), grid=grid, step_nm=step_nm,
                         stack_depths_nm=stack_depths_nm(probe.optics) if chip == "stacked" else None)
    order = np.lexsort((scan.grid_index[:, 1], scan.grid_index[:, 0]))  # serpentine → row-major
    true = true_offsets_px(scan.frame_to_chip[order])
    nominal = scan.nominal_xy_nm[order]
    stage_px = (nominal - nominal[0]) / scan.pixel_size_nm
    worst = float(np.abs(stage_px - true).max() / (step_nm / scan.pixel_size_nm))
    return BenchScan(list(scan.frames[order]), nominal, scan.pixel_size_nm, scan.fov_mask, grid,
                     step_nm / scan.pixel_size_nm, true, USEFUL_FOV_FRACTION, seed), worst


def true_offsets_px(frame_to_chip) -> np.ndarray:
    """(N, 2) each frame's top-left offset from frame 0's, in frame 0's pixels, from the simulator's (N, 3, 3)
    frame→chip maps."""
    t = np.asarray(frame_to_chip, float)
    return np.array([np.linalg.solve(t[0][:2, :2], t[k][:2, 2] - t[0][:2, 2]) for k in range(len(t))])


@dataclass(frozen=True)
class Elapsed:
    """Wall-clock and CPU seconds (every thread of the process, the JVM's included)."""

    wall_s: float
    cpu_s: float


def stopwatch():
    """Started now; call the result for the :class:`Elapsed` since."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    return lambda: Elapsed(time.perf_counter() - wall, cpu_seconds() - cpu)


def cpu_seconds() -> float:
    """CPU seconds of this process's threads and of its children once they have ended (ours forks the
    joint inference's back-and-forth run to another core)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def run_stage(scan):
    """No stitching: the controller's nominal positions as they are (what a peer that rejects
    every link falls back to)."""
    elapsed = stopwatch()
    return np.asarray(scan.nominal_xy_nm, float) / scan.pixel_size_nm, elapsed()


def run_ours(scan, **options):
    """Positions, :class:`Elapsed` and our stitching report (its uncertain frames are checked against the truth)."""
    elapsed = stopwatch()
    mosaic = stitch(scan.frames, scan.nominal_xy_nm, pixel_size_nm=scan.pixel_size_nm, fov_mask=scan.fov_mask,
                    useful_fov_fraction=scan.useful_fov, anchor="center", **options)
    return mosaic.positions_px, elapsed(), mosaic.report


def run_ours_repeatable(scan):
    """Ours told the stage repeats within ``REPEATABLE_STAGE_NM`` (``--stage repeatable``)."""
    return run_ours(scan, stage_repeatability_nm=REPEATABLE_STAGE_NM)


@functools.cache
def bare_silicon_flatfield(seed: int):
    """The flat field a lab calibrates its instrument with: a 3×3 scan of the simulator's bare silicon (its dust
    included), as the live mosaic uses it (``Instrument.flatfield_calibration``)."""
    from instruments.sim.chip import Chip, bare_silicon
    from instruments.sim.dataset import simulate_scan
    from instruments.sim.world import SimWorld, StageErrors

    layout = bare_silicon(Chip(seed=seed).bounds_nm, seed=seed)
    scan = simulate_scan(world=SimWorld(seed=seed, layout=layout, stage_errors=StageErrors()), grid=(3, 3))
    return flatfield_from_calibration(list(scan.frames), mask=scan.fov_mask)


def run_live(scan, *, settle: bool, repeatable: bool = False):
    """The live mosaic: frames added one by one in the scan's serpentine order (as the instrument takes them),
    with the simulator's bare-silicon flat field; ``settle``: settled after each frame (as the live thread does
    when no frame waits); ``repeatable``: told the stage repeats within ``REPEATABLE_STAGE_NM``."""
    from instruments.sim.dataset import serpentine

    taken = [r * scan.grid[1] + c for r, c in serpentine(scan.grid)]  # scan.frames are in raster order
    flatfield = bare_silicon_flatfield(scan.seed) if scan.seed is not None else None
    elapsed = stopwatch()
    stitcher = IncrementalStitcher(frame_shape=scan.frames[0].shape, pixel_size_nm=scan.pixel_size_nm,
                                   fov_mask=scan.fov_mask, useful_fov_fraction=scan.useful_fov, flatfield=flatfield,
                                   stage_repeatability_nm=REPEATABLE_STAGE_NM if repeatable else None)
    for k in taken:
        stitcher.add_frame(scan.frames[k], scan.nominal_xy_nm[k], anchor="center")
        if settle:
            stitcher.settle()
    positions = np.empty((len(taken), 2))
    positions[taken] = stitcher.positions_px
    return positions, elapsed()


def run_floor(scan):
    """Not a stitcher (it uses the truth): every link of ours refined (Gauss–Newton, no search)
    from its *true* offset, on frames whose field blur is matched as ours matches it (estimated
    at the true offsets), then our weighted solve over all of them, pulled towards the truth
    where ours is pulled towards the joint inference's placement. What is left is the
    frames' own disagreement with the truth (camera noise, field-dependent blur, the simulator's
    rendering): the floor under any placement that picks every link's right peak."""
    elapsed = stopwatch()
    mask = useful_fov_mask(scan.fov_mask, scan.useful_fov)
    stitcher = IncrementalStitcher(frame_shape=scan.frames[0].shape, pixel_size_nm=scan.pixel_size_nm,
                                   fov_mask=mask, flatfield=estimate_flatfield(scan.frames, mask=mask))
    for frame, nominal in zip(scan.frames, scan.nominal_xy_nm, strict=True):
        stitcher.add_frame(frame, nominal, anchor="center")
    # the field blur matched as ours matches it (imaging/fieldblur.py), judged at the true offsets
    frame = lambda k: stitcher._features[k][1]  # noqa: E731 (the frames ours refines on)
    true_offset = lambda link: scan.true_xy_px[link.j] - scan.true_xy_px[link.i]  # noqa: E731
    judges = sorted((link for link in stitcher.links if not link.reason), key=lambda link: -link.lens_px)
    edge = estimate_edge_blur([(frame(link.i), frame(link.j), true_offset(link)) for link in judges[:FIELD_BLUR_LINKS]],
                              mask).edge_blur_px
    largest = max((link.lens_px for link in judges), default=0)
    links = []
    for link in stitcher.links:  # the links ours measures, each refined from the truth instead
        true = true_offset(link)
        side = link.lens_px >= MATCHED_LENS_FRACTION * largest  # ours matches side neighbours only
        pair = refine_pair(*cross_blurred(frame(link.i), frame(link.j), mask, true, edge if side else 0.0), true,
                           mask=mask)
        # a link whose frames have no optimum near the truth (a blank or low-contrast overlap the
        # refinement slides off) pins nothing: dropped, as ours drops it
        wandered = np.hypot(*(np.asarray(pair.offset_px) - true)) > 2.0
        links.append(Link(link.i, link.j, link.nominal_offset_px, tuple(pair.offset_px), link.score,
                          pair.information, pair.reason or ("no optimum near the truth" if wandered else "")))
    # where the links leave a frame free (parallel lines only), ours follows the joint inference's
    # placement; here the truth takes its place
    nominal = scan.nominal_xy_nm / scan.pixel_size_nm  # top-left or centre: only differences count
    truth = nominal[0] + scan.true_xy_px - scan.true_xy_px[0]
    placement = solve_positions(nominal, links, min_score=-1.0, max_residual_px=1e3, prior_xy_px=truth,
                                prior_weight=INFERRED_PRIOR_WEIGHT)
    return placement.positions_px, elapsed()


def run_ashlar(scan):
    os.environ.setdefault("JAVA_HOME", "/usr/lib/jvm/java-17-openjdk-amd64")
    from ashlar import reg  # starts a JVM on first import

    class ArrayMetadata(reg.Metadata):
        def __init__(self, tiles, positions_yx):
            self.tiles, self._pos = tiles, positions_yx

        _num_images = property(lambda self: len(self.tiles))
        num_channels = property(lambda self: 1)
        pixel_size = property(lambda self: 1.0)
        pixel_dtype = property(lambda self: self.tiles.dtype)

        def tile_position(self, i):
            return self._pos[i]

        def tile_size(self, i):
            return np.array(self.tiles.shape[1:3])

    class ArrayReader(reg.Reader):
        def __init__(self, tiles, positions_yx):
            self.metadata = ArrayMetadata(tiles, positions_yx)

        def read(self, series, c):
            return self.metadata.tiles[series]

    tiles = np.stack(scan.frames)
    stage_yx = (scan.nominal_xy_nm / scan.pixel_size_nm)[:, ::-1].copy()
    elapsed = stopwatch()
    aligner = reg.EdgeAligner(ArrayReader(tiles, stage_yx), channel=0, max_shift=0.2 * scan.step_px + 2,
                              filter_sigma=1.0, do_make_thumbnail=False, verbose=False)
    aligner.run()
    mosaic = reg.Mosaic(aligner, aligner.mosaic_shape, verbose=False)
    mosaic.assemble_channel(0)
    return np.asarray(aligner.positions)[:, ::-1], elapsed()


def run_m2stitch(scan):
    import m2stitch

    rows, cols = np.divmod(np.arange(len(scan.frames)), scan.grid[1])
    guess_yx = (scan.nominal_xy_nm / scan.pixel_size_nm)[:, ::-1]
    elapsed = stopwatch()
    result, _ = m2stitch.stitch_images(np.stack(scan.frames), rows=list(rows), cols=list(cols),
                                       position_initial_guess=guess_yx, row_col_transpose=False,
                                       ncc_threshold=0.1, overlap_diff_threshold=25)
    positions = result[["x_pos", "y_pos"]].to_numpy(float)
    return positions, elapsed()


def synthetic_cases(quick: bool):
    specs = [((3, 3), 256, 0)] if quick else [((3, 3), 256, 0), ((4, 5), 512, 1), ((6, 6), 512, 2)]
    for grid, frame_px, seed in specs:
        scan = synthetic_scan(grid=grid, frame_px=frame_px, overlap=0.3, stage_error=0.1, seed=seed)
        yield f"{grid[0]}x{grid[1]} of {frame_px}px", BenchScan(
            list(scan.frames), scan.nominal_xy_nm, scan.pixel_size_nm, scan.fov_mask, scan.grid, scan.step_px,
            scan.true_xy_px)


def sim_cases(quick: bool, seeds=(1,), chips=tuple(CHIP_HEIGHTS), stage: str = "noisy", grids=((3, 3), (4, 4))):
    kinds = [((3, 3), "planar")] if quick else [(grid, chip) for chip in chips for grid in grids]
    specs = [(grid, chip, seed) for grid, chip in kinds for seed in seeds]
    for grid, chip, seed in specs:
        started = time.perf_counter()
        scan, worst = sim_scan(grid, seed=seed, chip=chip, stage=stage)
        print(f"  [{grid[0]}x{grid[1]} {chip} chip seed {seed}: "
              f"{len(scan.frames)} frames of {scan.frames[0].shape[1]}x{scan.frames[0].shape[0]} px, "
              f"step {scan.step_px:.0f} px, largest stage error {100 * worst:.1f} % of the step, "
              f"simulated in {time.perf_counter() - started:.0f} s]")
        yield f"{grid[0]}x{grid[1]} {chip}" + (f" s{seed}" if len(seeds) > 1 else ""), scan


def grid_size(text: str) -> tuple[int, int]:
    """ "8x8" → (8, 8): a ``--grids`` entry."""
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not ROWSxCOLS, e.g. 8x8") from None
    if rows < 1 or cols < 1 or rows * cols < 2:
        raise argparse.ArgumentTypeError(f"{text!r}: a scan needs at least two frames")
    return rows, cols


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small scan (3×3 frames)")
    parser.add_argument("--source", choices=("sim", "synthetic"), default="sim",
                        help="physics simulator scans (default) or the tests' synthetic IC-like scene")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1],
                        help="simulator chip and stage seeds (default 1); several give each scan kind per seed")
    parser.add_argument("--chips", nargs="+", choices=tuple(CHIP_HEIGHTS), default=list(CHIP_HEIGHTS),
                        help="simulator chip kinds (default: all), each at every --grids size")
    parser.add_argument("--grids", nargs="+", type=grid_size, default=[(3, 3), (4, 4)], metavar="ROWSxCOLS",
                        help="simulator scan sizes (default: 3x3 4x4); e.g. 8x8 for a lab's whole-chip scan")
    parser.add_argument("--stage", choices=("noisy", "repeatable"), default="noisy",
                        help="simulator stage: errors 3σ = 10 %% of the step (default), or the simulator's closed-loop "
                             "scanner, with a row for ours told it is repeatable")
    parser.add_argument("--live", action="store_true",
                        help="also the live mosaic (frames one by one, a bare-silicon flat field): as placed "
                             "('live') and settled after each frame ('live+s'); with --stage repeatable also told so")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run every method this many times on each scan and report its fastest (default 1)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # ashlar/skimage deprecation chatter would bury the table
    os.environ.setdefault("TQDM_DISABLE", "1")
    peers = {"ours": run_ours, "ashlar": run_ashlar, "m2stitch": run_m2stitch, "stage": run_stage,
             "floor": run_floor}
    if args.stage == "repeatable":
        peers = {"ours": run_ours, "ours+rep": run_ours_repeatable, **{k: v for k, v in peers.items() if k != "ours"}}
    if args.live:
        live = {"live": functools.partial(run_live, settle=False), "live+s": functools.partial(run_live, settle=True)}
        if args.stage == "repeatable":
            live.update({"live+rep": functools.partial(run_live, settle=False, repeatable=True),
                         "live+rep+s": functools.partial(run_live, settle=True, repeatable=True)})
        peers.update(live)
    if args.source == "sim":
        stage = ("stage noise 3σ = 10 % of step" if args.stage == "noisy" else
                 f"the simulator's closed-loop stage (ours+rep: told it repeats within {REPEATABLE_STAGE_NM} nm)")
        print(f"stitching on simulator scans: 30 % overlap, circular FOV (rim darkening), {stage}, camera noise; "
              f"ours uses the useful FOV ({USEFUL_FOV_FRACTION:.2f} of the radius)")
        cases = sim_cases(args.quick, tuple(args.seeds), tuple(args.chips), args.stage, tuple(args.grids))
    else:
        print("stitching on synthetic scans: 30 % overlap, circular FOV, stage error ≤ 10 % of step, "
              "vignetting 35 %, Poisson noise")
        cases = synthetic_cases(args.quick)
    header = f"{'scan':>16} {'method':>10} {'mean px':>8} {'max px':>8} {'time s':>8} {'cpu s':>7} {'time vs ours':>13}"
    for label, scan in cases:
        print(header)
        ours_time = None
        for name, run in peers.items():
            try:
                runs = [run(scan) for _ in range(max(1, args.repeat))]
                positions, _, *report = runs[-1]
                fastest = min((r[1] for r in runs), key=lambda e: e.wall_s)
            except ImportError as exc:
                print(f"{label:>16} {name:>10}  skipped: not installed ({exc.name})")
                continue
            except Exception as exc:  # a peer failing on these frames is itself a result
                print(f"{label:>16} {name:>10}  failed: {type(exc).__name__}: {str(exc)[:80]}")
                continue
            positions = np.asarray(positions, float)
            err = position_errors(positions - positions[0], scan.true_xy_px)
            if name == "ours":
                ours_time = fastest.wall_s
            ratio = f"{fastest.wall_s / ours_time:12.1f}x" if ours_time and name not in ("stage", "floor") else ""
            print(f"{label:>16} {name:>10} {err.mean():8.3f} {err.max():8.3f} {fastest.wall_s:8.2f} {fastest.cpu_s:7.2f}"
                  f" {ratio:>13}", flush=True)
            if report:
                flagged = np.isin(np.arange(len(err)), report[0].uncertain_frames)
                print(f"{'':>16} {'':>10} frames it reports uncertain: {flagged.sum()} of {len(err)}"
                      + (f", their mean error {err[flagged].mean():.2f} px" if flagged.any() else "")
                      + (f"; the others' {err[~flagged].mean():.2f} px" if (~flagged).any() else ""))


if __name__ == "__main__":
    main()
