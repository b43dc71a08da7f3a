"""mlcore benchmark: generator throughput vs this machine's matmul peak, the junyanz peer, and
(with --quality) a PSNR/SSIM table of the model vs three baselines after a stated budget.

    .venv/bin/python bench/bench_mlcore.py [--quick] [--threads N] [--quality [--data DIR]
        [--steps N] [--minutes M] [--paired-l1 W]] [--skip-throughput]

Every figure is measured in this run: the fp32 (and bf16, where the CPU has native support)
matrix-multiply peak first, then each generator's Mpx/s and achieved GFLOP/s (FLOPs counted by
torch.utils.flop_counter on one forward) as a fraction of that peak.  Times are the best of
several repeats (wall clock; the machine is shared).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from mlcore.config import GeneratorConfig, preset  # noqa: E402
from mlcore.infer import bf16_supported  # noqa: E402
from mlcore.nets import build_generator, count_parameters  # noqa: E402


def best_time(fn, *, repeats: int) -> float:
    fn()  # warm-up (oneDNN primitive creation)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def matmul_peak(dtype: torch.dtype, *, n: int, repeats: int) -> float:
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    t = best_time(lambda: torch.mm(a, b), repeats=repeats)
    return 2 * n ** 3 / t / 1e9


def forward_flops(net: torch.nn.Module, x: torch.Tensor) -> int:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        net(x)
    return counter.get_total_flops()


def bench_generator(name: str, cfg: GeneratorConfig, *, size: int, batch: int, repeats: int,
                    peaks: dict[str, float]) -> list[str]:
    net = build_generator(cfg).eval().to(memory_format=torch.channels_last)
    x = torch.randn(batch, cfg.in_channels, size, size).contiguous(
        memory_format=torch.channels_last)
    flops = forward_flops(net, x)
    rows = []
    for precision, peak in peaks.items():
        def run():
            with torch.inference_mode(), torch.autocast(
                    "cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                net(x)
        t = best_time(run, repeats=repeats)
        gflops = flops / t / 1e9
        rows.append(f"{name:<28} {precision:<5} {count_parameters(net) / 1e6:7.2f} M "
                    f"{flops / batch / 1e9:8.2f} {batch * size * size / t / 1e6:9.3f} "
                    f"{gflops:9.1f} {peak:9.1f} {gflops / peak:7.1%}")
    return rows


def sim_psf_sigma_nm() -> float:
    """The simulator's LR blur on the chip's top surface (in focus): diffraction PSF ⊕ chromatic
    focus spread, as ``instruments.sim.dataset.simulate_pair`` applies it (nm, 1σ)."""
    from instruments.sim.optics import SSUMOptics

    o = SSUMOptics()
    f, radius = o.focal_length_nm, o.radius_nm
    mag = f / (f - radius)
    chroma = o.defocus_slope * mag * o.chromatic_focus_rms_nm
    return float(np.hypot(o.psf_sigma_nm(0.0), chroma))


def quality(args) -> None:
    from mlcore.data import PairDataset, load_pair_folder, synthetic_pairs
    from mlcore.evaluate import evaluate
    from mlcore.infer import load_model
    from mlcore.train import Trainer

    preset_name = "tiny" if args.quick else "paper"
    psf_nm = None
    try:  # the physics simulator's pairs
        from instruments.sim.dataset import write_dataset
        if args.data and (Path(args.data) / "manifest.json").exists():
            folder = Path(args.data)
            print(f"\nusing the data set already written in {folder}")
        else:  # never in the repository: the paper preset is ~0.5 GB
            folder = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="bench_mlcore_")) / "sim"
            t0 = time.perf_counter()
            write_dataset(folder, preset=preset_name)
            print(f"\nwrote write_dataset(preset={preset_name!r}) to {folder} in {time.perf_counter() - t0:.0f} s")
        train = load_pair_folder(folder, split="train")
        test = load_pair_folder(folder, split="test")
        source = f"instruments.sim.write_dataset(preset={preset_name!r}), its test split"
        psf_nm = sim_psf_sigma_nm()
    except ImportError:
        train, test = synthetic_pairs(24, size=96, seed=0).split(0.25, seed=0)
        source = "synthetic IC-like pairs (mlcore.data.synthetic_pairs, blur σ 2 px)"
    side = min(min(im.shape[:2]) for im in train.lr)
    source_crop = max(64, side // 4) if side >= 256 else 64  # large pairs: down-sample ×≤4
    crop = 64

    def config(steps: int):
        return preset("tiny").replace(generator__features=16, generator__blocks=3,
                                      data__crop=crop, data__source_crop=source_crop, train__lr=1e-3,
                                      train__constant_steps=steps // 2,
                                      train__decay_steps=steps - steps // 2,
                                      train__checkpoint_every=steps, loss__paired_l1=args.paired_l1)

    ds = PairDataset(train, data=config(2).data, seed=0)
    steps = args.steps or (150 if args.quick else 1500)
    if args.minutes:  # fit the step count to the budget, timed on this machine now
        probe = 10
        t0 = time.perf_counter()
        Trainer(config(probe), ds, out_dir=tempfile.mkdtemp()).fit()
        per_step = (time.perf_counter() - t0) / probe
        steps = max(2, min(steps, int(args.minutes * 60 / per_step)))
        print(f"timed {probe} steps: {per_step:.2f} s/step -> {steps} steps fit {args.minutes:g} min")
    cfg = config(steps)
    t0 = time.perf_counter()
    result = Trainer(cfg, ds, out_dir=tempfile.mkdtemp()).fit()
    seconds = time.perf_counter() - t0
    lc = cfg.loss
    terms = {"adversarial (LSGAN)": lc.adversarial, "cycle L1": lc.cycle, "identity": lc.identity * lc.cycle,
             f"contextual ({lc.contextual_on})": lc.contextual, "paired L1": lc.paired_l1,
             "paired SSIM": lc.paired_ssim}
    psf_px = psf_nm / (train.pixel_size_nm * source_crop / crop) if psf_nm and train.pixel_size_nm else 2.0
    print(f"Quality on {len(test.lr)} held-out pairs of {source} ({len(train.lr)} training pairs)")
    print(f"training budget: {result.step} steps ({result.status}), batch {cfg.train.batch_size}, crop "
          f"{cfg.data.crop} px from {source_crop} px, G {cfg.generator.features} features × "
          f"{cfg.generator.blocks} blocks, lr {cfg.train.lr:g}, {seconds:.0f} s ({seconds / 60:.1f} min) on "
          f"{torch.get_num_threads()} CPU thread(s)")
    print("loss terms on: " + ", ".join(f"{k} ×{v:g}" for k, v in terms.items() if v > 0)
          + "; off: " + (", ".join(k for k, v in terms.items() if v <= 0) or "none"))
    print(f"Richardson–Lucy PSF: Gaussian σ {psf_px:.2f} px at the evaluation grid"
          + (f" (simulator's in-focus blur {psf_nm:.0f} nm)" if psf_nm else ""))
    t0 = time.perf_counter()
    report = evaluate(load_model(result.checkpoint), test, psf_sigma_px=psf_px)
    print(report.table())
    print(f"(evaluation {time.perf_counter() - t0:.0f} s)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller images, fewer repeats")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quality", action="store_true", help="also train + quality table")
    parser.add_argument("--data", help="simulator data set folder (written there if it has no manifest.json; "
                                       "default: a new folder under the temp dir)")
    parser.add_argument("--steps", type=int, default=0, help="training steps (default 1500, --quick 150)")
    parser.add_argument("--minutes", type=float, default=0.0,
                        help="cap training at this many minutes (steps fitted to a timed probe)")
    parser.add_argument("--paired-l1", type=float, default=10.0, help="paired L1 weight (0 = off)")
    parser.add_argument("--skip-throughput", action="store_true", help="only the quality table")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.skip_throughput:
        if args.quality:
            quality(args)
        return 0
    size, repeats, n = (128, 2, 1024) if args.quick else (256, 3, 2048)
    peaks = {"fp32": matmul_peak(torch.float32, n=n, repeats=repeats * 3)}
    if bf16_supported(torch.device("cpu")):
        peaks["bf16"] = matmul_peak(torch.bfloat16, n=n, repeats=repeats * 3)
    print(f"torch {torch.__version__}, {args.threads} thread(s); matmul peak ({n}²): "
          + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in peaks.items()))
    print(f"generator inference, batch 1, {size}² px, 1 channel, eval, channels_last")
    print(f"{'model':<28} {'prec':<5} {'params':>9} {'GFLOP/im':>8} {'Mpx/s':>9} "
          f"{'GFLOP/s':>9} {'peak':>9} {'of peak':>7}")
    for name, cfg in (("ssum G (64 f, 9 blocks, BN)", GeneratorConfig()),
                      ("junyanz ResNet-9 (peer, IN)",
                       GeneratorConfig(arch="junyanz_resnet9", norm="instance"))):
        for row in bench_generator(name, cfg, size=size, batch=1, repeats=repeats, peaks=peaks):
            print(row)
    if args.quality:
        quality(args)
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    raise SystemExit(main())
