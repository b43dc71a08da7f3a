"""mlcore benchmark: generator throughput vs this machine's matmul peak, the junyanz peer, and
(with --quality) a PSNR/SSIM table of the model vs three baselines after a stated budget.

    .venv/bin/python bench/bench_mlcore.py [--quick] [--threads N] [--device D] [--images N]
        [--quality [--data DIR] [--steps N] [--minutes M] [--paired-l1 W]] [--skip-throughput]
        [--mosaic N [--tile T] [--batch B] [--no-risk]]

Every figure is measured in this run: the fp32 (and bf16, where the CPU has native support)
matrix-multiply peak first, then each generator's Mpx/s and achieved GFLOP/s as a fraction of
that peak.  ``--device cuda`` runs the same on the GPU, with a TF32 row beside fp32 and bf16
(each against the matrix-multiply peak in its own precision) and ``--images`` (default 16
there) images per forward, since one 256² image leaves most of a GPU idle.  FLOPs are those of the network as specified (torch.utils.flop_counter on one forward
of it: convs only), also for its inference form (BN folded into the convs, zero padding, the
7×7 head as a matmul), which runs the same convs and must match it on tile cores.  Times are
the best of several rounds that time the peak and every network once each (the machine is
shared): CPU time of the one compute thread with --threads 1 (what it was given, whatever else
runs), wall clock otherwise.

``--mosaic N`` also translates an N×N uint16 mosaic with the paper-size generators as the
translation job does (tiled, with the hallucination-risk map unless --no-risk): seconds, Mpx/s,
useful GFLOP/s (specified-network FLOPs per output pixel), and the peak RSS above the mosaic
and model, beside the previous defaults (reference nets, tile 512, batch 4) on a crop.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from mlcore.config import GeneratorConfig, preset  # noqa: E402
from mlcore.infer import bf16_supported  # noqa: E402
from mlcore.nets import build_generator, count_parameters, fuse_for_inference, halo_for  # noqa: E402


def set_precision(device: torch.device, prec: str):
    """fp32 really in fp32 (cuDNN's convs default to TF32 on Ampere and later), tf32, or bf16
    autocast; the TF32 switches are global, so each timed call sets them."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = prec == "tf32"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=prec == "bf16")


def synchronized(device: torch.device, fn):
    """A case timed by the wall clock must include the GPU's queued work."""
    if device.type != "cuda":
        return fn

    def run():
        fn()
        torch.cuda.synchronize(device)
    return run


def forward_flops(net: torch.nn.Module, x: torch.Tensor) -> int:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        net(x)
    return counter.get_total_flops()


def calibrated(cfg: GeneratorConfig) -> torch.nn.Module:
    """Eval-mode generator with non-trivial BatchNorm statistics (as after training)."""
    torch.manual_seed(0)
    net = build_generator(cfg)
    net.train()
    with torch.no_grad():
        for _ in range(2):
            net(torch.randn(2, cfg.in_channels, 64, 64) * 0.7 + 0.3)
    return net.eval().to(memory_format=torch.channels_last)


def interleaved_best(cases: dict, *, rounds: int, clock=time.perf_counter) -> dict[str, float]:
    """Best time of each case over rounds that run every case once, so a change of load on
    the shared machine hits the matmul peak and the networks alike."""
    for fn in cases.values():
        fn()  # warm-up (oneDNN primitive creation)
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(rounds):
        for key, fn in cases.items():
            t0 = clock()
            fn()
            best[key] = min(best[key], clock() - t0)
    return best


def prepare_generator(name: str, cfg: GeneratorConfig, *, size: int, batch: int,
                      inference_form: bool = False, device: str | torch.device = "cpu") -> dict:
    device = torch.device(device)
    net = calibrated(cfg)
    one = torch.randn(1, cfg.in_channels, size, size).contiguous(memory_format=torch.channels_last)
    flops = forward_flops(net, one) * batch  # the network as specified, also for its inference form
    net = net.to(device)
    x = torch.randn(batch, cfg.in_channels, size, size, device=device).contiguous(
        memory_format=torch.channels_last)
    run_net = net
    if inference_form:
        run_net = fuse_for_inference(net)
        halo = halo_for(net)
        with torch.inference_mode(), set_precision(device, "fp32"):
            diff = (run_net(x) - net(x))[..., halo:-halo, halo:-halo].abs().max().item()
        name = f"{name} (|Δ| {diff:.0e})"

    def run(prec: str) -> None:
        with torch.inference_mode(), set_precision(device, prec):
            run_net(x)
    return {"name": name, "params": count_parameters(net), "flops": flops, "px": batch * size ** 2,
            "run": run}


class PeakRSS:
    """Samples this process's resident set every 20 ms (ru_maxrss cannot be reset)."""

    def __init__(self) -> None:
        self.peak, self._stop = 0, threading.Event()

    @staticmethod
    def now() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = self.now()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.now())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())


