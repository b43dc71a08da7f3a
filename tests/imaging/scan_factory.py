"""Seeded synthetic scans with known truth for the stitching tests and bench.

An IC-like scene (Manhattan rectangles and lines on a substrate, slightly blurred) is cut into
frames at known sub-pixel positions on a grid, each seen through a circular field of view with
radial vignetting and Poisson noise; the stage reports the nominal grid positions while the
true positions carry uniform errors of up to ``stage_error`` × step per axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class SyntheticScan:
    frames: list            # N × (H, W) uint16
    nominal_xy_nm: np.ndarray  # (N, 2) float, (x, y) stage positions of each frame's top-left pixel
    true_xy_px: np.ndarray  # (N, 2) float, (x, y) true top-left positions in scene pixels
    pixel_size_nm: float
    fov_mask: np.ndarray    # (H, W) bool
    flat: np.ndarray        # (H, W) float32 true vignetting (mean 1 over the mask)
    scene: np.ndarray       # (rows, cols) float32 in [0, 1]
    step_px: float
    grid: tuple


def ic_scene(shape: tuple[int, int], *, rng: np.random.Generator, density: float = 1.0) -> np.ndarray:
    """(rows, cols) float32 in [0, 1]: substrate at 0.25 with wires/pads at 0.4–0.9, blurred σ=1.2."""
    h, w = shape
    scene = np.full(shape, 0.25, np.float32)
    for _ in range(int(density * h * w / 900)):
        grey = rng.uniform(0.4, 0.9)
        if rng.random() < 0.5:  # horizontal or vertical wire
            length, width = rng.integers(10, 120), rng.integers(2, 9)
            dy, dx = (width, length) if rng.random() < 0.5 else (length, width)
        else:  # pad / via
            dy, dx = rng.integers(3, 16, size=2)
        y, x = rng.integers(0, h), rng.integers(0, w)
        scene[y:y + dy, x:x + dx] = grey
    return ndimage.gaussian_filter(scene, 1.2)


def circular_mask(frame_px: int, *, radius_fraction: float = 0.5) -> np.ndarray:
    yy, xx = np.mgrid[:frame_px, :frame_px]
    c = (frame_px - 1) / 2
    return (yy - c) ** 2 + (xx - c) ** 2 <= (radius_fraction * frame_px) ** 2


def radial_flat(frame_px: int, *, vignetting: float, mask: np.ndarray) -> np.ndarray:
    yy, xx = np.mgrid[:frame_px, :frame_px]
    c = (frame_px - 1) / 2
    r2 = ((yy - c) ** 2 + (xx - c) ** 2) / (frame_px / 2) ** 2
    flat = (1.0 - vignetting * r2).astype(np.float32)
    return flat / flat[mask].mean()


def synthetic_scan(
    *,
    grid: tuple[int, int] = (3, 3),
    frame_px: int = 128,
    overlap: float = 0.3,
    stage_error: float = 0.1,
    vignetting: float = 0.35,
    photons: float = 3000.0,
    pixel_size_nm: float = 40.0,
    circular: bool = True,
    seed: int = 0,
) -> SyntheticScan:
    """Cut a (rows, cols) grid of frames from a random IC-like scene; see the module docstring."""
    rng = np.random.default_rng(seed)
    rows, cols = grid
    step = frame_px * (1.0 - overlap)
    margin = int(np.ceil(stage_error * step)) + 8
    scene_shape = (int(np.ceil(step * (rows - 1))) + frame_px + 2 * margin,
                   int(np.ceil(step * (cols - 1))) + frame_px + 2 * margin)
    scene = ic_scene(scene_shape, rng=rng)
    mask = circular_mask(frame_px) if circular else np.ones((frame_px, frame_px), bool)
    flat = radial_flat(frame_px, vignetting=vignetting, mask=mask)
    nominal, true, frames = [], [], []
    yy, xx = np.mgrid[:frame_px, :frame_px].astype(np.float64)
    for r in range(rows):
        for c in range(cols):
            nom = np.array([c * step, r * step])
            err = rng.uniform(-stage_error * step, stage_error * step, size=2)
            pos = nom + err + margin
            view = ndimage.map_coordinates(scene, [yy + pos[1], xx + pos[0]], order=3, mode="nearest")
            counts = rng.poisson(np.clip(view * flat, 0, None) * photons)
            frame = np.where(mask, np.clip(counts * (40000.0 / photons), 0, 65535), 0).astype(np.uint16)
            frames.append(frame)
            nominal.append(nom * pixel_size_nm)
            true.append(pos)
    return SyntheticScan(frames=frames, nominal_xy_nm=np.array(nominal), true_xy_px=np.array(true),
                         pixel_size_nm=pixel_size_nm, fov_mask=mask, flat=flat, scene=scene,
                         step_px=step, grid=grid)


def position_errors(found_xy_px: np.ndarray, true_xy_px: np.ndarray, *, exclude=()) -> np.ndarray:
    """Per-frame Euclidean error (px) after removing the best common translation."""
    keep = np.setdiff1d(np.arange(len(true_xy_px)), np.asarray(exclude, int))
    d = np.asarray(found_xy_px, float) - np.asarray(true_xy_px, float)
    d = d - d[keep].mean(0)
    return np.hypot(d[:, 0], d[:, 1])


def shading_left(mosaic_image: np.ndarray, scan: SyntheticScan, frame0_xy_px, *, block_px: int = 15) -> float:
    """How uneven a mosaic's brightness is against the scene it shows: the relative spread of
    mosaic / scene over ``block_px`` blocks wholly inside what the frames cover (0 for no shading
    left). ``frame0_xy_px``: where the mosaic put frame 0's top-left pixel."""
    import cv2

    # the scene resampled where the mosaic shows it, to the fraction of a pixel: rounded, half a
    # pixel off would count the edges' mismatch as shading
    ox, oy = np.asarray(frame0_xy_px, float) - scan.true_xy_px[0]  # mosaic (x, y) of scene (0, 0)
    image = mosaic_image.astype(np.float64) / 65535
    scene = cv2.warpAffine(scan.scene.astype(np.float64), np.array([[1.0, 0.0, ox], [0.0, 1.0, oy]]),
                           (image.shape[1], image.shape[0]), flags=cv2.INTER_CUBIC, borderValue=0.0)
    covered = ((image > 0) & (scene > 0)).astype(np.float64)
    blocks = [cv2.blur(a, (block_px, block_px)) for a in (image * covered, scene * covered, covered)]
    whole = blocks[2] > 0.99
    ratio = blocks[0][whole] / blocks[1][whole]
    return float(ratio.std() / ratio.mean())
