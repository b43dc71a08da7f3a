"""Mosaic ↔ SEM registration: accuracy and time per pair over tables of simulated cases.

Simulator table (``--source sim``, default with the synthetic one: ``both``): the mosaic is a
640 px SSUM region (``SIM_MOSAIC_PX``) from the physics simulator
(``instruments.sim.dataset.simulate_pair(...).lr``: the centre-of-field PSF, deeper layers
defocused, camera noise; 16-bit) at 32.5 nm/px, the SEM a ``simulate_sem`` image of the same
chip (secondary-electron edge contrast, detector shading, shadowing, line jitter; no data bar)
covering ~60 % of the mosaic's width, centred off the mosaic's centre, rotated 0–4°, with its
pixel 1–3× finer and its metadata pixel size off by −3…+3 %. Truth: ``inv(mosaic to_chip) @ sem.sem_to_chip``.

"Ours" is ``imaging.registration.register``: two coarse sweeps (phase correlation of gradients, NCC
of local-contrast features), each distinct candidate polished by a bounded gradient-correlation grid
(moved by the similarity its SEM windows re-located nearby fit, in gradients or, where they locate
too few, in bands or contrast features, where that raises the correlation; refused where they still
say it is > 1.5 px off) and verified independently (sub-windows + whole-footprint margins in
gradients and contrast features, falling back to contrast features alone where gradients cannot
tell, then to locally normalised bands where a few bright structures rule the gradients), MI and ECC
as cross-checks. A falsy result counts with its (unaccepted) transform's error; the summary line
also gives how many accepted results were ≥ 1 px off. Column "by": the features an accepted result
was verified in (``g`` gradients, ``c`` contrast features, ``b`` locally normalised bands). Column
"truth": ``v`` when the true placement itself passes the independent check, ``-`` when it does not
(SEM inside a repeating pattern, or too little in common) — there a refusal is the right answer; the
summary counts both kinds, and the refusals for low confidence (the SEM's detail in one part of it:
scale and rotation extrapolated, ``imaging.registration_checks.extrapolation``).

Synthetic table (``--source synthetic``, tests/imaging/synthetic_ic.make_pair, 320 px mosaics):
rotation 0–4°, pixel-size ratio 1–3, metadata pixel size off by −3…+3 %, contrast
normal or inverted. Error = mean distance (mosaic px) between true and estimated positions of a
9×9 grid of SEM points. Compared, on the same pairs in the same run, with two baselines:
plain phase correlation (translation only, nominal scale) and SimpleITK Mattes MI from a
centred identity start (no coarse sweep).

Adversarial starts (``--starts N``, simulator table only): each case registered again from N
coarse placements perturbed from the truth (the first unperturbed, then up to ±10 px and, from
the third, ±60 px, with rotation ±1° and scale ±1 % about the SEM's centre), the sweep
replaced by that one candidate, the rest of ``register`` unchanged: how often a start the
sweep could have proposed leads to a wrong answer being accepted.

Landmarks (``--landmarks PX``, default 1; 0 skips): each case again from 4 landmark pairs spread
over the SEM image, each click off by PX mosaic px rms per axis in both images (seeded): the
clicks' own least-squares fit (the baseline: what the job answered before refining) against
``imaging.registration.register_by_landmarks`` (the fit polished on the images, or the fit itself
where the refinement is refused).

Run: .venv/bin/python bench/bench_registration.py [--quick] [--source both|sim|synthetic] [--mosaic-size 320] [--starts 7] [--landmarks 1]
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

from imaging.fine_registration import refine_mutual_information  # noqa: E402
from imaging.imageio import to_float32  # noqa: E402
from imaging.registration import (  # noqa: E402
    _to_mosaic_pixels,
    register,
    register_by_landmarks,
    register_landmarks,
)
from imaging.registration_checks import verify_placement  # noqa: E402
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
    f2m, _ = refine_mutual_information(fixed, mosaic, start, model="similarity", seed=0)
    s = 1.0 / ratio
    down = np.array([[s, 0, 0.5 * s - 0.5], [0, s, 0.5 * s - 0.5], [0, 0, 1]])
    return np.linalg.inv(f2m @ down)


def truth_verifies(mosaic, sem, mosaic_px_nm, sem_px_nm, true_sem_to_mosaic) -> bool:
    """Whether the true placement itself passes register's independent check (same defaults).

    When it does not (the SEM inside a repeating pattern, or too little in common), no placement
    can be told apart and a refusal is the right answer.
    """
    fixed, down = _to_mosaic_pixels(to_float32(sem), mosaic_px_nm / sem_px_nm)
    verdict = verify_placement(fixed, to_float32(mosaic), true_sem_to_mosaic @ np.linalg.inv(down), min_agree=2,
                      min_margin=0.03, min_contrast_margin=-0.05, min_contrast_whole_margin=0.08)
    return bool(verdict["verified"])


def run_case(mosaic, sem, *, mosaic_px_nm, nominal_sem_px_nm, true_sem_to_mosaic) -> dict:
    """Ours and both baselines on one pair; errors in mosaic px (inf when a baseline crashes)."""
    row = {}
    t = time.perf_counter()
    reg = register(mosaic, sem, mosaic_px_nm=mosaic_px_nm, sem_px_nm=nominal_sem_px_nm)
    row["ours"] = (registration_error_px(true_sem_to_mosaic, reg.mosaic_to_sem, sem.shape), time.perf_counter() - t)
    row["ok"], row["residual"], row["reason"] = bool(reg), reg.residual_px, ("" if reg else reg.reason)
    row["by"] = reg.details.get("verify_subregions", {}).get("by", "") if reg else ""
    row["truth_ok"] = truth_verifies(mosaic, sem, mosaic_px_nm, nominal_sem_px_nm, true_sem_to_mosaic)
    mosaic_f = mosaic.astype(np.float32) / (65535.0 if mosaic.dtype == np.uint16 else 1.0)
    sem_f = sem.astype(np.float32) / (65535.0 if sem.dtype == np.uint16 else 1.0)
    for name, fn in (("pc", baseline_phase_correlation), ("mi", baseline_mi_identity)):
        t = time.perf_counter()
        try:
            m2s = fn(mosaic_f, sem_f, mosaic_px_nm, nominal_sem_px_nm)
            err = registration_error_px(true_sem_to_mosaic, m2s, sem.shape)
        except Exception:  # a baseline that crashes counts as a failure
            err = float("inf")
        row[name] = (err, time.perf_counter() - t)
    return row


#: Mosaic sides. The simulator's frames are 512 px at 32.5 nm, a 2×2 scan's mosaic ~730 px: at
#: 320 px (smaller than one frame) most SEM footprints (60 % of the mosaic's width) lie inside one
#: periodic array, where refusing is the right answer (14 of the 27 cases).
SYNTHETIC_MOSAIC_PX, SIM_MOSAIC_PX = 320, 640


def synthetic_cases(quick: bool, mosaic_size: int):
    rotations = [0.0, 1.5, 4.0] if not quick else [0.0, 4.0]
    ratios = [1.0, 1.7, 2.4, 3.0] if not quick else [1.0, 3.0]
    scale_errors = [-0.03, 0.0, 0.03] if not quick else [0.03]
    for i, (rot, ratio, serr, inv) in enumerate(itertools.product(rotations, ratios, scale_errors, (False, True))):
        pair = make_pair(seed=100 + i, mosaic_size=mosaic_size, ratio=ratio, rotation_deg=rot,
                         inverted=inv, shift_mosaic_px=(float(np.sin(i) * 20), float(np.cos(i) * 15)))
        yield (rot, ratio, serr, str(inv)[0]), dict(
            mosaic=pair.mosaic, sem=pair.sem, mosaic_px_nm=pair.mosaic_px_nm,
            nominal_sem_px_nm=pair.sem_px_nm * (1 + serr), true_sem_to_mosaic=pair.sem_to_mosaic)


def sim_cases(quick: bool, mosaic_size: int, *, seed: int = 3):
    """Simulator pairs: one SSUM mosaic region per case (different places on one chip)."""
    from instruments.sim.chip import Chip
    from instruments.sim.dataset import simulate_pair, simulate_sem
    from instruments.sim.sem import SEMSettings

    rotations = [0.0, 1.5, 4.0] if not quick else [0.0, 4.0]
    ratios = [1.0, 2.0, 3.0] if not quick else [1.0, 3.0]
    scale_errors = [-0.03, 0.0, 0.03] if not quick else [0.03]
    layout = Chip(seed=seed)
    bx0, by0, bx1, by1 = layout.bounds_nm
    mosaic_px_nm = 32.5
    span = mosaic_size * mosaic_px_nm
    for i, (rot, ratio, serr) in enumerate(itertools.product(rotations, ratios, scale_errors)):
        rng = np.random.default_rng([seed, i])
        centre = (float(rng.uniform(bx0 + span, bx1 - span)), float(rng.uniform(by0 + span, by1 - span)))
        pair = simulate_pair(layout, centre_xy_nm=centre, size_px=mosaic_size, pixel_size_nm=mosaic_px_nm,
                             seed=seed * 1000 + i)
        mosaic, mosaic_to_chip = pair.lr, pair.to_chip  # mosaic pixel (x, y) → chip nm
        sem_px = mosaic_px_nm / ratio
        side = int(round(0.6 * mosaic_size * ratio))
        off = rng.uniform(-0.12, 0.12, 2) * span
        sem = simulate_sem(seed=seed * 1000 + i, centre_xy_nm=(centre[0] + off[0], centre[1] + off[1]),
                           shape=(side, side), pixel_size_nm=sem_px, rotation_deg=rot, layout=layout,
                           settings=SEMSettings(data_bar=False))
        yield (rot, ratio, serr, "-"), dict(
            mosaic=mosaic, sem=sem.image, mosaic_px_nm=mosaic_px_nm, nominal_sem_px_nm=sem.pixel_size_nm * (1 + serr),
            true_sem_to_mosaic=np.linalg.inv(mosaic_to_chip) @ sem.sem_to_chip)


def perturbed_starts(case: dict, count: int, rng: np.random.Generator):
    """``count`` SEM px → mosaic px placements around the truth (see the module docstring)."""
    h, w = case["sem"].shape
    ratio = case["mosaic_px_nm"] / case["nominal_sem_px_nm"]  # SEM px per mosaic px
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    for k in range(count):
        move = np.eye(3)
        if k > 0:
            angle, scale = np.deg2rad(rng.uniform(-1, 1)), 1 + rng.uniform(-0.01, 0.01)
            move[:2, :2] = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
            move[:2, 2] = centre - move[:2, :2] @ centre + rng.uniform(-1, 1, 2) * (60 if k >= 2 else 10) * ratio
        yield case["true_sem_to_mosaic"] @ move


def adversarial_table(cases, count: int) -> None:
    """Each case from ``count`` perturbed coarse starts: accepted, and accepted ≥ 1 px off."""
    import imaging.registration as registration
    from imaging.coarse_registration import CoarseMatch

    sweep = registration.coarse_register
    print(f"\nadversarial starts: each simulator case from {count} coarse placements around the truth")
    runs = []
    try:
        for i, (_, case) in enumerate(cases):
            for start in perturbed_starts(case, count, np.random.default_rng(i)):
                registration.coarse_register = lambda *args, _start=start, **kwargs: CoarseMatch(
                    sem_to_mosaic=_start, score=0.5, runner_up=0.0, angle_deg=0.0, scale=1.0, working_scale=1.0,
                    candidates=((_start, 0.5),))
                reg = register(case["mosaic"], case["sem"], mosaic_px_nm=case["mosaic_px_nm"],
                               sem_px_nm=case["nominal_sem_px_nm"])
                runs.append((i, bool(reg), registration_error_px(case["true_sem_to_mosaic"], reg.mosaic_to_sem,
                                                                 case["sem"].shape)))
    finally:
        registration.coarse_register = sweep
    ok = np.array([r[1] for r in runs], bool)
    errs = np.array([r[2] for r in runs])
    wrong = sorted({r[0] for r in runs if r[1] and r[2] >= 1.0})
    print(f"accepted {int(ok.sum())} of {len(runs)} starts ({len({r[0] for r in runs if r[1]})} cases); accepted "
          f"≥ 1 px off: {int(np.sum(ok & (errs >= 1.0)))} (cases {wrong or 'none'}); max accepted "
          f"{(errs[ok].max() if ok.any() else float('nan')):.2f} px, median accepted "
          f"{(np.median(errs[ok]) if ok.any() else float('nan')):.3f} px")


def landmark_table(title: str, cases, click_px: float) -> None:
    """Each case from 4 clicked landmark pairs, each click off by ``click_px`` rms per axis in both
    images (seeded): the clicks' own least-squares fit (the baseline) against ``register_by_landmarks``."""
    print(f"\n{title}: 4 landmark pairs, clicks {click_px} mosaic px rms off per axis in each image")
    print(f"{'case':>4} | {'fit px':>7} | {'ours px':>7} {'refined':>7} {'s':>5}")
    rows = []
    for i, (_, case) in enumerate(cases):
        sem, truth = case["sem"], case["true_sem_to_mosaic"]
        h, w = sem.shape
        ratio = case["mosaic_px_nm"] / case["nominal_sem_px_nm"]  # SEM px per mosaic px
        sem_xy = np.array([[0.2 * w, 0.2 * h], [0.8 * w, 0.25 * h], [0.75 * w, 0.8 * h], [0.25 * w, 0.75 * h]])
        mosaic_xy = (truth @ np.column_stack([sem_xy, np.ones(4)]).T)[:2].T
        rng = np.random.default_rng(i)
        mosaic_xy = mosaic_xy + rng.normal(0, click_px, mosaic_xy.shape)
        sem_xy = sem_xy + rng.normal(0, click_px * ratio, sem_xy.shape)
        fit = register_landmarks(mosaic_xy, sem_xy)
        t = time.perf_counter()
        ours = register_by_landmarks(case["mosaic"], sem, mosaic_px_nm=case["mosaic_px_nm"],
                                     sem_px_nm=case["nominal_sem_px_nm"], mosaic_xy=mosaic_xy, sem_xy=sem_xy)
        seconds = time.perf_counter() - t
        row = (registration_error_px(truth, fit.mosaic_to_sem, sem.shape), bool(fit),
               registration_error_px(truth, ours.mosaic_to_sem, sem.shape), bool(ours),
               ours.method == "landmarks+polish", seconds)
        rows.append(row)
        print(f"{i:>4} | {row[0]:>7.3f} | {row[2]:>7.3f} {'y' if row[4] else 'N':>7} {seconds:>5.2f}"
              + ("" if row[4] else f"  ({ours.details.get('refinement_refused') or ours.reason})"), flush=True)
    r = np.array(rows, float)
    ok, refined = r[:, 3] == 1, r[:, 4] == 1
    print(f"clicks' fit (baseline): median {np.median(r[ok, 0]):.3f} px, max {r[ok, 0].max():.2f} px, "
          f"{int(ok.sum())} of {len(r)} consistent")
    print(f"ours: median {np.median(r[ok, 2]):.3f} px, max {r[ok, 2].max():.2f} px; refined {int(refined.sum())} "
          f"(median {np.median(r[refined, 2]) if refined.any() else float('nan'):.3f}, ≥ 1 px off "
          f"{int(np.sum(refined & (r[:, 2] >= 1)))}), the clicks kept {int(np.sum(ok & ~refined))}; "
          f"error ratio fit/ours {np.median(r[ok, 0]) / max(np.median(r[ok, 2]), 1e-9):.1f}x; "
          f"{np.mean(r[:, 5]):.2f} s/pair")


