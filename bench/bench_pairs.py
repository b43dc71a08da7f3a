"""Cutting training pairs of a small SEM image from a large mosaic: the part the SEM image covers
(imaging.pairs.footprint_box, read with imaging.pyramid.read_region, as the pairs job does) vs the
whole mosaic decoded (what the job did before), same files, same run.

A 16-bit synthetic IC mosaic (default 12000² px, written as the stitch job writes it) and an SEM
image of 1536² px at the mosaic's pixel size registered in its middle. Each way runs in a fresh
process; printed: its peak resident memory, its time and the pairs it cut (which must be the same).

Run: .venv/bin/python bench/bench_pairs.py [--size 12000] [--sem 1536] [--pixel-size-nm 65]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
import numpy as np
from imaging.imageio import read_image16
from imaging.pairs import cut_pairs, footprint_box
from imaging.pyramid import read_region
mosaic_path, sem_path, way, rows, cols, ox, oy, pixel_size_nm = {args!r}
started = time.perf_counter()
sem = read_image16(sem_path)
mosaic_to_sem = np.array([[1.0, 0, -ox], [0, 1, -oy], [0, 0, 1]])
if way == "footprint":
    box = footprint_box(mosaic_to_sem, sem.shape, (rows, cols), grid_to_mosaic=pixel_size_nm / 32.5)
    part, origin, shape = read_region(mosaic_path, box), box[:2], (rows, cols)
else:
    part, origin, shape = read_image16(mosaic_path), (0, 0), None
result = cut_pairs(part, sem, mosaic_to_sem, mosaic_px_nm=32.5, pixel_size_nm=pixel_size_nm, tile_px=512,
                   stride_px=256, test_fraction=0.2,
                   mosaic_valid=part > 0, origin_px=origin, mosaic_shape=shape)
print(json.dumps({{"seconds": time.perf_counter() - started,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "pairs": [list(p.box_px) + [p.split] for p in result.pairs], "skipped": result.skipped}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=12000, help="mosaic side, px (default 12000)")
    parser.add_argument("--sem", type=int, default=1536, help="SEM image side, px (default 1536)")
    parser.add_argument("--pixel-size-nm", type=float, default=32.5,
                        help="the pairs' pixel size (default the mosaic's, 32.5 nm; 65: a grid of 2 mosaic px)")
    args = parser.parse_args()
    from imaging.imageio import write_image16
    from tests.imaging.synthetic_ic import ic_layout

    with tempfile.TemporaryDirectory() as folder:
        rng = np.random.default_rng(0)
        tile = (ic_layout((2000, 2000), feature_px=3.0, rng=rng).astype(np.float32) * 12000 + 2000).astype(np.uint16)
        reps = -(-args.size // 2000)
        mosaic = np.tile(tile, (reps, reps))[: args.size, : args.size]
        mosaic_path, sem_path = str(Path(folder) / "mosaic.tif"), str(Path(folder) / "sem.tif")
        write_image16(mosaic_path, mosaic, pixel_size_nm=32.5)
        ox = oy = (args.size - args.sem) // 2
        write_image16(sem_path, mosaic[oy: oy + args.sem, ox: ox + args.sem], pixel_size_nm=32.5)
        del mosaic
        print(f"pairs of a {args.sem}² px SEM image from a {args.size}² px mosaic of 32.5 nm pixels "
              f"(tiles 512 px, stride 256, at {args.pixel_size_nm:g} nm)")
        results = {}
        for way in ("whole", "footprint"):
            code = CHILD.format(root=str(ROOT), args=(mosaic_path, sem_path, way, args.size, args.size, ox, oy,
                                                      args.pixel_size_nm))
            wall = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
            results[way] = json.loads(out.strip().splitlines()[-1])
            r = results[way]
            print(f"{way:>10}: peak {r['peak_mb']:7.0f} MB, {r['seconds']:6.2f} s in the job's steps "
                  f"({time.perf_counter() - wall:.1f} s with the interpreter), {len(r['pairs'])} pairs, skipped {r['skipped']}")
        same = results["whole"]["pairs"] == results["footprint"]["pairs"] and \
            results["whole"]["skipped"] == results["footprint"]["skipped"]
        print(f"same pairs and skipped counts: {same}; peak memory whole / footprint: "
              f"{results['whole']['peak_mb'] / results['footprint']['peak_mb']:.1f}x")


if __name__ == "__main__":
    main()
