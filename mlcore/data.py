"""LR/HR pair data: loading, 16-bit normalisation, pre-processing/augmentation hooks, batches.

Domain A is the SSUM (optical, LR) image, domain B the SEM (HR) image.  Raw images stay uint16
(or float) until :class:`PairDataset` normalises them once, with percentiles fitted per domain
(:class:`Normalization`, saved in every checkpoint).  Batches are drawn *statelessly* from
``(seed, step, rank)``, so a resumed run sees exactly the batches an uninterrupted run would
have seen, without saving any loader state.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data.distributed import DistributedSampler

from mlcore.config import DataConfig
from mlcore.errors import InputImageError

__all__ = [
    "Normalization",
    "fit_normalization",
    "PairSet",
    "load_pair_folder",
    "read_image",
    "synthetic_pairs",
    "PairDataset",
    "PairTransform",
    "to_network",
    "from_network",
]

#: ``transform(lr, hr, rng) -> (lr, hr)`` on float32 [0, 1] images ``(H, W[, C])``; it must apply
#: the same geometric change to both (flips, rotations, scaling).  ``imaging.augment`` supplies it.
PairTransform = Callable[[np.ndarray, np.ndarray, np.random.Generator],
                         tuple[np.ndarray, np.ndarray]]
#: ``preprocess(image) -> image`` on float32 [0, 1]; e.g. ``imaging.preprocess`` denoise/CLAHE.
Preprocess = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Normalization:
    """Map raw intensities ``[low, high]`` linearly onto [0, 1] (clipped), and back."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.high > self.low):
            raise InputImageError(f"normalisation needs finite low < high, got "
                                  f"({self.low}, {self.high}): is the image blank?")

    def to_unit(self, image: np.ndarray) -> np.ndarray:
        """raw (any dtype) → float32 [0, 1]."""
        out = (np.asarray(image, dtype=np.float32) - np.float32(self.low))
        out *= np.float32(1.0 / (self.high - self.low))
        return np.clip(out, 0.0, 1.0, out=out)

    def from_unit(self, unit: np.ndarray) -> np.ndarray:
        """float [0, 1] → float32 raw units."""
        return np.asarray(unit, dtype=np.float32) * np.float32(self.high - self.low) + np.float32(
            self.low)

    def to_dict(self) -> dict[str, float]:
        return {"low": float(self.low), "high": float(self.high)}

    @classmethod
    def from_dict(cls, raw: dict[str, float]) -> Normalization:
        return cls(float(raw["low"]), float(raw["high"]))