#: Column "by": the route of ``verify_placement`` that verified an accepted result.
VERIFIED_BY = {"gradients": "g", "contrast features": "c", "locally normalised bands": "b"}


def table(title: str, cases) -> None:
    print(f"\n{title}")
    print(f"{'case':>4} {'rot':>4} {'ratio':>5} {'meta':>5} {'inv':>4} | {'ours px':>8} {'ok':>3} {'by':>2} {'ECC≠MI':>6} {'s':>5}"
          f" {'truth':>5}"
          f" | {'PC px':>8} {'s':>5} | {'MI-id px':>8} {'s':>5}")
    rows = []
    for i, ((rot, ratio, serr, inv), case) in enumerate(cases):
        row = run_case(**case)
        rows.append(row)
        print(f"{i:>4} {rot:>4.1f} {ratio:>5.2f} {serr:>+5.2f} {inv:>4} | {row['ours'][0]:>8.3f}"
              f" {'y' if row['ok'] else 'N':>3} {VERIFIED_BY.get(row['by'], '-'):>2} {row['residual']:>6.2f} {row['ours'][1]:>5.2f} {'v' if row['truth_ok'] else '-':>5}"
              f" | {row['pc'][0]:>8.2f} {row['pc'][1]:>5.2f}"
              f" | {row['mi'][0]:>8.2f} {row['mi'][1]:>5.2f}" + (f"  ({row['reason']})" if row["reason"] else ""),
              flush=True)

    def summary(key):
        errs = np.array([r[key][0] for r in rows])
        times = np.array([r[key][1] for r in rows])
        return np.median(errs), np.max(errs), int(np.sum(errs < 1.0)), np.mean(times)

    print()
    print(f"{'method':<37} {'median px':>9} {'max px':>9} {'<1 px':>7} {'s/pair':>7}")
    for key, label in (("ours", "sweeps + polish + verify (MI/ECC chk)"), ("pc", "baseline: phase correlation"),
                       ("mi", "baseline: SimpleITK MI from centre")):
        med, mx, n_ok, tm = summary(key)
        print(f"{label:<37} {med:>9.3f} {mx:>9.2f} {n_ok:>3}/{len(rows):<3} {tm:>7.2f}")
    ok = int(np.sum([r["ok"] for r in rows]))
    med_ours, _, _, t_ours = summary("ours")
    med_pc, _, _, t_pc = summary("pc")
    med_mi, _, _, t_mi = summary("mi")
    res = np.array([r["residual"] for r in rows], float)
    if np.isfinite(res).any():
        print(f"MI vs ECC disagreement (mosaic px): median {np.nanmedian(res):.2f}, max {np.nanmax(res):.2f}, "
              f"ECC not converged {np.isnan(res).sum()}")
    errs = np.array([r["ours"][0] for r in rows])
    oks = np.array([r["ok"] for r in rows], bool)
    print(f"reported success (truthy Registration): {ok} of {len(rows)} cases; accepted with error ≥ 1 px: "
          f"{int(np.sum(oks & (errs >= 1.0)))} (max accepted error "
          f"{(errs[oks].max() if oks.any() else float('nan')):.2f} px, median accepted "
          f"{(np.median(errs[oks]) if oks.any() else float('nan')):.3f} px)")
    truth_ok = np.array([r["truth_ok"] for r in rows], bool)
    low = np.array([r["reason"].startswith("low confidence") for r in rows], bool)
    print(f"refused: {int(np.sum(~oks))}, of which {int(np.sum(~oks & ~truth_ok))} where even the true placement fails "
          f"the independent check (repeating pattern or too little in common: refusal correct), "
          f"{int(np.sum(~oks & truth_ok & low))} for low confidence (detail in one part of the SEM image) and "
          f"{int(np.sum(~oks & truth_ok & ~low))} where the truth passes (missed); accepted with the truth "
          f"unverifiable: {int(np.sum(oks & ~truth_ok))}")
    routes = [r["by"] for r in rows if r["ok"]]
    print("accepted, verified in: " + ", ".join(f"{name} {routes.count(name)}" for name in VERIFIED_BY))
    print(f"median error ratio baseline/ours: PC {med_pc / max(med_ours, 1e-9):.1f}x, "
          f"MI-from-centre {med_mi / max(med_ours, 1e-9):.1f}x")
    print(f"time ratio ours/baseline: PC {t_ours / t_pc:.1f}x, MI-from-centre {t_ours / t_mi:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few cases only")
    parser.add_argument("--mosaic-size", type=int, default=None,
                        help=f"mosaic side, px (default: {SYNTHETIC_MOSAIC_PX} synthetic, {SIM_MOSAIC_PX} simulator)")
    parser.add_argument("--source", choices=("both", "sim", "synthetic"), default="both")
    parser.add_argument("--starts", type=int, default=0,
                        help="also register each simulator case from this many perturbed coarse starts")
    parser.add_argument("--landmarks", type=float, default=1.0, metavar="PX",
                        help="also register each case from 4 landmark pairs clicked this many px rms off (0: not)")
    args = parser.parse_args()
    if args.source in ("both", "synthetic"):
        size = args.mosaic_size or SYNTHETIC_MOSAIC_PX
        table("synthetic IC-like pairs (tests/imaging/synthetic_ic.make_pair)", synthetic_cases(args.quick, size))
        if args.landmarks:
            landmark_table("synthetic IC-like pairs", synthetic_cases(args.quick, size), args.landmarks)
    if args.source in ("both", "sim"):
        size = args.mosaic_size or SIM_MOSAIC_PX
        table(f"physics simulator pairs: simulate_pair(...).lr mosaic {size} px at 32.5 nm vs "
              "simulate_sem of the same chip (error in mosaic px)", sim_cases(args.quick, size))
        if args.landmarks:
            landmark_table("physics simulator pairs", sim_cases(args.quick, size), args.landmarks)
        if args.starts:
            adversarial_table(sim_cases(args.quick, size), args.starts)


if __name__ == "__main__":
    main()
