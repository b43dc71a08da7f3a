"""Stitching accuracy and speed: ours vs ashlar and m2stitch on the same simulated frames.

Scans: IC-like scene cut into a grid of frames with a circular field of view (diameter = frame
width), 30 % overlap, uniform stage errors up to 10 % of the step per axis, 35 % radial
vignetting and Poisson noise (tests/imaging/scan_factory.py). Error = Euclidean distance of each
frame's position from its true one after removing the best common translation (px).

    .venv/bin/python bench/bench_stitching.py [--quick]

Peers (bench-only extras, skipped with a line if missing): ashlar==1.20.0 (needs a JDK; set
JAVA_HOME), m2stitch==0.7.2. ashlar gets the frames through an in-memory numpy Reader with the
stage positions; m2stitch gets the grid indices and the stage positions as its initial guess (overlap_diff_threshold=25 %: the relative stage error
reaches 14 % of a frame, beyond its 10 % default; ncc_threshold=0.1, see imaging_anchors §1.2).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imaging.stitching import stitch  # noqa: E402
from tests.imaging.scan_factory import position_errors, synthetic_scan  # noqa: E402


def run_ours(scan):
    started = time.perf_counter()
    mosaic = stitch(scan.frames, scan.nominal_xy_nm, pixel_size_nm=scan.pixel_size_nm, fov_mask=scan.fov_mask)
    return mosaic.positions_px, time.perf_counter() - started


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
    started = time.perf_counter()
    aligner = reg.EdgeAligner(ArrayReader(tiles, stage_yx), channel=0, max_shift=0.2 * scan.step_px + 2,
                              filter_sigma=1.0, do_make_thumbnail=False, verbose=False)
    aligner.run()
    mosaic = reg.Mosaic(aligner, aligner.mosaic_shape, verbose=False)
    mosaic.assemble_channel(0)
    return np.asarray(aligner.positions)[:, ::-1], time.perf_counter() - started


def run_m2stitch(scan):
    import m2stitch

    rows, cols = np.divmod(np.arange(len(scan.frames)), scan.grid[1])
    guess_yx = (scan.nominal_xy_nm / scan.pixel_size_nm)[:, ::-1]
    started = time.perf_counter()
    result, _ = m2stitch.stitch_images(np.stack(scan.frames), rows=list(rows), cols=list(cols),
                                       position_initial_guess=guess_yx, row_col_transpose=False,
                                       ncc_threshold=0.1, overlap_diff_threshold=25)
    positions = result[["x_pos", "y_pos"]].to_numpy(float)
    return positions, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small scan (3×3 frames of 256 px)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # ashlar/skimage deprecation chatter would bury the table
    os.environ.setdefault("TQDM_DISABLE", "1")
    cases = [((3, 3), 256, 0)] if args.quick else [((3, 3), 256, 0), ((4, 5), 512, 1), ((6, 6), 512, 2)]
    peers = {"ours": run_ours, "ashlar": run_ashlar, "m2stitch": run_m2stitch}
    print("stitching: 30 % overlap, circular FOV, stage error ≤ 10 % of step, vignetting 35 %, Poisson noise")
    print(f"{'scan':>16} {'method':>9} {'mean px':>8} {'max px':>8} {'time s':>8} {'time vs ours':>13}")
    for grid, frame_px, seed in cases:
        scan = synthetic_scan(grid=grid, frame_px=frame_px, overlap=0.3, stage_error=0.1, seed=seed)
        label = f"{grid[0]}x{grid[1]} of {frame_px}px"
        ours_time = None
        for name, run in peers.items():
            try:
                positions, seconds = run(scan)
            except ImportError as exc:
                print(f"{label:>16} {name:>9}  skipped: not installed ({exc.name})")
                continue
            except Exception as exc:  # a peer failing on these frames is itself a result
                print(f"{label:>16} {name:>9}  failed: {type(exc).__name__}: {str(exc)[:80]}")
                continue
            err = position_errors(positions, scan.true_xy_px)
            if name == "ours":
                ours_time = seconds
            ratio = f"{seconds / ours_time:12.1f}x" if ours_time else ""
            print(f"{label:>16} {name:>9} {err.mean():8.3f} {err.max():8.3f} {seconds:8.2f} {ratio:>13}")


if __name__ == "__main__":
    main()