def fit_normalization(images: Sequence[np.ndarray], *, percentiles: tuple[float, float] = (0.1, 99.9),
                      max_samples: int = 2_000_000, seed: int = 0) -> Normalization:
    """Percentile statistics over a set of raw images (subsampled to ``max_samples`` pixels)."""
    if not images:
        raise InputImageError("cannot fit a normalisation to an empty image list")
    rng = np.random.default_rng(seed)
    per_image = max(1, max_samples // len(images))
    samples = []
    for img in images:
        flat = np.asarray(img).reshape(-1)
        if flat.size > per_image:
            flat = flat[rng.integers(0, flat.size, per_image)]
        samples.append(flat.astype(np.float64))
    values = np.concatenate(samples)
    if not np.all(np.isfinite(values)):
        raise InputImageError("images contain NaN or infinite values")
    low, high = np.percentile(values, percentiles)
    if high <= low:  # a constant image: widen so it maps to a mid grey rather than failing
        high = low + 1.0
    return Normalization(float(low), float(high))


@dataclass(frozen=True)
class PairSet:
    """Raw LR/HR pairs (same physical pixel size); arrays ``(H, W)`` or ``(H, W, C)``."""

    lr: tuple[np.ndarray, ...]
    hr: tuple[np.ndarray, ...]
    names: tuple[str, ...]
    pixel_size_nm: float | None = None

    def __post_init__(self) -> None:
        if not (len(self.lr) == len(self.hr) == len(self.names)):
            raise InputImageError("lr, hr and names must have the same length")
        if not self.lr:
            raise InputImageError("the pair set is empty")
        for name, a, b in zip(self.names, self.lr, self.hr, strict=False):
            if _channels(a) != _channels(b):
                raise InputImageError(f"pair {name}: LR has {_channels(a)} channel(s), HR "
                                      f"{_channels(b)}")

    @property
    def channels(self) -> int:
        return _channels(self.lr[0])

    def split(self, test_fraction: float = 0.2, *, seed: int = 0) -> tuple[PairSet, PairSet]:
        """Seeded train/test split by pair (at least one pair in each when possible)."""
        order = np.random.default_rng(seed).permutation(len(self.lr))
        n_test = min(len(order) - 1, max(1, round(test_fraction * len(order))))
        parts = order[n_test:], order[:n_test]
        return tuple(PairSet(tuple(self.lr[i] for i in idx), tuple(self.hr[i] for i in idx),
                             tuple(self.names[i] for i in idx), self.pixel_size_nm)
                     for idx in parts)  # type: ignore[return-value]


def _channels(img: np.ndarray) -> int:
    return 1 if img.ndim == 2 else int(img.shape[-1])


IMAGE_SUFFIXES = (".png", ".tif", ".tiff")
_DIR_NAMES = (("lr", "hr"), ("ssum", "sem"), ("a", "b"))


def read_image(path: str | Path) -> np.ndarray:
    """PNG/TIFF → array ``(H, W)`` or ``(H, W, C)`` in its stored dtype (uint16 kept)."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile
            img = tifffile.imread(path)
        else:
            import cv2
            img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if img is None:
                raise OSError("unreadable")
            if img.ndim == 3:
                img = img[..., ::-1].copy()  # OpenCV reads BGR
    except Exception as exc:  # noqa: BLE001 - any decoder failure is the same user error
        raise InputImageError(f"cannot read image {path}: {exc}") from exc
    img = np.squeeze(img)
    if img.ndim not in (2, 3):
        raise InputImageError(f"{path}: expected a 2-D image, got shape {img.shape}")
    return img


def _load_manifest(root: Path, split: str | None) -> PairSet | None:
    """Pairs listed in the simulator's ``manifest.json`` (``pairs[].lr_path/hr_path/split``)."""
    manifest = root / "manifest.json"
    if not manifest.is_file():
        return None
    raw = json.loads(manifest.read_text())
    records = [p for p in raw.get("pairs", []) if split is None or p.get("split") == split]
    if not records:
        return None
    lr = tuple(read_image(root / p["lr_path"]) for p in records)
    hr = tuple(read_image(root / p["hr_path"]) for p in records)
    names = tuple(Path(p["lr_path"]).stem for p in records)
    return PairSet(lr, hr, names, raw.get("pair_pixel_size_nm"))


def load_pair_folder(path: str | Path, *, split: str | None = None) -> PairSet:
    """Pairs from a folder in one of four layouts.

    * a ``manifest.json`` listing ``pairs`` (``instruments.sim.write_dataset``); ``split``
      ('train' / 'test') selects a subset, None takes all;
    * ``lr/`` + ``hr/`` (or ``ssum/`` + ``sem/``, ``A/`` + ``B/``) with matching file names;
    * ``<name>_lr.tif`` + ``<name>_hr.tif`` side by side (also ``_ssum``/``_sem``,
      and prefixes ``lr_<name>`` + ``hr_<name>``);
    * ``*.npz`` files holding arrays ``lr`` and ``hr`` (``(H, W)`` or a stack ``(N, H, W)``).

    An optional ``pairs.json`` / ``meta.json`` with ``pixel_size_nm`` sets the pixel size.
    """
    root = Path(path)
    if not root.is_dir():
        raise InputImageError(f"pair folder {root} does not exist")
    from_manifest = _load_manifest(root, split)
    if from_manifest is not None:
        return from_manifest
    lr, hr, names = [], [], []
    sub = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    for a_name, b_name in _DIR_NAMES:
        if a_name in sub and b_name in sub:
            for f in sorted(sub[a_name].iterdir()):
                if f.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                partner = next((sub[b_name] / (f.stem + s) for s in (f.suffix, *IMAGE_SUFFIXES)
                                if (sub[b_name] / (f.stem + s)).exists()), None)
                if partner is None:
                    raise InputImageError(f"{f.name} has no partner in {sub[b_name]}")
                lr.append(read_image(f))
                hr.append(read_image(partner))
                names.append(f.stem)
            break
    if not lr:
        for f in sorted(root.iterdir()):
            stem = f.stem.lower()
            for a_tag, b_tag in (("_lr", "_hr"), ("_ssum", "_sem")):
                if f.suffix.lower() in IMAGE_SUFFIXES and stem.endswith(a_tag):
                    base = f.stem[: -len(a_tag)]
                    partner = next((p for p in root.iterdir()
                                    if p.stem.lower() == (base + b_tag).lower()), None)
                    if partner is None:
                        raise InputImageError(f"{f.name} has no {b_tag} partner")
                    lr.append(read_image(f))
                    hr.append(read_image(partner))
                    names.append(base)
            if f.suffix.lower() in IMAGE_SUFFIXES and stem.startswith("lr_"):
                partner = next((p for p in root.iterdir()
                                if p.name.lower() == "hr_" + f.name.lower()[3:]), None)
                if partner is None:
                    raise InputImageError(f"{f.name} has no hr_ partner")
                lr.append(read_image(f))
                hr.append(read_image(partner))
                names.append(f.stem[3:])
    if not lr:
        for f in sorted(root.glob("*.npz")):
            with np.load(f) as z:
                keys = ("lr", "hr") if "lr" in z else ("ssum", "sem")
                if keys[0] not in z or keys[1] not in z:
                    continue
                a, b = z[keys[0]], z[keys[1]]
            if a.ndim == 2:
                a, b = a[None], b[None]
            for i in range(a.shape[0]):
                lr.append(a[i])
                hr.append(b[i])
                names.append(f"{f.stem}_{i}")
    if not lr:
        raise InputImageError(f"no LR/HR pairs found in {root} (expected lr/ + hr/, "
                              "*_lr.tif + *_hr.tif, or *.npz with lr/hr arrays)")
    pixel = None
    for meta_name in ("pairs.json", "meta.json"):
        if (root / meta_name).exists():
            pixel = json.loads((root / meta_name).read_text()).get("pixel_size_nm", pixel)
    return PairSet(tuple(lr), tuple(hr), tuple(names), pixel)


def synthetic_pairs(n: int, *, size: int = 64, seed: int = 0, blur_px: float = 2.0,
                    noise: float = 0.02) -> PairSet:
    """Seeded IC-like test pairs: HR = sharp rectangles with bright edges (SEM edge effect),
    LR = the plain rectangles blurred by a Gaussian of σ ``blur_px`` plus noise.  uint16."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    lr, hr = [], []
    for _ in range(n):
        layout = np.zeros((size, size), np.float32)
        for _ in range(rng.integers(3, 7)):
            r0, c0 = rng.integers(0, size - 6, 2)
            h, w = rng.integers(3, max(4, size // 3), 2)
            layout[r0:r0 + h, c0:c0 + w] = rng.uniform(0.5, 1.0)
        edges = ndimage.morphological_gradient(layout, size=3)
        sem = np.clip(0.15 + 0.55 * layout + 0.6 * edges, 0, 1)
        ssum = ndimage.gaussian_filter(0.25 + 0.5 * layout, blur_px)
        ssum = np.clip(ssum + rng.normal(0, noise, ssum.shape), 0, 1)
        lr.append((ssum * 65535).astype(np.uint16))
        hr.append((sem * 65535).astype(np.uint16))
    return PairSet(tuple(lr), tuple(hr), tuple(f"synthetic_{i}" for i in range(n)), 50.0)


def to_network(unit: np.ndarray) -> torch.Tensor:
    """float [0, 1] ``(H, W[, C])`` → tensor ``(C, H, W)`` in [-1, 1]."""
    arr = unit[..., None] if unit.ndim == 2 else unit
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1), np.float32)) * 2 - 1


def from_network(t: torch.Tensor) -> np.ndarray:
    """tensor ``(C, H, W)`` in [-1, 1] → float32 [0, 1] ``(H, W)`` (1 ch) or ``(H, W, C)``."""
    arr = ((t.detach().float().cpu().clamp(-1, 1) + 1) / 2).numpy().transpose(1, 2, 0)
    return arr[..., 0] if arr.shape[-1] == 1 else arr


class PairDataset:
    """Normalised, resized pairs and a stateless batch sampler for training.

    Each raw image is normalised once (percentiles per domain unless ``norm_a``/``norm_b`` are
    given), pre-processed once, and resized by ``crop / source_crop`` (512 → 256 in the paper).
    :meth:`batch` then draws random crops; ``transform`` augments each pair identically.
    """

    def __init__(self, pairs: PairSet, *, data: DataConfig, norm_a: Normalization | None = None,
                 norm_b: Normalization | None = None, transform: PairTransform | None = None,
                 preprocess_a: Preprocess | None = None, preprocess_b: Preprocess | None = None,
                 seed: int = 0) -> None:
        import cv2

        self.data, self.transform, self.seed = data, transform, seed
        self.channels = pairs.channels
        self.pixel_size_nm = pairs.pixel_size_nm
        self.norm_a = norm_a or fit_normalization(pairs.lr, percentiles=data.percentiles)
        self.norm_b = norm_b or fit_normalization(pairs.hr, percentiles=data.percentiles)
        scale = data.crop / data.source_crop
        self.lr: list[np.ndarray] = []
        self.hr: list[np.ndarray] = []
        for name, a, b in zip(pairs.names, pairs.lr, pairs.hr, strict=False):
            for raw in (a, b):
                if np.issubdtype(raw.dtype, np.floating) and not np.all(np.isfinite(raw)):
                    raise InputImageError(f"pair {name} contains NaN or infinite values")
            ua, ub = self.norm_a.to_unit(a), self.norm_b.to_unit(b)
            if preprocess_a:
                ua = np.asarray(preprocess_a(ua), np.float32)
            if preprocess_b:
                ub = np.asarray(preprocess_b(ub), np.float32)
            if scale != 1.0:
                size = lambda im: (max(1, round(im.shape[1] * scale)),  # noqa: E731 (x, y)
                                   max(1, round(im.shape[0] * scale)))
                ua = cv2.resize(ua, size(ua), interpolation=cv2.INTER_AREA)
                ub = cv2.resize(ub, size(ub), interpolation=cv2.INTER_AREA)
            for im in (ua, ub):
                if min(im.shape[:2]) < data.crop:
                    raise InputImageError(f"pair {name} is {im.shape[:2]} px after resizing, "
                                          f"smaller than the {data.crop} px crop")
            self.lr.append(ua)
            self.hr.append(ub)

    def __len__(self) -> int:
        return len(self.lr)

    def steps_per_epoch(self, *, batch_size: int, world_size: int = 1) -> int:
        return max(1, math.ceil(math.ceil(len(self) / world_size) / batch_size))

    def _indices(self, epoch: int, rank: int, world_size: int) -> list[int]:
        sampler = DistributedSampler(range(len(self)), num_replicas=world_size, rank=rank,
                                     shuffle=True, seed=self.seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    def batch(self, step: int, *, batch_size: int, rank: int = 0, world_size: int = 1
              ) -> dict[str, torch.Tensor]:
        """Batch for global ``step`` on ``rank``: ``a`` (SSUM), ``b_pair`` (its SEM partner),
        ``b`` (SEM: an unaligned random one if ``data.unaligned`` else the partner), each
        ``(B, C, crop, crop)`` float32 in [-1, 1]."""
        spe = self.steps_per_epoch(batch_size=batch_size, world_size=world_size)
        epoch, k = divmod(step, spe)
        order = self._indices(epoch, rank, world_size)
        picks = [order[(k * batch_size + i) % len(order)] for i in range(batch_size)]
        rng = np.random.default_rng([self.seed, step, rank])
        out: dict[str, list[torch.Tensor]] = {"a": [], "b_pair": [], "b": []}
        for idx in picks:
            a, b = self._crop_pair(idx, rng)
            out["a"].append(to_network(a))
            out["b_pair"].append(to_network(b))
            if self.data.unaligned:
                other = int(rng.integers(len(self)))
                _, b = self._crop_pair(other, rng)
                out["b"].append(to_network(b))
            else:
                out["b"].append(out["b_pair"][-1])
        return {key: torch.stack(val) for key, val in out.items()}

    def _crop_pair(self, idx: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.lr[idx], self.hr[idx]
        if self.transform is not None:
            a, b = self.transform(a, b, rng)
        c = self.data.crop
        h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
        if h < c or w < c:
            raise InputImageError(f"transform returned {h}×{w} px, smaller than the {c} px crop")
        row, col = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
        return a[row:row + c, col:col + c], b[row:row + c, col:col + c]

    def eval_pairs(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The normalised, resized (LR, HR) float32 [0, 1] pairs, uncropped."""
        return list(zip(self.lr, self.hr, strict=False))
