"""Command-line entry points: ``python -m mlcore train|evaluate|translate``.

The ``run_*`` functions are what a Django management command or task calls (plain arguments,
a progress callback, a cancel check, a dataclass back); :func:`main` adds argument parsing,
progress bars (tqdm when installed) and one-line errors with exit status 2.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mlcore.config import ExperimentConfig, preset
from mlcore.errors import MlcoreError

__all__ = ["run_training", "run_evaluation", "run_translation", "main"]

log = logging.getLogger(__name__)


def _config(preset_name: str, config_json: str | None, overrides: dict[str, Any] | None
            ) -> ExperimentConfig:
    cfg = preset(preset_name)
    if config_json:
        text = Path(config_json).read_text() if Path(config_json).is_file() else config_json
        cfg = ExperimentConfig.from_dict({**cfg.to_dict(), **json.loads(text)})
    return cfg.replace(**(overrides or {}))


def run_training(data_dir: str | Path, out_dir: str | Path, *, config: ExperimentConfig,
                 max_steps: int | None = None, resume: bool = True,
                 progress: Callable | None = None, should_cancel: Callable[[], bool] | None = None,
                 transform: Callable | None = None) -> Any:
    """Train on a pair folder (see :func:`mlcore.data.load_pair_folder`), resuming from
    ``out_dir/checkpoints`` when possible; on a finished run also writes ``out_dir/model.pt``.
    Under ``torchrun`` (``WORLD_SIZE`` > 1) joins the process group first."""
    import torch.distributed as dist

    from mlcore.data import PairDataset, load_pair_folder
    from mlcore.train import Trainer, export_model, resolve_device

    started_group = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if resolve_device(config.train.device).type == "cuda" else "gloo"
        dist.init_process_group(backend)
        started_group = True
    def fit():
        pairs = load_pair_folder(data_dir)
        dataset = PairDataset(pairs, data=config.data, transform=transform,
                              seed=config.train.seed)
        trainer = Trainer(config, dataset, out_dir=out_dir, progress=progress,
                          should_cancel=should_cancel)
        result = trainer.fit(max_steps=max_steps, resume=resume)
        if trainer.rank == 0 and result.status == "finished":
            export_model(result.checkpoint, Path(out_dir) / "model.pt")
        return result

    try:
        # The trainer, and with it the DDP reducers that hold the process group, is released
        # before the group is destroyed, so nothing holding the group is left to interpreter
        # shutdown (the two-process test once aborted in "terminate called" at exit).
        return fit()
    finally:
        if started_group:
            gc.collect()
            dist.destroy_process_group()


def run_evaluation(model_path: str | Path, data_dir: str | Path, *, psf_sigma_px: float = 2.0,
                   max_shift: int = 2, progress: Callable[[int, int], None] | None = None,
                   should_cancel: Callable[[], bool] | None = None, device: str = "auto") -> Any:
    from mlcore.data import load_pair_folder
    from mlcore.evaluate import evaluate
    from mlcore.infer import load_model

    return evaluate(load_model(model_path, device=device), load_pair_folder(data_dir), psf_sigma_px=psf_sigma_px,
                    max_shift=max_shift, progress=progress, should_cancel=should_cancel)


def _open_input(path: Path) -> np.ndarray:
    """Memory-map an uncompressed TIFF when possible (bounded memory), else read it."""
    from mlcore.data import read_image
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile
        try:
            return np.squeeze(tifffile.memmap(path, mode="r"))
        except Exception:  # noqa: BLE001 - compressed/tiled TIFF: fall back to a full read
            pass
    return read_image(path)


def _write_tiff(path: Path, array: np.ndarray) -> None:
    import tifffile

    from imaging.imageio import atomic_path

    with atomic_path(path, suffix=".tif") as tmp:
        tifffile.imwrite(tmp, array, bigtiff=array.nbytes > 2 ** 31, tile=(256, 256))


def run_translation(model_path: str | Path, input_path: str | Path, output_path: str | Path, *,
                    risk_path: str | Path | None = None, tile: int = 1024, batch_size: int = 1,
                    bf16: bool = False, device: str = "auto",
                    progress: Callable[[int, int], None] | None = None,
                    should_cancel: Callable[[], bool] | None = None) -> Any:
    """Translate a mosaic file into a 16-bit SEM-like TIFF (+ float32 risk TIFF).  Outputs are
    staged in memory-mapped scratch files next to the output, so RAM stays bounded."""
    from mlcore.infer import load_model, translate_mosaic

    model = load_model(model_path, device=device)
    input_path, output_path = Path(input_path), Path(output_path)
    mosaic = _open_input(input_path)
    try:
        output_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(f"cannot create the output folder {output_path.parent}: "
                      f"{exc.strerror or exc}") from exc
    shape = mosaic.shape[:2] if model.out_channels == 1 else (*mosaic.shape[:2],
                                                               model.out_channels)
    # a scratch name ssumweb.media.sweep_staging knows: what a crash leaves here is gigabytes on a large mosaic
    with tempfile.TemporaryDirectory(prefix=".scratch-", dir=output_path.parent) as scratch:
        out = np.lib.format.open_memmap(Path(scratch) / "sem.npy", "w+", np.uint16, shape)
        risk_out = (np.lib.format.open_memmap(Path(scratch) / "risk.npy", "w+", np.float32,
                                              mosaic.shape[:2]) if risk_path else None)
        result = translate_mosaic(model, mosaic, tile=tile, batch_size=batch_size,
                                  risk=risk_path is not None, bf16=bf16, out=out,
                                  risk_out=risk_out, progress=progress,
                                  should_cancel=should_cancel)
        _write_tiff(output_path, out)
        if risk_path:
            _write_tiff(Path(risk_path), risk_out)
        del out, risk_out
    return result


class _Bar:
    """tqdm when available, otherwise a carriage-return counter on stderr."""

    def __init__(self, desc: str, *, unit: str = "it") -> None:
        self.desc, self.unit, self.bar = desc, unit, None

    def __call__(self, done: int, total: int, **postfix: Any) -> None:
        try:
            from tqdm import tqdm
        except ImportError:
            sys.stderr.write(f"\r{self.desc}: {done}/{total}")
            return
        if self.bar is None:
            self.bar = tqdm(total=total, desc=self.desc, unit=self.unit)
        self.bar.update(done - self.bar.n)
        if postfix:
            self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlcore", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a CycleGAN on a folder of LR/HR pairs")
    t.add_argument("--data", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--preset", default="paper", choices=("paper", "tiny"))
    t.add_argument("--config", help="JSON text or file overriding preset sections")
    t.add_argument("--steps", type=int, help="stop after this many more steps")
    t.add_argument("--device", help="cpu, cuda, cuda:N or auto")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--no-resume", action="store_true")
    e = sub.add_parser("evaluate", help="score a model and baselines on held-out pairs")
    e.add_argument("--model", required=True)
    e.add_argument("--data", required=True)
    e.add_argument("--psf-sigma-px", type=float, default=2.0)
    e.add_argument("--max-shift", type=int, default=2)
    e.add_argument("--json", help="also write the report here")
    e.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: the GPU if any)")
    r = sub.add_parser("translate", help="translate a mosaic image into an SEM-like one",
                       description="Translate a mosaic of any size tile by tile (memory bounded "
                                   "by the tile; uncompressed TIFFs are memory-mapped).")
    r.add_argument("--model", required=True,
                   help="exported model.pt or a training checkpoint")
    r.add_argument("--input", required=True, help="mosaic image: TIFF (uint16 or float) or PNG")
    r.add_argument("--output", required=True, help="16-bit SEM-like TIFF to write")
    r.add_argument("--risk", help="also write the float32 hallucination-risk map TIFF here")
    r.add_argument("--tile", type=int, default=1024,
                   help="tile core in px (default 1024: the halo costs less on larger tiles)")
    r.add_argument("--batch-size", type=int, default=1, help="tiles per forward pass")
    r.add_argument("--bf16", action="store_true",
                   help="bfloat16 autocast (faster only with AVX512_BF16/AMX or a recent GPU)")
    r.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: the GPU if any)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    bar = _Bar(args.command, unit="tile" if args.command == "translate" else "it")
    try:
        if args.command == "train":
            overrides = {k: v for k, v in (("train__device", args.device),
                                           ("train__batch_size", args.batch_size)) if v}
            cfg = _config(args.preset, args.config, overrides)
            result = run_training(args.data, args.out, config=cfg, max_steps=args.steps,
                                  resume=not args.no_resume,
                                  progress=lambda p: bar(p.step, p.total_steps, **{
                                      k: f"{v:.3f}" for k, v in p.losses.items()}))
            bar.close()
            print(f"{result.status} at step {result.step}: {result.checkpoint}")
        elif args.command == "evaluate":
            report = run_evaluation(args.model, args.data, psf_sigma_px=args.psf_sigma_px,
                                    max_shift=args.max_shift, progress=bar, device=args.device)
            bar.close()
            print(report.table())
            if args.json:
                Path(args.json).write_text(json.dumps(report.to_dict(), indent=2))
        else:
            result = run_translation(args.model, args.input, args.output, risk_path=args.risk,
                                     tile=args.tile, batch_size=args.batch_size, bf16=args.bf16,
                                     device=args.device, progress=bar)
            bar.close()
            print(f"wrote {args.output} ({result.tiles} tiles, {result.seconds:.1f} s)")
    except (MlcoreError, ValueError, OSError) as exc:
        bar.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
