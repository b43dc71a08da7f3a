"""CycleGAN training: single process (CPU, or one GPU with AMP) or ``torchrun`` DDP.

``Trainer(cfg, dataset, out_dir=...).fit()`` runs until ``train.total_steps``, writing a
checkpoint every ``train.checkpoint_every`` steps and on cancel; ``fit(resume=True)`` continues
from the newest checkpoint exactly (same batches, same pool draws, same dropout).  Under DDP
each of the four networks is wrapped on its own; SyncBatchNorm is used only on CUDA (it refuses
CPU tensors).  Command line: ``python -m mlcore.train --data DIR --out DIR [--preset tiny]``,
also under ``torchrun --nproc_per_node=N``.
"""

from __future__ import annotations

import logging
import os
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from mlcore.checkpoint import (
    ImagePool,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from mlcore.config import ExperimentConfig, GeneratorConfig
from mlcore.data import PairDataset, from_network
from mlcore.errors import CheckpointError, ConfigError
from mlcore.losses import ContextualLoss, LSGANLoss, SSIMLoss
from mlcore.nets import build_discriminator, build_generator, halo_for, receptive_field

__all__ = ["Trainer", "TrainProgress", "TrainResult", "resolve_device", "main"]

log = logging.getLogger(__name__)
NETS = ("g_ab", "g_ba", "d_a", "d_b")


@dataclass(frozen=True)
class TrainProgress:
    """One step's report. ``samples`` (float32 [0, 1] images) come once per epoch."""

    step: int
    total_steps: int
    epoch: int
    losses: dict[str, float]
    lr: float
    elapsed_s: float
    eta_s: float
    samples: dict[str, np.ndarray] | None = None


@dataclass(frozen=True)
class TrainResult:
    status: str  # 'finished' | 'cancelled'
    step: int
    checkpoint: Path
    losses: dict[str, float] = field(default_factory=dict)


def resolve_device(name: str, *, field: str = "train.device") -> torch.device:
    """'auto' is the GPU where there is one; asking for CUDA without one is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{field}={name!r} but CUDA is not available here")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"{field}={name!r} is not a device: use cpu, cuda, cuda:N or auto") from exc


def _mirror(cfg: GeneratorConfig) -> GeneratorConfig:
    return replace(cfg, in_channels=cfg.out_channels, out_channels=cfg.in_channels)


def _lr_factor(constant: int, decay: int) -> Callable[[int], float]:
    def factor(step: int) -> float:  # constant, then linear to 0 over `decay` steps
        return 1.0 if step < constant else max(0.0, 1.0 - (step - constant + 1) / (decay + 1))
    return factor


class Trainer:
    """Owns the four networks, their optimizers and the training loop.

    ``progress(TrainProgress)`` is called on rank 0 after each step; ``should_cancel()`` is
    polled before each step (rank 0's answer is broadcast) and stops the run within one step,
    after writing a checkpoint.
    """

    def __init__(self, cfg: ExperimentConfig, dataset: PairDataset, *, out_dir: str | Path,
                 progress: Callable[[TrainProgress], None] | None = None,
                 should_cancel: Callable[[], bool] | None = None) -> None:
        self.cfg, self.dataset = cfg, dataset
        self.out_dir = Path(out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.progress, self.should_cancel = progress, should_cancel
        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        self.world_size = dist.get_world_size() if self.distributed else 1
        self.device = resolve_device(cfg.train.device)
        if self.device.type == "cuda" and self.distributed:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if dataset.channels != cfg.generator.in_channels:
            raise ConfigError(f"data has {dataset.channels} channel(s), generator.in_channels="
                              f"{cfg.generator.in_channels}")
        tc = cfg.train
        torch.manual_seed(tc.seed)  # identical initial weights on every rank
        self.nets: dict[str, nn.Module] = {
            "g_ab": build_generator(cfg.generator),
            "g_ba": build_generator(_mirror(cfg.generator)),
            "d_a": build_discriminator(replace(cfg.discriminator,
                                               in_channels=cfg.generator.in_channels)),
            "d_b": build_discriminator(cfg.discriminator),
        }
        rf = receptive_field(self.nets["g_ab"])
        self.receptive_field, self.halo = rf, halo_for(self.nets["g_ab"], rf=rf)
        for name, net in self.nets.items():
            if self.distributed and self.device.type == "cuda":
                net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
            self.nets[name] = net.to(self.device)
        self.models = dict(self.nets)  # what we call: DDP wrappers under torchrun
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP
            ids = [self.device.index] if self.device.type == "cuda" else None
            # No buffer broadcast on each forward: the generators run up to three times per
            # step, and an in-place broadcast of BatchNorm's running statistics between those
            # runs breaks their backward (seen with torch 2.11).  The statistics are averaged
            # over the ranks before each checkpoint instead (SyncBatchNorm keeps them equal).
            self.models = {k: DDP(v, device_ids=ids, broadcast_buffers=False)
                           for k, v in self.nets.items()}
        g_params = [*self.nets["g_ab"].parameters(), *self.nets["g_ba"].parameters()]
        d_params = [*self.nets["d_a"].parameters(), *self.nets["d_b"].parameters()]
        self.opt_g = torch.optim.Adam(g_params, lr=tc.lr, betas=tc.betas)
        self.opt_d = torch.optim.Adam(d_params, lr=tc.lr, betas=tc.betas)
        factor = _lr_factor(tc.constant_steps, tc.decay_steps)
        self.sched_g = torch.optim.lr_scheduler.LambdaLR(self.opt_g, factor)
        self.sched_d = torch.optim.lr_scheduler.LambdaLR(self.opt_d, factor)
        self.use_amp = tc.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.pools = {k: ImagePool(tc.pool_size, seed=tc.seed * 7919 + self.rank * 2 + i)
                      for i, k in enumerate(("a", "b"))}
        self.cx_generator = torch.Generator().manual_seed(tc.seed * 104729 + self.rank)
        torch.manual_seed(tc.seed * 1_000_003 + self.rank)  # per-rank dropout streams
        lc = cfg.loss
        self.gan, self.l1, self.ssim = LSGANLoss(), nn.L1Loss(), SSIMLoss()
        self.contextual = ContextualLoss(patch=lc.contextual_patch, stride=lc.contextual_stride,
                                         max_points=lc.contextual_points,
                                         band_width=lc.contextual_band_width)
        self.step = 0

    # ----------------------------------------------------------------------------- one step
    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.float16, enabled=self.use_amp)

    def train_step(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, float], dict]:
        """One G update and one D update; returns float losses and the tensors for samples."""
        lc, m, n = self.cfg.loss, self.models, self.nets
        real_a, real_b, pair_b = (batch[k].to(self.device) for k in ("a", "b", "b_pair"))
        for d in ("d_a", "d_b"):
            n[d].requires_grad_(False)
        with self._autocast():
            fake_b = m["g_ab"](real_a)  # (B, C, H, W) SEM-like
            rec_a = m["g_ba"](fake_b)
            fake_a = m["g_ba"](real_b)
            rec_b = m["g_ab"](fake_a)
            terms = {
                "g_gan": lc.adversarial * (self.gan(n["d_b"](fake_b), True)
                                           + self.gan(n["d_a"](fake_a), True)),
                "cycle": lc.cycle * (self.l1(rec_a, real_a) + self.l1(rec_b, real_b)),
            }
            if lc.identity > 0 and real_a.shape[1] == real_b.shape[1]:
                terms["identity"] = lc.identity * lc.cycle * (
                    self.l1(m["g_ab"](real_b), real_b) + self.l1(m["g_ba"](real_a), real_a))
            if lc.contextual > 0:
                terms["contextual"] = lc.contextual * self._contextual(fake_b, pair_b)
                if not self.cfg.data.unaligned:  # real_b is a's partner: use both directions
                    terms["contextual"] = terms["contextual"] + lc.contextual * self._contextual(
                        fake_a, real_a, disc=n["d_a"])
            if lc.paired_l1 > 0:
                terms["paired_l1"] = lc.paired_l1 * self.l1(fake_b, pair_b)
            if lc.paired_ssim > 0:
                terms["paired_ssim"] = lc.paired_ssim * self.ssim(fake_b, pair_b)
            loss_g = sum(terms.values())
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler.scale(loss_g).backward()
        self.scaler.step(self.opt_g)

        for d in ("d_a", "d_b"):
            n[d].requires_grad_(True)
        with self._autocast():
            pool_b = self.pools["b"].query(fake_b.detach())
            pool_a = self.pools["a"].query(fake_a.detach())
            loss_d_b = 0.5 * (self.gan(m["d_b"](real_b), True) + self.gan(m["d_b"](pool_b), False))
            loss_d_a = 0.5 * (self.gan(m["d_a"](real_a), True) + self.gan(m["d_a"](pool_a), False))
        self.opt_d.zero_grad(set_to_none=True)
        self.scaler.scale(loss_d_a + loss_d_b).backward()
        self.scaler.step(self.opt_d)
        self.scaler.update()
        with warnings.catch_warnings():
            # Under AMP the scaler skips the first steps while it finds its scale; the schedule
            # follows the step count all the same, which PyTorch would warn about each run.
            warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()` before"),
                                    UserWarning)
            self.sched_g.step()
            self.sched_d.step()
        losses = {k: float(v.detach()) for k, v in terms.items()}
        losses.update(g_total=float(loss_g.detach()), d_a=float(loss_d_a.detach()),
                      d_b=float(loss_d_b.detach()))
        return losses, {"ssum": real_a, "sem_like": fake_b, "sem": pair_b, "ssum_cycle": rec_a}

    def _contextual(self, output: torch.Tensor, target: torch.Tensor, *,
                    disc: nn.Module | None = None) -> torch.Tensor:
        mode = self.cfg.loss.contextual_on
        disc = disc if disc is not None else self.nets["d_b"]
        feats = {}
        if mode in ("disc", "both"):
            feats = {"output_feats": disc.features(output)[:2],
                     "target_feats": [f.detach() for f in disc.features(target)[:2]]}
        images = (output, target) if mode in ("patches", "both") else (None, None)
        return self.contextual(*images, generator=self.cx_generator, **feats)

    # ------------------------------------------------------------------------------- loop
    def fit(self, *, max_steps: int | None = None, resume: bool = True) -> TrainResult:
        """Train to ``train.total_steps`` (or ``max_steps`` more steps, for tests/benches)."""
        if resume and (last := latest_checkpoint(self.ckpt_dir)) is not None:
            self.load_state_dict(load_checkpoint(last, map_location=self.device))
            log.info("resumed from %s at step %d", last, self.step)
        tc = self.cfg.train
        end = tc.total_steps if max_steps is None else min(tc.total_steps, self.step + max_steps)
        spe = self.dataset.steps_per_epoch(batch_size=tc.batch_size, world_size=self.world_size)
        for net in self.nets.values():
            net.train()
        start, start_step, losses = time.monotonic(), self.step, {}
        path = None
        while self.step < end:
            if self._cancel_requested():
                path = self.save()
                return TrainResult("cancelled", self.step, path, losses)
            batch = self.dataset.batch(self.step, batch_size=tc.batch_size, rank=self.rank,
                                       world_size=self.world_size)
            losses, tensors = self.train_step(batch)
            self.step += 1
            path = None
            if self.step % tc.checkpoint_every == 0:
                path = self.save()
            if self.progress and self.rank == 0:
                every = tc.sample_every or spe
                samples = ({k: from_network(v[0]) for k, v in tensors.items()}
                           if self.step % every == 0 else None)
                elapsed = time.monotonic() - start
                rate = elapsed / (self.step - start_step)
                self.progress(TrainProgress(
                    step=self.step, total_steps=tc.total_steps, epoch=self.step // spe,
                    losses=losses, lr=self.sched_g.get_last_lr()[0], elapsed_s=elapsed,
                    eta_s=rate * (tc.total_steps - self.step), samples=samples))
        path = path or self.save()
        return TrainResult("finished", self.step, path, losses)

    def _cancel_requested(self) -> bool:
        flag = bool(self.should_cancel()) if (self.should_cancel and self.rank == 0) else False
        if self.distributed:
            t = torch.tensor([int(flag)], device=self.device if dist.get_backend() == "nccl"
                             else "cpu")
            dist.broadcast(t, 0)
            flag = bool(t.item())
        return flag

    # ---------------------------------------------------------------------- checkpointing
    def _local_state(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state(), "cx": self.cx_generator.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {"rng": rng, "pools": {k: p.state_dict() for k, p in self.pools.items()}}

    def _average_norm_statistics(self) -> None:
        for net in self.nets.values():
            for m in net.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
                    for buf in (m.running_mean, m.running_var):
                        dist.all_reduce(buf)  # a sum: gloo has no AVG
                        buf /= self.world_size

    def state_dict(self) -> dict[str, Any]:
        """Everything resume needs; collective under DDP (every rank must call it)."""
        local = self._local_state()
        if self.distributed:
            self._average_norm_statistics()
            gathered: list[Any] = [None] * self.world_size
            dist.all_gather_object(gathered, {k: _to_cpu(v) for k, v in local.items()})
        else:
            gathered = [local]
        return {
            "config": self.cfg.to_json(),
            "step": self.step,
            "world_size": self.world_size,
            "nets": {k: v.state_dict() for k, v in self.nets.items()},
            "optimizers": {"g": self.opt_g.state_dict(), "d": self.opt_d.state_dict()},
            "schedulers": {"g": self.sched_g.state_dict(), "d": self.sched_d.state_dict()},
            "scaler": self.scaler.state_dict(),
            "per_rank": gathered,
            "normalization": {"a": self.dataset.norm_a.to_dict(),
                              "b": self.dataset.norm_b.to_dict()},
            "pixel_size_nm": self.dataset.pixel_size_nm,
            "receptive_field": list(self.receptive_field),
            "halo": self.halo,
            "metrics": {},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = ExperimentConfig.from_json(state["config"])
        if saved.generator != self.cfg.generator or saved.discriminator != self.cfg.discriminator:
            raise CheckpointError("the checkpoint's networks differ from this run's config; "
                                  "use a fresh output folder")
        for k, net in self.nets.items():
            net.load_state_dict(state["nets"][k])
        self.opt_g.load_state_dict(state["optimizers"]["g"])
        self.opt_d.load_state_dict(state["optimizers"]["d"])
        self.sched_g.load_state_dict(state["schedulers"]["g"])
        self.sched_d.load_state_dict(state["schedulers"]["d"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        per_rank = state["per_rank"]
        if self.rank < len(per_rank) and len(per_rank) == self.world_size:
            mine = per_rank[self.rank]
            rng = {k: v.cpu() for k, v in mine["rng"].items()}  # map_location moved them
            torch.set_rng_state(rng["torch"])
            self.cx_generator.set_state(rng["cx"])
            if "cuda" in rng and self.device.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda"], self.device)
            for k, pool in self.pools.items():
                pool.load_state_dict(mine["pools"][k])
        else:
            log.warning("checkpoint was written by %d ranks, now %d: RNG streams and image pools "
                        "restart (weights and optimizers are exact)", len(per_rank),
                        self.world_size)

    def save(self) -> Path:
        state = self.state_dict()
        path = checkpoint_path(self.ckpt_dir, self.step)
        if self.rank == 0:
            save_checkpoint(state, path)
            prune_checkpoints(self.ckpt_dir, keep=self.cfg.train.keep_checkpoints)
        if self.distributed:
            dist.barrier()
        return path


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    return obj


def export_model(checkpoint: str | Path, out_path: str | Path, *,
                 metrics: dict[str, Any] | None = None) -> Path:
    """A lean inference file from a training checkpoint: the generators, config, normalisation,
    pixel size, halo and (optionally) test metrics; no discriminators, optimizers or pools."""
    state = load_checkpoint(checkpoint)
    lean = {k: state[k] for k in ("config", "step", "normalization", "pixel_size_nm",
                                  "receptive_field", "halo")}
    lean["nets"] = {k: state["nets"][k] for k in ("g_ab", "g_ba")}
    lean["metrics"] = dict(metrics or state.get("metrics") or {})
    state_path = save_checkpoint(lean, out_path)
    return state_path


def main(argv: list[str] | None = None) -> int:
    from mlcore.cli import main as cli_main
    return cli_main(["train", *(argv if argv is not None else __import__("sys").argv[1:])])


if __name__ == "__main__":
    raise SystemExit(main())
