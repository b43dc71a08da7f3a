"""Synthetic data sets and the in-memory helpers the stitching, registration and ML code call.

* :func:`simulate_scan` — a serpentine raster of SSUM frames with nominal and true positions.
* :func:`simulate_sem` — one SEM image with its true transform to the chip.
* :func:`simulate_pair` — one aligned LR (SSUM) / HR (SEM) pair at a common pixel size.
* :func:`write_dataset` — all of the above on disk with a JSON manifest (presets ``tiny``, ``paper``).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..focus import fuse_extended_depth
from . import sem as sem_mod
from .blur import MAX_SIGMA_PX, variable_gaussian_blur
from .camera import CameraModel, expose
from .chip import Chip, Layout, rasterize
from .exceptions import SimParameterError, check_range
from .optics import SSUMOptics
from .world import PIEZO_TRAVEL_NM, SimWorld, StageErrors

MANIFEST_NAME = "manifest.json"


# ---------------------------------------------------------------- in memory


@dataclass(frozen=True)
class ScanResult:
    """A simulated scan. ``frames`` (N, rows, cols) uint16; ``nominal_xy_nm`` / ``true_xy_nm``
    (N, 2) piezo positions (controller reading / truth, scanner axes, nm); ``frame_to_chip``
    (N, 3, 3) maps frame pixel (x = col, y = row) → chip nm; ``grid_index`` (N, 2) (row, col)
    in the raster; ``pixel_size_nm`` sample nm per frame pixel; ``fov_mask`` (rows, cols) bool."""

    frames: np.ndarray
    nominal_xy_nm: np.ndarray
    true_xy_nm: np.ndarray
    frame_to_chip: np.ndarray
    grid_index: np.ndarray
    pixel_size_nm: float
    fov_mask: np.ndarray
    rotation_deg: float
    step_nm: float


def default_step_nm(optics: SSUMOptics, *, overlap: float = 0.3) -> float:
    """Raster step: the square inscribed in the FOV circle, less the overlap fraction."""
    check_range("overlap", overlap, low=0, high=0.9)
    return 2 * optics.fov_radius_nm() / math.sqrt(2) * (1 - overlap)


def serpentine(grid: tuple[int, int]) -> list[tuple[int, int]]:
    """(row, col) visiting order: left→right on even rows, right→left on odd ones."""
    rows, cols = grid
    return [(r, c if r % 2 == 0 else cols - 1 - c) for r in range(rows) for c in range(cols)]


def simulate_scan(*, seed: int = 0, grid: tuple[int, int] = (3, 3), start_nm: tuple[float, float] = (40_000, 40_000),
                  step_nm: float | None = None, overlap: float = 0.3, roi: tuple[int, int, int, int] | None = None,
                  binning: int = 1, exposure_s: float = 0.01, world: SimWorld | None = None,
                  noise: bool = True, stack_depths_nm: Sequence[float] | None = None) -> ScanResult:
    """Raster the piezo over ``grid = (rows, cols)`` points from ``start_nm`` (piezo x, y),
    approaching to contact and focusing on the virtual image at each point.

    ``stack_depths_nm``: take a Z-stack at each point instead, one plane focused on features at
    each of these depths below the contact surface, fused to extended depth of field as the scan
    engine does. Negative depths are above it: the sphere rests on the tallest feature under it,
    but away from its axis its surface curves up, so a feature at the field's rim may stand up to
    the sag there (r_FOV² / D, 890 nm by default) above the contact surface. Depths below the
    substrate or above that sag are skipped."""
    world = world or SimWorld(seed=seed)
    for name, n in zip(("grid rows", "grid cols"), grid, strict=True):
        check_range(name, n, low=1, high=1_000)
    step = step_nm if step_nm is not None else default_step_nm(world.optics, overlap=overlap)
    check_range("step_nm", step, low=1, high=PIEZO_TRAVEL_NM[0], unit="nm")
    last = (start_nm[0] + step * (grid[1] - 1), start_nm[1] + step * (grid[0] - 1))
    for axis, a, b in (("x", start_nm[0], last[0]), ("y", start_nm[1], last[1])):
        if a < 0 or b > PIEZO_TRAVEL_NM[0]:
            raise SimParameterError(f"scan {axis} from {a:g} to {b:g} nm must stay within the piezo travel "
                                    f"[0, {PIEZO_TRAVEL_NM[0]:g}] nm")
    roi = roi or world.default_roi
    frames, nominal, true, to_chip, index = [], [], [], [], []
    rim_sag = world.optics.rim_sag_nm()  # how high above the contact surface a feature in the field may stand
    for r, c in serpentine(grid):
        x, y = start_nm[0] + c * step, start_nm[1] + r * step
        world.set_piezo_nm(x, y, 0.0)
        world.set_piezo_nm(x, y, min(max(world.contact_z_nm(), 0.0), PIEZO_TRAVEL_NM[2]))
        planes = []
        for depth in [d for d in stack_depths_nm or () if -rim_sag <= d <= world.contact_height_nm()] or [0.0]:
            world.set_focus_nm(world.virtual_image_focus_nm(feature_depth_nm=depth))
            planes.append(world.render_frame(exposure_s=exposure_s, roi=roi, binning=binning, noise=noise))
        frames.append(fuse_extended_depth(planes))
        nominal.append((x, y))
        true.append(world.piezo_true_nm()[:2])
        to_chip.append(world.frame_to_chip(roi, binning))
        index.append((r, c))
    return ScanResult(np.stack(frames), np.array(nominal, float), np.array(true, float), np.stack(to_chip),
                      np.array(index, int), world.pixel_size_nm * binning, world.fov_mask(roi, binning),
                      world.stage_errors.rotation_deg, float(step))


def simulate_sem(*, seed: int = 0, centre_xy_nm: tuple[float, float] | None = None, shape: tuple[int, int] = (512, 512),
                 pixel_size_nm: float = 20.0, rotation_deg: float = 1.0, settings: sem_mod.SEMSettings | None = None,
                 layout: Layout | None = None) -> sem_mod.SEMImage:
    """One SEM image of chip ``seed`` (default centre: the chip's centre). Its ``sem_to_chip``
    is the truth for registration; compose with a frame's ``frame_to_chip`` to get
    frame → SEM pixels."""
    layout = layout or Chip(seed=seed)
    if centre_xy_nm is None:
        bx0, by0, bx1, by1 = layout.bounds_nm
        centre_xy_nm = (0.5 * (bx0 + bx1), 0.5 * (by0 + by1))
    return sem_mod.simulate_sem_image(layout, centre_xy_nm=centre_xy_nm, shape=shape, pixel_size_nm=pixel_size_nm,
                                      rotation_deg=rotation_deg, settings=settings, seed=seed)


@dataclass(frozen=True)
class PairSample:
    """An aligned pair: ``lr`` (n, n) uint16 SSUM-like, ``hr`` (n, n) uint8 SEM, both at
    ``pixel_size_nm`` with pixel (x = col, y = row) → chip nm given by ``to_chip``."""

    lr: np.ndarray
    hr: np.ndarray
    pixel_size_nm: float
    to_chip: np.ndarray


def simulate_pair(layout: Layout, *, centre_xy_nm: tuple[float, float], size_px: int = 512, pixel_size_nm: float = 32.5,
                  optics: SSUMOptics | None = None, camera: CameraModel | None = None, exposure_s: float = 0.01,
                  seed: int = 0) -> PairSample:
    """LR: what a stitched SSUM mosaic shows there (centre-of-field PSF, focused on the highest
    surface, deeper features defocused, camera noise); HR: the SEM at the same pixels."""
    optics = optics or SSUMOptics()
    camera = camera or CameraModel()
    n = int(check_range("size_px", size_px, low=16, high=8192, unit="px"))
    p = check_range("pixel_size_nm", pixel_size_nm, low=1, high=1_000, unit="nm")
    origin = (centre_xy_nm[0] - n * p / 2, centre_xy_nm[1] - n * p / 2)
    maps = rasterize(layout, origin_nm=origin, shape=(n, n), pixel_size_nm=p)
    top = float(maps.height_nm.max())
    f, radius = optics.focal_length_nm, optics.radius_nm
    s = np.minimum(np.float32(radius + top) - maps.height_nm, np.float32(0.995 * f))
    mag = np.float32(f) / (np.float32(f) - s)
    v_focus = optics.image_distance_nm(radius)
    slope = np.float32(optics.defocus_slope)
    geo = slope * np.abs(s * mag - np.float32(v_focus)) / mag
    psf = np.float32(optics.psf_sigma_nm(0.0))
    chroma = slope * mag * np.float32(optics.chromatic_focus_rms_nm)
    sigma = np.sqrt(psf * psf + geo * geo + chroma * chroma) / np.float32(p)
    scene = variable_gaussian_blur(maps.reflectance, np.minimum(sigma, np.float32(MAX_SIGMA_PX)))
    sensor_px = optics.sample_pixel_nm(camera.pixel_pitch_nm)
    rate = scene * np.float32(camera.photon_flux_per_s * camera.quantum_efficiency * optics.fresnel_transmission
                              * (p / sensor_px) ** 2)
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 0x1A7])
    lr = expose(rate, camera=camera, exposure_s=exposure_s * (sensor_px / p) ** 2, rng=rng, noise_seed=seed)
    settings = sem_mod.SEMSettings(data_bar=False)
    hr = sem_mod.simulate_sem_image(layout, centre_xy_nm=centre_xy_nm, shape=(n, n), pixel_size_nm=p,
                                    settings=settings, seed=seed)
    return PairSample(lr, hr.image, p, hr.sem_to_chip)


# ---------------------------------------------------------------- on disk


@dataclass(frozen=True)
class Preset:
    chip_size_nm: tuple[float, float]
    scan_grid: tuple[int, int]
    scan_start_nm: tuple[float, float]
    roi_size: int
    binning: int
    sem_shapes: tuple[tuple[int, int], ...]
    sem_pixel_nm: tuple[float, ...]
    pair_count: int
    pair_size_px: int
    pair_pixel_nm: float = 32.5
    test_fraction: float = 0.1


PRESETS = {
    "tiny": Preset((200_000, 200_000), (3, 3), (40_000, 40_000), 512, 2, ((256, 256),), (40.0,), 4, 128),
    "paper": Preset((600_000, 600_000), (13, 13), (4_000, 4_000), 512, 1, ((884, 1024), (884, 1024), (884, 1024)),
                    (100.0, 25.0, 25.0), 704, 512),
}


@dataclass(frozen=True)
class FrameRecord:
    path: str
    nominal_xy_nm: tuple[float, float]
    true_xy_nm: tuple[float, float]
    frame_to_chip: tuple[tuple[float, ...], ...]
    grid_index: tuple[int, int]


@dataclass(frozen=True)
class SEMRecord:
    path: str
    pixel_size_nm: float
    rotation_deg: float
    data_bar_rows: int
    sem_to_chip: tuple[tuple[float, ...], ...]


@dataclass(frozen=True)
class PairRecord:
    lr_path: str
    hr_path: str
    split: str
    to_chip: tuple[tuple[float, ...], ...]


@dataclass(frozen=True)
class DatasetManifest:
    """What :func:`write_dataset` wrote; paths are relative to ``root``."""

    root: str
    preset: str
    seed: int
    chip_size_nm: tuple[float, float]
    frame_pixel_size_nm: float
    frame_shape: tuple[int, int]
    fov_mask_path: str
    scan_origin_nm: tuple[float, float]
    rotation_deg: float
    frames: tuple[FrameRecord, ...]
    sem_images: tuple[SEMRecord, ...]
    pair_pixel_size_nm: float
    pairs: tuple[PairRecord, ...]
    notes: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def load(cls, path: str | os.PathLike) -> DatasetManifest:
        """Read ``manifest.json`` (or the folder holding it)."""
        path = Path(path)
        if path.is_dir():
            path = path / MANIFEST_NAME
        raw = json.loads(path.read_text())
        raw["frames"] = tuple(FrameRecord(**{k: _tuples(v) for k, v in f.items()}) for f in raw["frames"])
        raw["sem_images"] = tuple(SEMRecord(**{k: _tuples(v) for k, v in s.items()}) for s in raw["sem_images"])
        raw["pairs"] = tuple(PairRecord(**{k: _tuples(v) for k, v in p.items()}) for p in raw["pairs"])
        for key in ("chip_size_nm", "frame_shape", "scan_origin_nm"):
            raw[key] = tuple(raw[key])
        return cls(**raw)


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _matrix(m: np.ndarray) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(v) for v in row) for row in m)


def _atomic(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename into place, so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_png(path: Path, image: np.ndarray) -> None:
    def write(tmp):
        if not cv2.imwrite(tmp, image):
            raise OSError(f"could not write {path}")
    _atomic(path, write)


def _write_tiff(path: Path, image: np.ndarray, pixel_size_nm: float) -> None:
    import tifffile

    px_per_cm = 1e7 / pixel_size_nm
    _atomic(path, lambda tmp: tifffile.imwrite(tmp, image, photometric="minisblack",
                                               resolution=(px_per_cm, px_per_cm), resolutionunit="CENTIMETER"))


def write_dataset(out_dir: str | os.PathLike, *, preset: str = "tiny", seed: int = 0, progress=None) -> DatasetManifest:
    """Write frames (16-bit TIFF), SEM images (FEI TIFF), LR/HR pairs (PNG) and manifest.json.

    ``progress(done, total, what)`` is called after each file, if given."""
    if preset not in PRESETS:
        raise SimParameterError(f"preset={preset!r} must be one of {sorted(PRESETS)}")
    pr = PRESETS[preset]
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    chip = Chip(seed=seed, size_nm=pr.chip_size_nm)
    world = SimWorld(seed=seed, layout=chip, stage_errors=StageErrors())
    cx, cy = world.sphere_image_centre_px
    roi = (int(round(cx - pr.roi_size / 2)), int(round(cy - pr.roi_size / 2)), pr.roi_size, pr.roi_size)
    total = pr.scan_grid[0] * pr.scan_grid[1] + len(pr.sem_shapes) + pr.pair_count
    done = 0

    def tick(what):
        nonlocal done
        done += 1
        if progress:
            progress(done, total, what)

    # Binned pixels sum b² sensor pixels: shorten the exposure so they stay inside 16 bits.
    scan = simulate_scan(grid=pr.scan_grid, start_nm=pr.scan_start_nm, roi=roi, binning=pr.binning, world=world,
                         exposure_s=0.01 / pr.binning ** 2)
    frames = []
    for k, frame in enumerate(scan.frames):
        rel = f"frames/frame_{k:04d}.tif"
        _write_tiff(root / rel, frame, scan.pixel_size_nm)
        frames.append(FrameRecord(rel, tuple(map(float, scan.nominal_xy_nm[k])), tuple(map(float, scan.true_xy_nm[k])),
                                  _matrix(scan.frame_to_chip[k]), tuple(int(v) for v in scan.grid_index[k])))
        tick(rel)
    _write_png(root / "frames/fov_mask.png", scan.fov_mask.astype(np.uint8) * 255)
    # SEM images centred on the scanned area, rotated a little like a real second instrument.
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 0xD47A])
    span = np.array([scan.step_nm * (pr.scan_grid[1] - 1), scan.step_nm * (pr.scan_grid[0] - 1)])
    scan_centre = np.array(world.scan_origin_nm) + np.array(pr.scan_start_nm) + span / 2
    sems = []
    for k, (shape, px) in enumerate(zip(pr.sem_shapes, pr.sem_pixel_nm, strict=True)):
        offset = rng.uniform(-0.25, 0.25, 2) * span if k else np.zeros(2)
        image = sem_mod.simulate_sem_image(chip, centre_xy_nm=tuple(scan_centre + offset), shape=shape,
                                           pixel_size_nm=px, rotation_deg=float(rng.uniform(-2, 2)), seed=seed + k)
        rel = f"sem/sem_{k:02d}.tif"
        (root / "sem").mkdir(parents=True, exist_ok=True)
        sem_mod.write_sem_tiff(root / rel, image)
        sems.append(SEMRecord(rel, image.pixel_size_nm, image.rotation_deg, image.data_bar_rows,
                              _matrix(image.sem_to_chip)))
        tick(rel)
    # Pairs on non-overlapping tiles of the chip, chosen at random, 10 % held out for testing.
    tile = pr.pair_size_px * pr.pair_pixel_nm
    nx, ny = int((pr.chip_size_nm[0] - tile) // tile), int((pr.chip_size_nm[1] - tile) // tile)
    if nx * ny < pr.pair_count:
        raise SimParameterError(f"pair_count={pr.pair_count} does not fit on the chip ({nx * ny} tiles)")
    chosen = rng.choice(nx * ny, size=pr.pair_count, replace=False)
    n_test = max(1 if pr.pair_count > 1 else 0, int(round(pr.test_fraction * pr.pair_count)))
    pairs = []
    for k, cell in enumerate(chosen):
        centre = (float((cell % nx + 1) * tile), float((cell // nx + 1) * tile))
        pair = simulate_pair(chip, centre_xy_nm=centre, size_px=pr.pair_size_px, pixel_size_nm=pr.pair_pixel_nm,
                             seed=seed * 100_003 + k)
        split = "test" if k < n_test else "train"
        lr_rel, hr_rel = f"pairs/{split}/lr_{k:04d}.png", f"pairs/{split}/hr_{k:04d}.png"
        _write_png(root / lr_rel, pair.lr)
        _write_png(root / hr_rel, pair.hr)
        pairs.append(PairRecord(lr_rel, hr_rel, split, _matrix(pair.to_chip)))
        tick(lr_rel)
    manifest = DatasetManifest(
        root=str(root), preset=preset, seed=seed, chip_size_nm=tuple(pr.chip_size_nm),
        frame_pixel_size_nm=scan.pixel_size_nm, frame_shape=tuple(scan.frames.shape[1:]),
        fov_mask_path="frames/fov_mask.png", scan_origin_nm=world.scan_origin_nm, rotation_deg=scan.rotation_deg,
        frames=tuple(frames), sem_images=tuple(sems), pair_pixel_size_nm=pr.pair_pixel_nm, pairs=tuple(pairs),
        notes={"frame_to_chip": "frame pixel (x=col, y=row) -> chip nm", "sem_to_chip": "SEM pixel -> chip nm",
               "true_xy_nm": "true piezo position, scanner axes; camera rotated by rotation_deg",
               "lr": "uint16 SSUM-like PNG", "hr": "uint8 SEM PNG, same pixels as lr"})
    _atomic(root / MANIFEST_NAME, lambda tmp: Path(tmp).write_text(manifest.to_json()))
    return manifest