def bench_mosaic(args, peak: float) -> None:
    from mlcore.config import ExperimentConfig
    from mlcore.data import Normalization
    from mlcore.infer import TranslationModel, translate_mosaic

    cfg = ExperimentConfig()
    device = torch.device(args.device)
    n, risk = args.mosaic, not args.no_risk
    g_ab, g_ba = calibrated(cfg.generator), calibrated(cfg.generator)
    flops_px = forward_flops(g_ab, torch.zeros(1, 1, 256, 256)) / 256 ** 2 * (2 if risk else 1)
    model = TranslationModel(g_ab, g_ba, config=cfg, norm_a=Normalization(0, 65535),
                             norm_b=Normalization(0, 65535), halo=halo_for(g_ab), device=device)
    gpu = device.type == "cuda"  # translated in true fp32, as the job does: the fp32 peak
    mosaic = np.random.default_rng(0).integers(0, 65535, (n, n), dtype=np.uint16)

    one_thread = torch.get_num_threads() == 1 and not gpu

    def row(label: str, image: np.ndarray, **options) -> float:
        if gpu:
            torch.cuda.reset_peak_memory_stats(device)
        with PeakRSS() as rss:
            cpu = time.thread_time()
            result = translate_mosaic(model, image, risk=risk, **options)
            cpu = time.thread_time() - cpu
        outputs = result.sem_like.nbytes + (result.risk.nbytes if result.risk is not None else 0)
        mpx = image.size / (cpu if one_thread else result.seconds) / 1e6
        print(f"{label:<44} {image.shape[0]:>5}² {result.tiles:>5} {result.seconds:8.1f} "
              f"{cpu:8.1f} {mpx:7.3f} {mpx * flops_px / 1e3:8.1f} "
              f"{mpx * flops_px / 1e3 / peak:7.1%} {(rss.peak - rss.start) / 2 ** 20:8.0f} "
              f"{outputs / 2 ** 20:8.0f}"
              + (f" {torch.cuda.max_memory_allocated(device) / 2 ** 20:8.0f}" if gpu else ""),
              flush=True)
        return mpx

    print(f"\nmosaic translation, uint16, {'with' if risk else 'without'} the risk map (G_BA∘G_AB), "
          f"halo {model.halo} px{' ×2' if risk else ''}; Mpx/s from "
          f"{'CPU' if one_thread else 'wall'} s; RSS = peak growth during the call (MiB), "
          f"outputs = its result arrays (MiB), within the RSS"
          + ("; GPU = peak GPU memory allocated (MiB)" if gpu else ""))
    print(f"{'settings':<44} {'size':>6} {'tiles':>5} {'wall s':>8} {'CPU s':>8} {'Mpx/s':>7} "
          f"{'GFLOP/s':>8} {'of peak':>7} {'RSS':>8} {'outputs':>8}" + (f" {'GPU':>8}" if gpu else ""))
    crop = mosaic[:min(n, 1024), :min(n, 1024)]
    new = row(f"inference form, tile {args.tile}, batch {args.batch}", crop,
              tile=args.tile, batch_size=args.batch)
    fused = model.tile_ab, model.tile_ba
    model.tile_ab, model.tile_ba = model.g_ab, model.g_ba  # the reference nets, old defaults
    old = row("reference nets, tile 512, batch 4 (before)", crop, tile=512, batch_size=4)
    model.tile_ab, model.tile_ba = fused
    print(f"{'':<44} speed-up on the crop: ×{new / old:.2f}")
    if n > 1024:
        row(f"inference form, tile {args.tile}, batch {args.batch}", mosaic,
            tile=args.tile, batch_size=args.batch)


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
                                      train__checkpoint_every=steps, loss__paired_l1=args.paired_l1,
                                      train__device=args.device)

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
          + (torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda")
             else f"{torch.get_num_threads()} CPU thread(s)"))
    print("loss terms on: " + ", ".join(f"{k} ×{v:g}" for k, v in terms.items() if v > 0)
          + "; off: " + (", ".join(k for k, v in terms.items() if v <= 0) or "none"))
    print(f"Richardson–Lucy PSF: Gaussian σ {psf_px:.2f} px at the evaluation grid"
          + (f" (simulator's in-focus blur {psf_nm:.0f} nm)" if psf_nm else ""))
    t0 = time.perf_counter()
    report = evaluate(load_model(result.checkpoint, device=args.device), test, psf_sigma_px=psf_px)
    print(report.table())
    print(f"(evaluation {time.perf_counter() - t0:.0f} s)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller images, fewer repeats")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--images", type=int, default=0,
                        help="images per forward in the throughput table (default 1; 16 on a GPU)")
    parser.add_argument("--quality", action="store_true", help="also train + quality table")
    parser.add_argument("--data", help="simulator data set folder (written there if it has no manifest.json; "
                                       "default: a new folder under the temp dir)")
    parser.add_argument("--steps", type=int, default=0, help="training steps (default 1500, --quick 150)")
    parser.add_argument("--minutes", type=float, default=0.0,
                        help="cap training at this many minutes (steps fitted to a timed probe)")
    parser.add_argument("--paired-l1", type=float, default=10.0, help="paired L1 weight (0 = off)")
    parser.add_argument("--skip-throughput", action="store_true", help="only the quality table")
    parser.add_argument("--mosaic", type=int, default=0,
                        help="also translate an N×N mosaic (paper-size generators)")
    parser.add_argument("--tile", type=int, default=1024, help="--mosaic tile core (px)")
    parser.add_argument("--batch", type=int, default=1, help="--mosaic tiles per forward")
    parser.add_argument("--no-risk", action="store_true", help="--mosaic without the risk map")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.skip_throughput:
        if args.quality:
            quality(args)
        return 0
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    if gpu and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available here")
    size, rounds, n = (256, 2, 1024) if args.quick else (256, 5, 2048)  # 256 > 2 × the 96 px halo
    if gpu:
        rounds, n = 10, 4096 if args.quick else 8192  # a GPU's peak needs large products
    images = args.images or (16 if gpu else 1)
    precisions = {"fp32": torch.float32} | ({"tf32": torch.float32} if gpu else {})
    if bf16_supported(device):
        precisions["bf16"] = torch.bfloat16
    nets = [prepare_generator(name, cfg, size=size, batch=images, inference_form=fused,
                              device=device)
            for name, cfg, fused in (
                ("ssum G (64 f, 9 blocks, BN)", GeneratorConfig(), False),
                ("  its inference form", GeneratorConfig(), True),
                ("junyanz ResNet-9 (peer, IN)",
                 GeneratorConfig(arch="junyanz_resnet9", norm="instance"), False))]
    cases = {}
    for prec, dtype in precisions.items():
        a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))

        def peak(a=a, b=b, prec=prec):
            with set_precision(device, prec):
                torch.mm(a, b)
        cases[("peak", prec)] = synchronized(device, peak)
        for i, net in enumerate(nets):
            cases[(i, prec)] = synchronized(device, lambda net=net, prec=prec: net["run"](prec))
    clock = time.thread_time if args.threads == 1 and not gpu else time.perf_counter
    best = interleaved_best(cases, rounds=rounds, clock=clock)
    peaks = {prec: 2 * n ** 3 / best[("peak", prec)] / 1e9 for prec in precisions}
    where = torch.cuda.get_device_name(device) if gpu else f"{args.threads} thread(s)"
    print(f"torch {torch.__version__}, {where}; matmul peak ({n}²): "
          + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in peaks.items())
          + f"; best of {rounds} interleaved rounds, "
          + ("thread CPU time" if clock is time.thread_time else "wall clock"))
    print(f"generator inference, batch {images}, {size}² px, 1 channel, eval, channels_last")
    print(f"{'model':<40} {'prec':<5} {'params':>9} {'GFLOP/im':>8} {'Mpx/s':>9} "
          f"{'GFLOP/s':>9} {'peak':>9} {'of peak':>7}")
    for i, net in enumerate(nets):
        for prec, peak in peaks.items():
            t = best[(i, prec)]
            gflops = net["flops"] / t / 1e9
            print(f"{net['name']:<40} {prec:<5} {net['params'] / 1e6:7.2f} M "
                  f"{net['flops'] / 1e9:8.2f} {net['px'] / t / 1e6:9.3f} "
                  f"{gflops:9.1f} {peak:9.1f} {gflops / peak:7.1%}")
    if args.mosaic:
        bench_mosaic(args, peaks["fp32"])
    if args.quality:
        quality(args)
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    raise SystemExit(main())
