"""Tiled translation of mosaics of any size, region by region, and live during a scan.

Convention (the one the tests hold us to): the mosaic is reflect-padded *once* by the halo (and
up to the next multiple of the generator's stride), the generator runs on tiles whose cores are
aligned to that stride, and only each tile's core is written back.  With BatchNorm in eval mode
(or no norm) the generator is a local operator, so a tile's core equals the same pixels of one
whole-image pass on the padded mosaic (:func:`translate_whole`), bit for bit up to float
summation order.  The padding is never materialised: each tile reads its window through
reflected indices, so memory is bounded by ``batch_size`` tiles whatever the mosaic size; pass
``np.memmap``/``tifffile.memmap`` arrays as ``mosaic`` and ``out`` for mosaics beyond RAM.

Mosaics smaller than a tile are translated with the tile shrunk to the (stride-rounded) mosaic,
i.e. they are padded by reflection; below :data:`MIN_SIZE` px a side they are refused.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from mlcore.checkpoint import load_checkpoint
from mlcore.config import ExperimentConfig
from mlcore.data import Normalization
from mlcore.errors import Cancelled, CheckpointError, InputImageError
from mlcore.nets import build_generator, fuse_for_inference, halo_for, total_stride

__all__ = [
    "TranslationModel",
    "TranslationResult",
    "load_model",
    "translate_mosaic",
    "translate_region",
    "translate_whole",
    "LiveTranslator",
    "reflect_index",
    "bf16_supported",
    "MIN_SIZE",
]

MIN_SIZE = 8
_NAN_BAND = 512  # rows per NaN-scan read, keeps the check memory-bounded


class TranslationModel:
    """The two generators of a trained CycleGAN plus what inference needs from the checkpoint."""

    def __init__(self, g_ab: nn.Module, g_ba: nn.Module, *, config: ExperimentConfig,
                 norm_a: Normalization, norm_b: Normalization, halo: int,
                 pixel_size_nm: float | None = None, metrics: dict[str, Any] | None = None,
                 device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.g_ab = g_ab.to(self.device).eval()
        self.g_ba = g_ba.to(self.device).eval()
        for g in (self.g_ab, self.g_ba):
            g.requires_grad_(False)
            g.to(memory_format=torch.channels_last)
        # Tiles run the inference form (BN folded, zero padding): equal on every tile core,
        # since padding reaches no further in than the halo.  g_ab/g_ba stay the reference.
        self.tile_ab = fuse_for_inference(self.g_ab) or self.g_ab
        self.tile_ba = fuse_for_inference(self.g_ba) or self.g_ba
        self.config, self.norm_a, self.norm_b = config, norm_a, norm_b
        self.stride = total_stride(g_ab)
        self.halo = int(math.ceil(halo / self.stride) * self.stride)
        self.pixel_size_nm, self.metrics = pixel_size_nm, dict(metrics or {})
        self.in_channels = config.generator.in_channels
        self.out_channels = config.generator.out_channels

    @classmethod
    def from_trainer_nets(cls, g_ab: nn.Module, g_ba: nn.Module, *, config: ExperimentConfig,
                          norm_a: Normalization, norm_b: Normalization) -> TranslationModel:
        """Wrap in-memory generators (copies, so training can continue)."""
        import copy
        return cls(copy.deepcopy(g_ab), copy.deepcopy(g_ba), config=config, norm_a=norm_a,
                   norm_b=norm_b, halo=halo_for(g_ab))


def load_model(path: str | Path, *, device: str | torch.device = "cpu") -> TranslationModel:
    """Rebuild the generators from a training checkpoint or an exported model file alone, on
    ``device`` ('auto': the GPU where there is one)."""
    from mlcore.train import _mirror, resolve_device

    device = resolve_device(str(device), field="device")
    state = load_checkpoint(path, map_location=device)
    try:
        cfg = ExperimentConfig.from_json(state["config"])
        g_ab, g_ba = build_generator(cfg.generator), build_generator(_mirror(cfg.generator))
        g_ab.load_state_dict(state["nets"]["g_ab"])
        g_ba.load_state_dict(state["nets"]["g_ba"])
        norm = state["normalization"]
        halo = int(state.get("halo") or halo_for(g_ab))
        return TranslationModel(g_ab, g_ba, config=cfg, norm_a=Normalization.from_dict(norm["a"]),
                                norm_b=Normalization.from_dict(norm["b"]), halo=halo,
                                pixel_size_nm=state.get("pixel_size_nm"),
                                metrics=state.get("metrics"), device=device)
    except (KeyError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{path} is damaged or incomplete: {exc}") from exc


@dataclass(frozen=True)
class TranslationResult:
    """``sem_like`` (H, W[, C]) uint16 SEM units (or float32 [0, 1] if asked); ``risk`` (H, W)
    float32 = mean over channels of |G_BA(G_AB(x)) − x| in [0, 1] units, or None."""

    sem_like: np.ndarray
    risk: np.ndarray | None
    tiles: int
    seconds: float


def reflect_index(idx: np.ndarray, n: int) -> np.ndarray:
    """Indices into an axis of length ``n`` as torch's/numpy's 'reflect' padding maps them
    (edge not repeated), folded again as often as needed for windows wider than ``n``."""
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    idx = np.abs(idx) % period
    return np.where(idx >= n, period - idx, idx)


@contextlib.contextmanager
def precision(device: torch.device, bf16: bool = False) -> Iterator[None]:
    """bf16 autocast when asked, otherwise true fp32: cuDNN runs fp32 convs in TF32 (a 10-bit
    mantissa) by default on Ampere and later, and the inference form's folded weights then
    round differently from the reference nets', so tiles and the whole image differed by up to
    4e-3 on an H100."""
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        if device.type != "cuda":
            yield
            return
        before = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32 = before


def bf16_supported(device: torch.device) -> bool:
    """bf16 autocast pays off only with native support (CPU AVX512_BF16/AMX, CUDA sm80+)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return torch.backends.mkldnn.is_available() and ("avx512_bf16" in flags or "amx_bf16" in flags)


