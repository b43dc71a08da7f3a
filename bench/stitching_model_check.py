"""Is a wrong stitch the joint inference's search failing, or the model preferring it?

For simulator scans with known truth, stitches as ``bench_stitching.py`` does and scores two
placements under the model the joint inference maximises (``imaging.placement``): the stage
prior plus every link's potential from its NCC surface, with the σ and peak mode of the last
inference the stitch ran. The placements are the inference's whole-pixel displacements and
the truth's, rounded (its common offset searched within ±3 px, then each frame within a
pixel for the best score). Within a pixel of each
other everywhere, the rest is the sub-pixel refinement's. Otherwise, when the truth scores higher,
a better search would find it; when the inferred placement scores higher, the evidence itself
(the NCC surfaces) favours the wrong offsets and only a better similarity measure can help.

The link columns say why, from each link's NCC surface at its true offset (within a pixel)
against its best peak: "best" where the truth is the best peak, "tie" where a peak elsewhere
beats it by < 0.02 (an alias of a periodic array: only loops of frames and the stage prior can
decide), "worse" where a peak elsewhere beats it by > 0.1 (the two frames do not look alike
at the true offset: on the default chip each layer's defocus changes from frame to frame).

    .venv/bin/python bench/stitching_model_check.py [--chip planar|flat|default|stacked] [--grid 4]
        [--seeds 1 2 3]
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from bench_stitching import CHIP_HEIGHTS, run_ours, sim_scan  # noqa: E402

import imaging.consensus as consensus  # noqa: E402
import imaging.placement as placement  # noqa: E402
from tests.imaging.scan_factory import position_errors  # noqa: E402


def model(links, *, sigma_px: float, radius_px: int, tolerant: bool = False):
    """log p(displacements) under the joint inference's model (stage prior + link potentials),
    scored as the inference scores its own placements."""
    floor = placement.MRF_FLOOR
    edges = placement._mrf_edges(links, radius_px=radius_px, sharpness=placement.MRF_SHARPNESS, floor=floor,
                                 tolerant=tolerant)
    return functools.partial(placement._log_probability, edges=edges, sigma_px=sigma_px, radius_px=radius_px,
                             floor=floor)


def best_near(score, start: np.ndarray) -> tuple[float, np.ndarray]:
    """The truth rounded to whole pixels can miss a one-pixel peak that a fractional offset
    straddles: the best placement within a pixel of ``start`` per frame (coordinate ascent)."""
    d, best = start.copy(), score(start)
    for _ in range(10):
        improved = False
        for f in range(len(d)):
            for step in ((dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1) if dx or dy):
                trial = d.copy()
                trial[f] += step
                if np.abs(trial[f] - start[f]).max() <= 1 and (value := score(trial)) > best:
                    d, best, improved = trial, value, True
        if not improved:
            break
    return best, d


def link_evidence(links, true_xy_px: np.ndarray) -> tuple[int, int, int, int]:
    """(links with a surface, truth best, tie within 0.02, worse by > 0.1): see the module doc."""
    best = tie = worse = n = 0
    for link in links:
        if link.surface is None:
            continue
        surface = np.asarray(link.surface, float)
        ry, rx = (surface.shape[0] - 1) // 2, (surface.shape[1] - 1) // 2
        dx, dy = true_xy_px[link.j] - true_xy_px[link.i] - np.asarray(link.surface_base, float)
        r, c = int(round(dy)) + ry, int(round(dx)) + rx
        if not (0 <= r < surface.shape[0] and 0 <= c < surface.shape[1]):
            continue
        n += 1
        at_truth = np.nanmax(surface[max(0, r - 1): r + 2, max(0, c - 1): c + 2])
        top = np.unravel_index(np.nanargmax(surface), surface.shape)
        gap = float(np.nanmax(surface) - at_truth)
        if max(abs(top[0] - r), abs(top[1] - c)) <= 1 or gap <= 0:
            best += 1
        elif gap < 0.02:
            tie += 1
        elif gap > 0.1:
            worse += 1
    return n, best, tie, worse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chip", choices=tuple(CHIP_HEIGHTS), default="default")
    parser.add_argument("--grid", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    calls = []
    inference = placement.mrf_displacements

    def recorded(n, links, **options):
        result = inference(n, links, **options)
        calls.append((links, options, result))
        return result

    consensus.mrf_displacements = recorded
    print(f"{'scan':>22} {'mean px':>8} {'log p inferred':>15} {'log p truth':>12} "
          f"{'links':>5} {'best':>4} {'tie':>4} {'worse':>5}  verdict")
    for seed in args.seeds:
        scan, _ = sim_scan((args.grid, args.grid), seed=seed, chip=args.chip)
        calls.clear()
        positions, *_ = run_ours(scan)
        links, options, (inferred, _) = calls[-1]
        score = model(links, sigma_px=options["sigma_px"], radius_px=options["radius_px"],
                      tolerant=options.get("tolerant", False))
        nominal_px = scan.nominal_xy_nm / scan.pixel_size_nm
        truth = scan.true_xy_px - (nominal_px - nominal_px[0])
        centred = truth - truth.mean(0) + inferred.mean(0)
        best_truth, truth_px = max((best_near(score, np.rint(centred + (sx, sy)))
                                    for sx in range(-3, 4) for sy in range(-3, 4)), key=lambda r: r[0])
        mine = score(inferred)
        error = position_errors(positions - positions[0], scan.true_xy_px).mean()
        if np.abs(inferred - truth_px).max() <= 1:
            verdict = "found: within a pixel of the truth everywhere (refinement's part)"
        elif best_truth > mine:
            verdict = "search: the truth is more probable"
        else:
            verdict = "model: it prefers the inferred placement"
        label = f"{args.grid}x{args.grid} {args.chip} seed {seed}"
        n, best, tie, worse = link_evidence(links, scan.true_xy_px)
        print(f"{label:>22} {error:8.3f} {mine:15.2f} {best_truth:12.2f} {n:>5} {best:>4} {tie:>4} {worse:>5}"
              f"  {verdict}", flush=True)


if __name__ == "__main__":
    main()
