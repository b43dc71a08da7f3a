"""The paper's augmentations, applied identically to both members of a pair when asked.

Flips (horizontal, vertical), rotations by 30°, 45°, 60° and 90° (non-right angles either crop
the largest valid centred square and resize it back, or fill the corners by reflection), and
scaling. Images are (H, W) float32 [0, 1]; a seeded ``numpy.random.Generator`` decides.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["flip", "rotate", "scale", "Augmentation", "random_augmentation", "apply_augmentation", "augment_pair"]

ANGLES_DEG = (30, 45, 60, 90)


def flip(image: np.ndarray, *, horizontal: bool = False, vertical: bool = False) -> np.ndarray:
    """Mirror left↔right (``horizontal``) and/or top↔bottom (``vertical``)."""
    out = image
    if horizontal:
        out = out[:, ::-1]
    if vertical:
        out = out[::-1, :]
    return np.ascontiguousarray(out)


def rotate(image: np.ndarray, angle_deg: float, *, mode: str = "crop") -> np.ndarray:
    """Rotate counter-clockwise (as displayed) about the centre; output has the input's shape.

    mode : "crop" keeps the largest centred axis-aligned rectangle free of empty corners and
    resizes it back to the input size; "reflect" fills the corners by mirror reflection.
    Multiples of 90° are exact (no interpolation).
    """
    if mode not in ("crop", "reflect"):
        raise ValueError(f"mode must be 'crop' or 'reflect', got {mode!r}")
    image = np.asarray(image, np.float32)
    h, w = image.shape[:2]
    if float(angle_deg) % 90 == 0:
        k = int(round(angle_deg / 90)) % 4
        out = np.rot90(image, k)
        if out.shape[:2] != (h, w):  # non-square under a quarter turn: keep the shape by a centred crop+resize
            side = min(h, w)
            out = cv2.resize(_centre_crop(out, side, side), (w, h), interpolation=cv2.INTER_LINEAR)
        return np.ascontiguousarray(out)
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle_deg, 1.0)
    if mode == "reflect":
        return cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    rotated = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    cw, ch = _largest_inscribed(w, h, np.deg2rad(angle_deg))
    return cv2.resize(_centre_crop(rotated, ch, cw), (w, h), interpolation=cv2.INTER_LINEAR)


def _largest_inscribed(w: int, h: int, angle: float) -> tuple[int, int]:
    """Largest axis-aligned rectangle inside a w×h rectangle rotated by ``angle`` (same centre)."""
    sin, cos = abs(np.sin(angle)), abs(np.cos(angle))
    long_side, short_side = max(w, h), min(w, h)
    if short_side <= 2 * sin * cos * long_side or abs(sin - cos) < 1e-10:
        x = 0.5 * short_side
        wr, hr = (x / sin, x / cos) if w >= h else (x / cos, x / sin)
    else:
        cos2 = cos * cos - sin * sin
        wr, hr = (w * cos - h * sin) / cos2, (h * cos - w * sin) / cos2
    # one pixel margin: interpolation at the boundary mixes in the empty corner
    return max(1, int(np.floor(wr)) - 2), max(1, int(np.floor(hr)) - 2)


def _centre_crop(image: np.ndarray, rows: int, cols: int) -> np.ndarray:
    h, w = image.shape[:2]
    y0, x0 = (h - rows) // 2, (w - cols) // 2
    return image[y0 : y0 + rows, x0 : x0 + cols]


def scale(image: np.ndarray, factor: float) -> np.ndarray:
    """Zoom about the centre by ``factor`` (> 1 magnifies: centre crop then upsample; < 1 reflects)."""
    if not 0.25 <= factor <= 4:
        raise ValueError(f"scale factor must be in [0.25, 4], got {factor}")
    image = np.asarray(image, np.float32)
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), 0.0, factor)
    interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    return cv2.warpAffine(image, matrix, (w, h), flags=interp, borderMode=cv2.BORDER_REFLECT_101)


@dataclass(frozen=True)
class Augmentation:
    """One drawn augmentation: flips, then rotation, then scaling."""

    flip_horizontal: bool = False
    flip_vertical: bool = False
    angle_deg: float = 0.0
    scale: float = 1.0
    rotate_mode: str = "crop"


def random_augmentation(rng: np.random.Generator, *, angles_deg=ANGLES_DEG, p_rotate: float = 0.5,
                        scale_range: tuple[float, float] = (0.9, 1.1), rotate_mode: str = "crop") -> Augmentation:
    """Draw flips (each p = 0.5), a rotation from ``angles_deg`` (p = ``p_rotate``, sign random), a scale."""
    angle = 0.0
    if angles_deg and rng.random() < p_rotate:
        angle = float(rng.choice(angles_deg)) * (1 if rng.random() < 0.5 else -1)
    lo, hi = scale_range
    if not 0.25 <= lo <= hi <= 4:
        raise ValueError(f"scale_range must satisfy 0.25 <= low <= high <= 4, got {scale_range}")
    return Augmentation(flip_horizontal=bool(rng.random() < 0.5), flip_vertical=bool(rng.random() < 0.5),
                        angle_deg=angle, scale=float(rng.uniform(lo, hi)), rotate_mode=rotate_mode)


def apply_augmentation(image: np.ndarray, aug: Augmentation) -> np.ndarray:
    out = flip(np.asarray(image, np.float32), horizontal=aug.flip_horizontal, vertical=aug.flip_vertical)
    if aug.angle_deg:
        out = rotate(out, aug.angle_deg, mode=aug.rotate_mode)
    if aug.scale != 1.0:
        out = scale(out, aug.scale)
    return np.clip(out, 0, 1).astype(np.float32)


def augment_pair(lr: np.ndarray, hr: np.ndarray, rng: np.random.Generator, *, same: bool = True,
                 **options) -> tuple[np.ndarray, np.ndarray, Augmentation]:
    """Augment an LR/HR pair; with ``same`` both get the identical transform (registered pairs).

    Returns (lr', hr', the augmentation applied to LR). ``options`` go to ``random_augmentation``.
    """
    aug = random_augmentation(rng, **options)
    hr_aug = aug if same else random_augmentation(rng, **options)
    return apply_augmentation(lr, aug), apply_augmentation(hr, hr_aug), aug
