"""Seeded IC-like synthetic images with known truth, for imaging tests and benches.

One Manhattan layout (0 substrate, 1 metal, 2 poly, plus vias) is drawn in physical units and
rendered twice: as an optical mosaic (blurred, metal bright, mild vignetting) and as an SEM
image (finer pixels, rotated and shifted, edge-bright secondary-electron contrast, optionally
inverted material contrast, noise, charging ramp). The true ``sem_to_mosaic`` 3×3 matrix
(SEM pixel (x, y) → mosaic pixel (x, y), pixel centres at integer coordinates) comes with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class SyntheticPair:
    mosaic: np.ndarray  # (H, W) float32 [0, 1], optical rendering
    sem: np.ndarray  # (h, w) float32 [0, 1], SEM rendering
    mosaic_px_nm: float
    sem_px_nm: float  # true SEM pixel size
    sem_to_mosaic: np.ndarray  # (3, 3) float64, true transform

    @property
    def mosaic_to_sem(self) -> np.ndarray:
        return np.linalg.inv(self.sem_to_mosaic)


def ic_layout(shape_rc: tuple[int, int], *, feature_px: float, rng: np.random.Generator) -> np.ndarray:
    """Label image (rows, cols) uint8 in {0, 1, 2}; ``feature_px`` = pixels per layout unit."""
    rows, cols = shape_rc
    labels = np.zeros((rows, cols), np.uint8)
    n = int(rows * cols / (2500.0 * feature_px**2)) + 8
    for _ in range(n):
        label = 1 if rng.random() < 0.6 else 2
        width = rng.uniform(2.0, 7.0) * feature_px
        length = rng.uniform(10.0, 120.0) * feature_px
        x0, y0 = rng.uniform(-20 * feature_px, cols), rng.uniform(-20 * feature_px, rows)
        if rng.random() < 0.5:
            x1, y1 = x0 + length, y0 + width
        else:
            x1, y1 = x0 + width, y0 + length
        labels[max(0, int(y0)) : max(0, int(y1)), max(0, int(x0)) : max(0, int(x1))] = label
    # vias: small squares on metal, a distinct material (rendered like poly but small)
    for _ in range(n // 3):
        s = int(round(2.5 * feature_px))
        x, y = int(rng.uniform(0, cols - s)), int(rng.uniform(0, rows - s))
        labels[y : y + s, x : x + s] = 2
    return labels


def render_optical(labels: np.ndarray, *, downsample: float, rng: np.random.Generator,
                   vignetting: float = 0.1, noise: float = 5 / 255) -> np.ndarray:
    lut = np.array([60, 200, 120], np.float32) / 255.0
    img = lut[labels]
    rows, cols = labels.shape
    out_shape = (int(round(cols / downsample)), int(round(rows / downsample)))
    img = cv2.resize(img, out_shape, interpolation=cv2.INTER_AREA)
    img = cv2.GaussianBlur(img, (0, 0), 2.0)
    h, w = img.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
    img = img * (1 - vignetting * r2 / 2) + rng.normal(0, noise, img.shape).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32)


def render_sem(labels: np.ndarray, *, inverted: bool, rng: np.random.Generator,
               noise: float = 14 / 255) -> np.ndarray:
    lut = np.array([170, 60, 110] if inverted else [90, 110, 170], np.float32) / 255.0
    img = lut[labels]
    edges = cv2.morphologyEx(labels, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    img = img + 90 / 255.0 * cv2.GaussianBlur(edges.astype(np.float32), (0, 0), 1.0)
    img = cv2.GaussianBlur(img, (0, 0), 0.7)
    h, w = img.shape
    img = img + np.linspace(0, 25 / 255.0, w, dtype=np.float32)[None, :]
    img = img + rng.normal(0, noise, img.shape).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32)


def make_pair(*, seed: int, mosaic_size: int = 256, sem_fraction: float = 0.6,
              ratio: float = 2.0, rotation_deg: float = 2.0, inverted: bool = False,
              shift_mosaic_px: tuple[float, float] = (0.0, 0.0),
              mosaic_px_nm: float = 100.0) -> SyntheticPair:
    """A mosaic (mosaic_size²) and an SEM image covering ``sem_fraction`` of it, rotated and shifted.

    ``ratio`` = mosaic pixel size / SEM pixel size (SEM pixels are finer).
    """
    rng = np.random.default_rng(seed)
    world_n = int(round(mosaic_size * ratio))
    labels = ic_layout((world_n, world_n), feature_px=ratio, rng=rng)
    mosaic = render_optical(labels, downsample=ratio, rng=rng)
    # world px w ↔ mosaic px m: m = (w + 0.5)/ratio − 0.5 (INTER_AREA centre convention)
    world_to_mosaic = np.array([[1 / ratio, 0, 0.5 / ratio - 0.5], [0, 1 / ratio, 0.5 / ratio - 0.5],
                                [0, 0, 1]])
    sem_n = int(round(world_n * sem_fraction))
    theta = np.deg2rad(rotation_deg)
    c, s = np.cos(theta), np.sin(theta)
    centre_world = np.array([world_n / 2 + shift_mosaic_px[0] * ratio,
                             world_n / 2 + shift_mosaic_px[1] * ratio])
    centre_sem = np.array([(sem_n - 1) / 2, (sem_n - 1) / 2])
    rot = np.array([[c, -s], [s, c]])
    sem_to_world = np.eye(3)
    sem_to_world[:2, :2] = rot
    sem_to_world[:2, 2] = centre_world - rot @ centre_sem
    sem_labels = cv2.warpAffine(labels, sem_to_world[:2], (sem_n, sem_n),
                                flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP)
    sem = render_sem(sem_labels, inverted=inverted, rng=rng)
    return SyntheticPair(mosaic=mosaic, sem=sem, mosaic_px_nm=mosaic_px_nm,
                         sem_px_nm=mosaic_px_nm / ratio, sem_to_mosaic=world_to_mosaic @ sem_to_world)


def registration_error_px(true_sem_to_mosaic: np.ndarray, est_mosaic_to_sem: np.ndarray,
                          sem_shape_rc: tuple[int, int], n: int = 9) -> float:
    """Mean distance in mosaic px between true and estimated positions of an n×n grid of SEM points."""
    h, w = sem_shape_rc
    xs, ys = np.meshgrid(np.linspace(0, w - 1, n), np.linspace(0, h - 1, n))
    pts = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    true = true_sem_to_mosaic @ pts
    est = np.linalg.inv(est_mosaic_to_sem) @ pts
    true, est = true[:2] / true[2], est[:2] / est[2]
    return float(np.mean(np.hypot(*(true - est))))


def add_data_bar(image: np.ndarray, *, rows: int, bright: bool = False, seed: int = 0) -> np.ndarray:
    """Append an instrument-style data bar (constant background, text-like marks) below ``image``."""
    rng = np.random.default_rng(seed)
    h, w = image.shape
    bg, fg = (0.95, 0.05) if bright else (0.0, 1.0)
    bar = np.full((rows, w), bg, np.float32)
    bar[1, :] = fg  # separator line
    for _ in range(max(3, w // 40)):  # "characters"
        x, y = int(rng.uniform(0, w - 8)), int(rng.uniform(3, max(4, rows - 8)))
        bar[y : y + 6, x : x + 1 + int(rng.integers(1, 5))] = fg
    return np.concatenate([image.astype(np.float32), bar], axis=0)
