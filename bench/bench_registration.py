"""Mosaic ↔ SEM registration: accuracy and time per pair over a table of synthetic cases.

Cases: rotation 0–4°, pixel-size ratio 1–3, metadata pixel size off by −3…+3 %, contrast
normal or inverted. Error = mean distance (mosaic px) between true and estimated positions of a
9×9 grid of SEM points. Compared, on the same pairs in the same run, with two baselines:
plain phase correlation (translation only, nominal scale) and SimpleITK Mattes MI from a
centred identity start (no coarse sweep).

Run: .venv/bin/python bench/bench_registration.py [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from imaging.registration import _refine_mutual_information, register  # noqa: E402
from tests.imaging.synthetic_ic import make_pair, registration_error_px  # noqa: E402


def baseline_phase_correlation(mosaic, sem, mosaic_px_nm, sem_px_nm):
    """Translation-only phase correlation of the SEM (rescaled by the nominal ratio) in the mosaic."""
    ratio = mosaic_px_nm / sem_px_nm
    small = cv2.resize(sem, (round(sem.shape[1] / ratio), round(sem.shape[0] / ratio)),
                       interpolation=cv2.INTER_AREA)
    pad = np.zeros_like(mosaic, dtype=np.float64)
    pad[: small.shape[0], : small.shape[1]] = small - small.mean()
    (dx, dy), _ = cv2.phaseCorrelate(pad, (mosaic - mosaic.mean()).astype(np.float64))
    s = 1.0 / ratio
    sem_to_mosaic = np.array([[s, 0, 0.5 * s - 0.5 + dx], [0, s, 0.5 * s - 0.5 + dy], [0, 0, 1]])
    return np.linalg.inv(sem_to_mosaic)


def baseline_mi_identity(mosaic, sem, mosaic_px_nm, sem_px_nm):
    """SimpleITK Mattes MI (similarity) from the nominal scale, SEM centred on the mosaic."""
    ratio = mosaic_px_nm / sem_px_nm
    fixed = cv2.resize(sem, (round(sem.shape[1] / ratio), round(sem.shape[0] / ratio)),
                       interpolation=cv2.INTER_AREA)
    start = np.eye(3)
    start[:2, 2] = ((mosaic.shape[1] - fixed.shape[1]) / 2, (mosaic.shape[0] - fixed.shape[0]) / 2)
    f2m, _ = _refine_mutual_information(fixed, mosaic, start, model="similarity", seed=0)
    s = 1.0 / ratio
    down = np.array([[s, 0, 0.5 * s - 0.5], [0, s, 0.5 * s - 0.5], [0, 0, 1]])
    return np.linalg.inv(f2m @ down)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few cases only")
    parser.add_argument("--mosaic-size", type=int, default=320)
    args = parser.parse_args()
    rotations = [0.0, 1.5, 4.0] if not args.quick else [0.0, 4.0]
    ratios = [1.0, 1.7, 2.4, 3.0] if not args.quick else [1.0, 3.0]
    scale_errors = [-0.03, 0.0, 0.03] if not args.quick else [0.03]
    inverted = [False, True]
    rows = []
    print(f"{'case':>4} {'rot':>4} {'ratio':>5} {'meta':>5} {'inv':>4} | {'ours px':>8} {'ok':>3} {'ECC≠MI':>6} {'s':>5}"
          f" | {'PC px':>8} {'s':>5} | {'MI-id px':>8} {'s':>5}")
    for i, (rot, ratio, serr, inv) in enumerate(itertools.product(rotations, ratios, scale_errors, inverted)):
        pair = make_pair(seed=100 + i, mosaic_size=args.mosaic_size, ratio=ratio, rotation_deg=rot,
                         inverted=inv, shift_mosaic_px=(float(np.sin(i) * 20), float(np.cos(i) * 15)))
        nominal_sem_px = pair.sem_px_nm * (1 + serr)
        row = {}
        t = time.perf_counter()
        reg = register(pair.mosaic, pair.sem, mosaic_px_nm=pair.mosaic_px_nm, sem_px_nm=nominal_sem_px)
        row["ours"] = (registration_error_px(pair.sem_to_mosaic, reg.mosaic_to_sem, pair.sem.shape),
                       time.perf_counter() - t)
        row["ok"] = bool(reg)
        row["residual"] = reg.residual_px
        for name, fn in (("pc", baseline_phase_correlation), ("mi", baseline_mi_identity)):
            t = time.perf_counter()
            try:
                m2s = fn(pair.mosaic, pair.sem, pair.mosaic_px_nm, nominal_sem_px)
                err = registration_error_px(pair.sem_to_mosaic, m2s, pair.sem.shape)
            except Exception:  # a baseline that crashes counts as a failure
                err = float("inf")
            row[name] = (err, time.perf_counter() - t)
        rows.append(row)
        print(f"{i:>4} {rot:>4.1f} {ratio:>5.2f} {serr:>+5.2f} {str(inv)[0]:>4} | {row['ours'][0]:>8.3f}"
              f" {'y' if row['ok'] else 'N':>3} {row['residual']:>6.2f} {row['ours'][1]:>5.2f} | {row['pc'][0]:>8.2f} {row['pc'][1]:>5.2f}"
              f" | {row['mi'][0]:>8.2f} {row['mi'][1]:>5.2f}" + ("" if reg else f"  ({reg.reason})"))

    def summary(key):
        errs = np.array([r[key][0] for r in rows])
        times = np.array([r[key][1] for r in rows])
        return np.median(errs), np.max(errs), np.mean(errs < 1.0), np.mean(times)

    print()
    print(f"{'method':<36} {'median px':>9} {'max px':>9} {'<1 px':>6} {'s/pair':>7}")
    for key, label in (("ours", "sweep(PC on gradients) + MI + ECC"), ("pc", "baseline: phase correlation"),
                       ("mi", "baseline: SimpleITK MI from centre")):
        med, mx, frac, tm = summary(key)
        print(f"{label:<36} {med:>9.3f} {mx:>9.2f} {frac:>6.0%} {tm:>7.2f}")
    ok = np.mean([r["ok"] for r in rows])
    med_ours, _, _, t_ours = summary("ours")
    med_pc, _, _, t_pc = summary("pc")
    med_mi, _, _, t_mi = summary("mi")
    res = np.array([r["residual"] for r in rows])
    print(f"MI vs ECC disagreement (mosaic px): median {np.nanmedian(res):.2f}, max {np.nanmax(res):.2f}, "
          f"ECC not converged {np.isnan(res).sum()}")
    print(f"\nreported success (truthy Registration): {ok:.0%} of {len(rows)} cases")
    print(f"median error ratio baseline/ours: PC {med_pc / med_ours:.1f}x, MI-from-centre {med_mi / med_ours:.1f}x")
    print(f"time ratio ours/baseline: PC {t_ours / t_pc:.1f}x, MI-from-centre {t_ours / t_mi:.1f}x")


if __name__ == "__main__":
    main()