def _mosaic_channels(mosaic: np.ndarray) -> int:
    if mosaic.ndim == 2:
        return 1
    if mosaic.ndim == 3:
        return int(mosaic.shape[2])
    raise InputImageError(f"a mosaic must be (H, W) or (H, W, C), got shape {mosaic.shape}")


def _validate(model: TranslationModel, mosaic: np.ndarray) -> None:
    channels = _mosaic_channels(mosaic)
    if channels != model.in_channels:
        raise InputImageError(f"the model expects {model.in_channels}-channel images, the "
                              f"mosaic has {channels} channel(s)")
    h, w = mosaic.shape[:2]
    if min(h, w) < MIN_SIZE:
        raise InputImageError(f"mosaic is {h}×{w} px; at least {MIN_SIZE} px a side is needed")
    if np.issubdtype(mosaic.dtype, np.floating):
        for r in range(0, h, _NAN_BAND):
            band = np.asarray(mosaic[r:r + _NAN_BAND])
            bad = ~np.isfinite(band)
            if bad.any():
                row, col = np.argwhere(bad)[0][:2]
                raise InputImageError(f"mosaic has NaN/infinite values, first at (row, col) = "
                                      f"({r + row}, {col})")


class _Runner:
    """Runs tiles ``(row, col)`` → core outputs through G_AB (and G_BA for the risk map)."""

    def __init__(self, model: TranslationModel, shape: tuple[int, int], *, tile: int,
                 batch_size: int, risk: bool, bf16: bool) -> None:
        if tile < model.stride or tile % model.stride:
            raise ValueError(f"tile={tile} must be a positive multiple of {model.stride}")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        self.model, self.shape, self.risk = model, shape, risk
        s = model.stride
        padded = max(math.ceil(shape[0] / s) * s, math.ceil(shape[1] / s) * s)
        self.tile = min(tile, padded)  # small mosaic: one tile, reflect-padded
        # The risk map composes two generators, so its halo is the sum of both radii.
        self.halo = model.halo * (2 if risk else 1)
        self.batch_size = batch_size
        self.bf16 = bf16 and bf16_supported(model.device)

    def origins(self, rows: tuple[int, int], cols: tuple[int, int]) -> list[tuple[int, int]]:
        """Tile origins (multiples of the stride) whose cores cover ``rows × cols``."""
        s, t = self.model.stride, self.tile
        r0, c0 = rows[0] // s * s, cols[0] // s * s
        return [(r, c) for r in range(r0, rows[1], t) for c in range(c0, cols[1], t)]

    def read(self, mosaic: np.ndarray, row: int, col: int) -> np.ndarray:
        h, w = self.shape
        span = np.arange(-self.halo, self.tile + self.halo)
        ri, ci = reflect_index(span + row, h), reflect_index(span + col, w)
        block = np.asarray(mosaic[ri.min():ri.max() + 1, ci.min():ci.max() + 1])
        return block[np.ix_(ri - ri.min(), ci - ci.min())]

    def blank(self, mosaic: np.ndarray, row: int, col: int) -> np.ndarray:
        """(tile, tile) bool: the core's pixels no frame covers (:func:`uncovered`), read with the
        reflection the tiles use, so a tile's answer is the whole mosaic's."""
        h, w = self.shape
        m = BLANK_MARGIN
        span = np.arange(-m, self.tile + m)
        ri, ci = reflect_index(span + row, h), reflect_index(span + col, w)
        return uncovered(np.asarray(mosaic)[np.ix_(ri, ci)])[m:-m, m:-m]

    @torch.inference_mode()
    def run(self, mosaic: np.ndarray, origins: list[tuple[int, int]],
            write: Callable[[int, int, np.ndarray, np.ndarray | None, np.ndarray], None], *,
            progress: Callable[[int, int], None] | None = None,
            should_cancel: Callable[[], bool] | None = None) -> None:
        m, hl, t = self.model, self.halo, self.tile
        for start in range(0, len(origins), self.batch_size):
            if should_cancel and should_cancel():
                raise Cancelled(f"translation cancelled after {start} of {len(origins)} tiles")
            chunk = origins[start:start + self.batch_size]
            windows = [m.norm_a.to_unit(self.read(mosaic, r, c)) for r, c in chunk]
            x = torch.from_numpy(np.stack([w if w.ndim == 3 else w[..., None] for w in windows]))
            x = (x.permute(0, 3, 1, 2) * 2 - 1).to(m.device).contiguous(
                memory_format=torch.channels_last)  # (B, C, t + 2h, t + 2h)
            core = (slice(None), slice(None), slice(hl, hl + t), slice(hl, hl + t))
            with precision(m.device, self.bf16):
                fake = m.tile_ab(x)
                # G_BA's core needs only its own halo of fake around the core, not G_AB's too.
                h1 = m.halo if self.risk else 0
                rec = (m.tile_ba(fake[:, :, h1:hl + t + m.halo, h1:hl + t + m.halo])
                       if self.risk else None)  # (B, C, t + 2h, t + 2h)
            sem = ((fake[core].float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()
            risk = None
            if rec is not None:
                inner = (slice(None), slice(None), slice(m.halo, m.halo + t),
                         slice(m.halo, m.halo + t))
                risk = ((rec[inner].float() - x[core]).abs() / 2).mean(1).cpu().numpy()
            for i, (r, c) in enumerate(chunk):
                write(r, c, sem[i], None if risk is None else risk[i], self.blank(mosaic, r, c))
            if progress:
                progress(min(start + self.batch_size, len(origins)), len(origins))


#: Pixels of a mosaic at 0 are blank (no frame covers them) only where all within this many px are:
#: a dark pixel inside the covered area, rounded to 0, is not.
BLANK_MARGIN = 2


def uncovered(mosaic: np.ndarray) -> np.ndarray:
    """(H, W) bool: where no frame covers the mosaic: 0 in every channel throughout the
    (2·BLANK_MARGIN + 1)² square around (nearest-edge beyond the array). The generator paints
    texture there too, which is a translation of nothing: the output is left 0 there."""
    zero = mosaic == 0 if mosaic.ndim == 2 else (mosaic == 0).all(axis=-1)
    size = 2 * BLANK_MARGIN + 1
    return cv2.erode(zero.view(np.uint8), np.ones((size, size), np.uint8), borderType=cv2.BORDER_REPLICATE) > 0


def _writer(out: np.ndarray, risk_out: np.ndarray | None, model: TranslationModel,
            region: tuple[int, int, int, int]) -> Callable:
    """Write tile cores into ``out``/``risk_out`` whose (0, 0) is ``region``'s top-left."""
    r0, r1, c0, c1 = region
    as_uint16 = out.dtype == np.uint16

    def write(row: int, col: int, sem: np.ndarray, risk: np.ndarray | None, blank: np.ndarray) -> None:
        t = sem.shape[0]
        a0, a1 = max(row, r0), min(row + t, r1)
        b0, b1 = max(col, c0), min(col + t, c1)
        if a0 >= a1 or b0 >= b1:
            return
        part = sem[a0 - row:a1 - row, b0 - col:b1 - col]
        part = part[..., 0] if out.ndim == 2 else part
        if as_uint16:
            part = np.clip(np.rint(model.norm_b.from_unit(part)), 0, 65535).astype(np.uint16)
        empty = blank[a0 - row:a1 - row, b0 - col:b1 - col]
        part = np.where(empty if part.ndim == 2 else empty[..., None], 0, part)  # no frame there: nothing, as in the mosaic
        out[a0 - r0:a1 - r0, b0 - c0:b1 - c0] = part
        if risk_out is not None and risk is not None:
            risk_out[a0 - r0:a1 - r0, b0 - c0:b1 - c0] = np.where(empty, 0, risk[a0 - row:a1 - row, b0 - col:b1 - col])
    return write


def _alloc(model: TranslationModel, shape: tuple[int, int], as_uint16: bool) -> np.ndarray:
    full = shape if model.out_channels == 1 else (*shape, model.out_channels)
    return np.empty(full, np.uint16 if as_uint16 else np.float32)


def translate_region(model: TranslationModel, mosaic: np.ndarray, *, rows: tuple[int, int],
                     cols: tuple[int, int], tile: int = 1024, batch_size: int = 1,
                     risk: bool = True, bf16: bool = False, as_uint16: bool = True,
                     out: np.ndarray | None = None, risk_out: np.ndarray | None = None,
                     progress: Callable[[int, int], None] | None = None,
                     should_cancel: Callable[[], bool] | None = None) -> TranslationResult:
    """Translate ``mosaic[rows[0]:rows[1], cols[0]:cols[1]]`` (with its halo read from the
    mosaic around it); equals the same pixels of :func:`translate_mosaic` on the whole mosaic.

    ``mosaic`` : (H, W[, C]) raw intensities (uint16 or float, SSUM units).  ``out``/``risk_out``
    (region-sized, uint16/float32) may be memmaps; they are allocated when None.  Each tile
    computes (1 + 2·halo/tile)² times its core, so large tiles pay: 1024 px (≈1–2 GB of
    activations for the paper generator) rather than more tiles per batch.
    """
    _validate(model, mosaic)
    h, w = mosaic.shape[:2]
    if not (0 <= rows[0] < rows[1] <= h and 0 <= cols[0] < cols[1] <= w):
        raise ValueError(f"region rows={rows}, cols={cols} must lie inside the {h}×{w} mosaic")
    started = time.perf_counter()
    runner = _Runner(model, (h, w), tile=tile, batch_size=batch_size, risk=risk, bf16=bf16)
    shape = (rows[1] - rows[0], cols[1] - cols[0])
    out = _alloc(model, shape, as_uint16) if out is None else out
    if risk and risk_out is None:
        risk_out = np.empty(shape, np.float32)
    origins = runner.origins(rows, cols)
    runner.run(mosaic, origins, _writer(out, risk_out if risk else None, model,
                                        (rows[0], rows[1], cols[0], cols[1])),
               progress=progress, should_cancel=should_cancel)
    return TranslationResult(out, risk_out if risk else None, len(origins),
                             time.perf_counter() - started)


def translate_mosaic(model: TranslationModel, mosaic: np.ndarray, **options: Any
                     ) -> TranslationResult:
    """Whole mosaic, tile by tile (see :func:`translate_region` for the options)."""
    h, w = np.shape(mosaic)[:2]
    return translate_region(model, mosaic, rows=(0, h), cols=(0, w), **options)


@torch.inference_mode()
def translate_whole(model: TranslationModel, mosaic: np.ndarray, *, risk: bool = False
                    ) -> TranslationResult:
    """Reference: one pass over the whole reflect-padded mosaic (float32 [0, 1] output).
    Memory grows with the mosaic; use it for tests and small images only."""
    _validate(model, mosaic)
    started = time.perf_counter()
    h, w = mosaic.shape[:2]
    s, halo = model.stride, model.halo * (2 if risk else 1)
    ri = reflect_index(np.arange(-halo, math.ceil(h / s) * s + halo), h)
    ci = reflect_index(np.arange(-halo, math.ceil(w / s) * s + halo), w)
    unit = model.norm_a.to_unit(np.asarray(mosaic)[np.ix_(ri, ci)])
    x = torch.from_numpy(unit if unit.ndim == 3 else unit[..., None]).permute(2, 0, 1)[None]
    x = (x * 2 - 1).to(model.device)
    with precision(model.device):
        fake = model.g_ab(x)
        rec = model.g_ba(fake) if risk else None
    crop = (slice(None), slice(None), slice(halo, halo + h), slice(halo, halo + w))
    sem = ((fake[crop].clamp(-1, 1) + 1) / 2)[0].permute(1, 2, 0).cpu().numpy()
    sem = sem[..., 0] if sem.shape[-1] == 1 else sem
    m = BLANK_MARGIN
    empty = uncovered(np.asarray(mosaic)[np.ix_(reflect_index(np.arange(-m, h + m), h),
                                                 reflect_index(np.arange(-m, w + m), w))])[m:-m, m:-m]
    sem = np.where(empty if sem.ndim == 2 else empty[..., None], 0, sem)
    risk_map = None
    if rec is not None:
        risk_map = np.where(empty, 0, ((rec[crop] - x[crop]).abs() / 2).mean(1)[0].cpu().numpy())
    return TranslationResult(sem, risk_map, 1, time.perf_counter() - started)


class LiveTranslator:
    """Translates a mosaic while a scan fills it in, tile by tile, as inputs become final.

    The canvas size is fixed up front (from the scan plan), so the reflection at its border is
    the final one.  :meth:`add_region` records newly stitched pixels; :meth:`translate_ready`
    runs (at most ``max_tiles``) tiles whose whole input window — core plus halo — is acquired,
    so every written pixel already equals the final whole-mosaic translation.  The caller runs
    it at low priority between frames (it returns quickly with ``max_tiles``) and calls
    :meth:`finish` when the scan ends.
    """

    def __init__(self, model: TranslationModel, canvas_shape: tuple[int, int], *,
                 tile: int = 256, batch_size: int = 1, risk: bool = True, bf16: bool = False,
                 as_uint16: bool = True, out: np.ndarray | None = None,
                 risk_out: np.ndarray | None = None) -> None:
        h, w = canvas_shape
        if min(h, w) < MIN_SIZE:
            raise InputImageError(f"canvas {h}×{w} px is smaller than {MIN_SIZE} px a side")
        self.model, self.shape = model, (h, w)
        self.runner = _Runner(model, (h, w), tile=tile, batch_size=batch_size, risk=risk,
                              bf16=bf16)
        self.out = _alloc(model, (h, w), as_uint16) if out is None else out
        self.risk_out = (np.zeros((h, w), np.float32) if risk and risk_out is None else risk_out)
        self._write = _writer(self.out, self.risk_out if risk else None, model, (0, h, 0, w))
        self.acquired = np.zeros((h, w), bool) if h * w <= 1 << 28 else None
        self.pending = set(self.runner.origins((0, h), (0, w)))
        self.done: list[tuple[int, int]] = []
        if self.acquired is None:
            raise ValueError("canvas too large for live translation bookkeeping (> 268 Mpx)")

    def add_region(self, *, rows: tuple[int, int], cols: tuple[int, int]) -> None:
        """Mark ``rows × cols`` of the canvas as final (stitched, no longer changing)."""
        self.acquired[rows[0]:rows[1], cols[0]:cols[1]] = True

    def ready_tiles(self) -> list[tuple[int, int]]:
        h, w = self.shape
        r = self.runner
        span = np.arange(-r.halo, r.tile + r.halo)
        ready = []
        for row, col in sorted(self.pending):
            ri = np.unique(reflect_index(span + row, h))
            ci = np.unique(reflect_index(span + col, w))
            if self.acquired[np.ix_(ri, ci)].all():
                ready.append((row, col))
        return ready

    def translate_ready(self, mosaic: np.ndarray, *, max_tiles: int | None = None
                        ) -> list[tuple[int, int, int, int]]:
        """Translate ready tiles; returns their written boxes ``(row0, row1, col0, col1)``."""
        _validate(self.model, mosaic)
        tiles = self.ready_tiles()[:max_tiles]
        self.runner.run(mosaic, tiles, self._write)
        self.pending.difference_update(tiles)
        self.done.extend(tiles)
        h, w = self.shape
        t = self.runner.tile
        return [(r, min(r + t, h), c, min(c + t, w)) for r, c in tiles]

    def finish(self, mosaic: np.ndarray) -> TranslationResult:
        """Translate whatever is left (the scan is over: everything is final)."""
        started = time.perf_counter()
        self.acquired[:] = True
        self.translate_ready(mosaic)
        return TranslationResult(self.out, self.risk_out, len(self.done),
                                 time.perf_counter() - started)

    @property
    def complete(self) -> bool:
        return not self.pending

