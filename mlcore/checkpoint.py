"""Self-describing checkpoints (written atomically) and the image pool whose state they hold.

A checkpoint is one ``torch.save`` dict: ``format``/``version`` tags, the JSON config, the four
networks, optimizers, schedulers, AMP scaler, per-rank image pools and RNG states, the step,
the per-domain normalisation, pixel size, receptive field/halo and metrics.  It loads with
``weights_only=True`` (tensors, numbers, strings, lists and dicts only), so opening an untrusted
file cannot run code.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from mlcore.errors import CheckpointError

__all__ = [
    "FORMAT",
    "VERSION",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "prune_checkpoints",
    "checkpoint_path",
    "checkpoint_step",
    "ImagePool",
]

FORMAT = "ssumweb.mlcore.checkpoint"
VERSION = 1
_NAME = re.compile(r"^step_(\d{9})\.pt$")


def checkpoint_path(directory: str | Path, step: int) -> Path:
    return Path(directory) / f"step_{step:09d}.pt"


def checkpoint_step(path: str | Path) -> int:
    """The step a checkpoint was written at, read from its name (see :func:`checkpoint_path`)."""
    match = _NAME.match(Path(path).name)
    if match is None:
        raise CheckpointError(f"{path} is not named as a checkpoint (step_<9 digits>.pt)")
    return int(match.group(1))


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` (plus format tags) to a temporary file in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, **state}
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu"
                    ) -> dict[str, Any]:
    """Load and check a checkpoint; raises :class:`CheckpointError` for anything else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every decoder failure means "not a checkpoint"
        raise CheckpointError(f"{path} is not an mlcore checkpoint ({type(exc).__name__})"
                              ) from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an mlcore checkpoint (no '{FORMAT}' tag)")
    if state.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {state.get('version')}; this code "
                              f"reads version {VERSION}")
    return state


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The highest-step ``step_*.pt`` in ``directory`` (temporary files are ignored)."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    found = sorted(p for p in directory.iterdir() if _NAME.match(p.name))
    return found[-1] if found else None


def prune_checkpoints(directory: str | Path, *, keep: int) -> None:
    found = sorted(p for p in Path(directory).iterdir() if _NAME.match(p.name))
    for old in found[:-keep]:
        old.unlink(missing_ok=True)


class ImagePool:
    """History of generated images (Shrivastava et al. 2017) shown to the discriminators.

    Once full, each queried image is swapped with a stored one with probability ½.  Uses its own
    ``torch.Generator`` so the pool's choices are part of the checkpoint and resume is exact.
    """

    def __init__(self, size: int, *, seed: int) -> None:
        self.size = size
        self.images: list[torch.Tensor] = []
        self.generator = torch.Generator().manual_seed(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` detached fakes → a batch of the same shape for the discriminator."""
        if self.size == 0:
            return images
        out = []
        for img in images.detach():
            img = img.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(img.to("cpu", torch.float32, copy=True))  # AMP or not, as resumed
                out.append(img)
            elif torch.rand(1, generator=self.generator).item() > 0.5:
                j = int(torch.randint(0, self.size, (1,), generator=self.generator))
                old = self.images[j].to(img.device, img.dtype)
                self.images[j] = img.to("cpu", torch.float32, copy=True)
                out.append(old)
            else:
                out.append(img)
        return torch.cat(out, 0)

    def state_dict(self) -> dict[str, Any]:
        return {"size": self.size,
                "images": torch.cat(self.images, 0) if self.images else torch.empty(0),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.size = int(state["size"])
        imgs = state["images"].float().cpu()  # a checkpoint loaded onto the GPU has them there
        self.images = [imgs[i:i + 1].clone() for i in range(imgs.shape[0])] if imgs.numel() else []
        self.generator.set_state(state["generator"].cpu())
