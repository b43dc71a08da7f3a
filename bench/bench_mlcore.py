"""mlcore benchmark: generator throughput vs this machine's matmul peak, the junyanz peer, and
(with --quality) a PSNR/SSIM table of the model vs three baselines after a stated budget.

    .venv/bin/python bench/bench_mlcore.py [--quick] [--threads N] [--quality]

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


def quality(args) -> None:
    from mlcore.data import PairDataset, synthetic_pairs
    from mlcore.evaluate import evaluate
    from mlcore.infer import load_model
    from mlcore.train import Trainer

    source = "synthetic IC-like pairs (mlcore.data.synthetic_pairs, blur σ 2 px)"
    try:  # the physics simulator's pairs, once instruments.sim.write_dataset exists
        from instruments.sim.dataset import write_dataset
        from mlcore.data import load_pair_folder
        folder = Path(tempfile.mkdtemp()) / "sim"
        write_dataset(folder, preset="paper" if not args.quick else "tiny")
        train = load_pair_folder(folder, split="train")
        test = load_pair_folder(folder, split="test")
        source = (f"instruments.sim.write_dataset(preset={'tiny' if args.quick else 'paper'}), "
                  f"its test split")
    except ImportError:
        train, test = synthetic_pairs(24, size=96, seed=0).split(0.25, seed=0)
    steps = 150 if args.quick else 1500
    side = min(min(im.shape[:2]) for im in train.lr)
    source_crop = max(64, side // 4) if side >= 256 else 64  # large pairs: down-sample ×≤4
    cfg = preset("tiny").replace(generator__features=16, generator__blocks=3,
                                 data__crop=64, data__source_crop=source_crop, train__lr=1e-3,
                                 train__constant_steps=steps // 2, train__decay_steps=steps // 2,
                                 train__checkpoint_every=steps, loss__paired_l1=10.0)
    ds = PairDataset(train, data=cfg.data, seed=0)
    t0 = time.perf_counter()
    result = Trainer(cfg, ds, out_dir=tempfile.mkdtemp()).fit()
    seconds = time.perf_counter() - t0
    print(f"\nQuality on {len(test.lr)} held-out pairs of {source}")
    print(f"training budget: {steps} steps, batch {cfg.train.batch_size}, crop "
          f"{cfg.data.crop} px, G {cfg.generator.features} features × {cfg.generator.blocks} "
          f"blocks, paired L1 weight {cfg.loss.paired_l1}, {seconds:.0f} s on "
          f"{torch.get_num_threads()} CPU thread(s)")
    print(evaluate(load_model(result.checkpoint), test, psf_sigma_px=2.0).table())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller images, fewer repeats")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quality", action="store_true", help="also train + quality table")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
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
