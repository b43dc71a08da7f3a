"""LR/HR training pairs cut from a registered mosaic (LR, SSUM) and SEM image (HR).

Both images are brought onto one grid with one physical pixel size (default the mosaic's):
the mosaic is rescaled, the SEM image is warped through the registration in a single
interpolation step (after an anti-alias blur when it is downsampled). Square tiles are cut
over the region both cover; tiles with too little structure are skipped. The train/test split
is by spatial blocks, and a tile that would straddle blocks of different splits is dropped, so
no test tile overlaps a training tile. ``export_zip`` writes 16-bit PNG pairs and a JSON
manifest that ``mlcore.data.load_pair_folder`` reads.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from fractions import Fraction

import cv2
import numpy as np

from imaging.imageio import atomic_path, to_float32, to_uint16

__all__ = ["TilePair", "PairSet", "resample_to_common_grid", "cut_pairs", "footprint_box", "grid_period_px",
           "box_in_mosaic", "block_of", "lattice_offset", "skipped_in_words", "export_zip"]


@dataclass(frozen=True)
class TilePair:
    """One LR/HR pair.

    lr, hr : (T, T) float32 [0, 1]; LR from the mosaic, HR from the SEM image, same grid.
    box_px : (x0, y0, x1, y1) on the common grid (end-exclusive), pixel size ``PairSet.pixel_size_nm``.
    box_mosaic_px : the same box in original mosaic pixels (floats when the grid was rescaled).
    split : "train" or "test". block : (bx, by) index of the spatial block that decided the split.
    """

    lr: np.ndarray
    hr: np.ndarray
    box_px: tuple[int, int, int, int]
    box_mosaic_px: tuple[float, float, float, float]
    split: str
    block: tuple[int, int]


@dataclass(frozen=True)
class PairSet:
    """Pairs with their provenance and the counts of skipped tiles (by reason)."""

    pairs: tuple[TilePair, ...]
    pixel_size_nm: float
    tile_px: int
    stride_px: int
    skipped: dict = field(default_factory=dict)
    registration: dict = field(default_factory=dict)

    def split(self, name: str) -> tuple[TilePair, ...]:
        return tuple(p for p in self.pairs if p.split == name)


def resample_to_common_grid(
    mosaic: np.ndarray,
    sem: np.ndarray,
    mosaic_to_sem: np.ndarray,
    *,
    mosaic_px_nm: float,
    pixel_size_nm: float | None = None,
    mosaic_valid: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Mosaic and SEM on one grid of ``pixel_size_nm`` (default ``mosaic_px_nm``).

    Returns (lr (H, W) float32, hr (H, W) float32, valid (H, W) bool, grid_to_mosaic scale),
    where valid marks pixels covered by the SEM image (and by ``mosaic_valid`` when given).
    """
    if not mosaic_px_nm > 0:
        raise ValueError(f"mosaic_px_nm must be > 0, got {mosaic_px_nm}")
    pixel_size_nm = float(pixel_size_nm or mosaic_px_nm)
    if not pixel_size_nm > 0:
        raise ValueError(f"pixel_size_nm must be > 0, got {pixel_size_nm}")
    mosaic = to_float32(mosaic)
    sem = to_float32(sem)
    f = pixel_size_nm / mosaic_px_nm  # mosaic px per grid px
    h, w = int(np.floor(mosaic.shape[0] / f)), int(np.floor(mosaic.shape[1] / f))
    if h < 1 or w < 1:
        raise ValueError(f"pixel_size_nm {pixel_size_nm} leaves no pixels of the mosaic")
    grid_to_mosaic = np.array([[f, 0, 0.5 * f - 0.5], [0, f, 0.5 * f - 0.5], [0, 0, 1.0]])
    if abs(f - 1) < 1e-9:
        lr = mosaic[:h, :w].copy()
    else:
        # At the exact scale 1/f (dsize from fx, fy), then cut to (h, w): resizing to (w, h) itself
        # scales by W / w, not f, and the mosaic drifted from the SEM warped by grid_to_mosaic by up
        # to f mosaic px across it (1.27 px over 3000 px at f = 2.5).
        lr = cv2.resize(mosaic, None, fx=1 / f, fy=1 / f,
                        interpolation=cv2.INTER_AREA if f > 1 else cv2.INTER_CUBIC)[:h, :w]
    grid_to_sem = np.asarray(mosaic_to_sem, np.float64) @ grid_to_mosaic
    sem_px_per_grid_px = float(np.sqrt(abs(np.linalg.det(grid_to_sem[:2, :2]))))
    if sem_px_per_grid_px > 1.2:  # anti-alias before decimating the finer SEM image
        sem = cv2.GaussianBlur(sem, (0, 0), 0.45 * sem_px_per_grid_px)
    def warp(image: np.ndarray) -> np.ndarray:
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP  # grid_to_sem maps destination → source
        if np.allclose(grid_to_sem[2], [0, 0, 1]):
            return cv2.warpAffine(image, grid_to_sem[:2], (w, h), flags=flags)
        return cv2.warpPerspective(image, grid_to_sem, (w, h), flags=flags)

    hr = warp(sem)
    valid = warp(np.ones(sem.shape, np.float32)) > 0.999
    if mosaic_valid is not None:
        valid &= _mosaic_mask_on_grid(mosaic_valid, f, (h, w))
    return lr, np.clip(hr, 0, 1), valid, f


def _mosaic_mask_on_grid(mask: np.ndarray, f: float, shape: tuple[int, int]) -> np.ndarray:
    """A bool mask over mosaic pixels, on the common grid of ``shape`` (f mosaic px per grid px)."""
    h, w = shape
    mask = np.asarray(mask, bool)
    if abs(f - 1) <= 1e-9:
        return mask[:h, :w]
    return cv2.resize(mask.astype(np.uint8), None, fx=1 / f, fy=1 / f, interpolation=cv2.INTER_NEAREST)[:h, :w] > 0


#: A part of a mosaic is cut on another grid only where a whole number of mosaic px of at most this
#: many is a whole number of grid px (:func:`grid_period_px`); else the whole mosaic is read.
MAX_GRID_PERIOD_PX = 1000


def grid_period_px(grid_to_mosaic: float) -> int | None:
    """The fewest mosaic px that make a whole number of grid px (``grid_to_mosaic`` = f, mosaic px per
    grid px: 1 at f = 1, 5 at 2.5, 20 at 50 nm / 32.5 nm), so that a part of the mosaic starting at a
    multiple of it has its grid pixels where the whole mosaic's are; None beyond MAX_GRID_PERIOD_PX."""
    f = float(grid_to_mosaic)
    ratio = Fraction(f).limit_denominator(MAX_GRID_PERIOD_PX)
    if abs(float(ratio) - f) > 1e-9 * f or ratio.numerator > MAX_GRID_PERIOD_PX:
        return None
    return ratio.numerator


def footprint_box(mosaic_to_sem: np.ndarray, sem_shape_rc: tuple[int, int], mosaic_shape_rc: tuple[int, int], *,
                  grid_to_mosaic: float = 1.0) -> tuple[int, int, int, int] | None:
    """The part of the mosaic pairs can come from, (x0, y0, x1, y1) end-exclusive: the SEM image's
    footprint through the registration with the resampling's reach around it (a pixel at the
    mosaic's own pixel size; 2 grid px and 2 more on another grid, of ``grid_to_mosaic`` mosaic px
    per grid px), its corner on a multiple of :func:`grid_period_px`, inside the mosaic; the whole
    mosaic on a grid without a period. None where the footprint misses the mosaic."""
    from imaging.registration_checks import sem_footprint

    f = float(grid_to_mosaic)
    period = grid_period_px(f)
    corners = sem_footprint(np.linalg.inv(np.asarray(mosaic_to_sem, np.float64)), sem_shape_rc)
    rows, cols = mosaic_shape_rc
    before, after = (1, 2) if period == 1 else (int(np.ceil(2 * f)) + 2,) * 2
    step = period or 1  # without a period the answer is the whole mosaic; the box only says if it is hit
    x0, y0 = (max(0, (int(np.floor(v)) - before) // step * step) for v in corners.min(axis=0))
    x1 = min(cols, int(np.ceil(corners[:, 0].max())) + after)
    y1 = min(rows, int(np.ceil(corners[:, 1].max())) + after)
    if x1 <= x0 or y1 <= y0:
        return None
    return (x0, y0, x1, y1) if period else (0, 0, cols, rows)


#: Tile sizes the pairs form suggests, largest first: the largest of which TILES_SUGGESTED fit the overlap.
SUGGESTED_TILE_SIZES = (512, 256, 128, 64)
TILES_SUGGESTED = 8


def suggested_tile(width: int, height: int) -> int:
    """The tile size (px) to offer for an overlap of width × height mosaic px: 512 px tiles gave 1 pair on
    an 890 px mosaic, too few to hold any out or to train on."""
    return next((t for t in SUGGESTED_TILE_SIZES if (width // t) * (height // t) >= TILES_SUGGESTED),
                SUGGESTED_TILE_SIZES[-1])


#: Train/test blocks are this many tiles wide (see :func:`cut_pairs`).
BLOCK_TILES = 2


def box_in_mosaic(box_px, grid_to_mosaic: float) -> tuple[float, float, float, float]:
    """A tile's (x0, y0, x1, y1) on the pairs' grid as the same box in mosaic pixels (pixel centres
    line up: grid px k covers mosaic px (k + ½)·f − ½), ``grid_to_mosaic`` = f, mosaic px per grid px."""
    f = float(grid_to_mosaic)
    return tuple(float((v + 0.5) * f - 0.5) for v in box_px)


def block_of(box_px, *, tile_px: int, stride_px: int | None = None,
             block_tiles: int = BLOCK_TILES) -> tuple[int, int]:
    """(bx, by) of the train/test block that holds a tile's top-left corner. The blocks start where
    the tiles do: at the tiles' lattice offset, which every tile's corner gives modulo ``stride_px``
    (default ``tile_px``), so the export finds the blocks the cut used from the boxes alone."""
    block_px = block_tiles * tile_px
    stride = int(stride_px or tile_px)
    x0, y0 = int(box_px[0]), int(box_px[1])
    return (x0 - x0 % stride) // block_px, (y0 - y0 % stride) // block_px


#: Lattice offsets tried per axis (:func:`lattice_offset`): this many evenly spaced within a stride.
LATTICE_OFFSETS = 16


def lattice_offset(usable: np.ndarray, *, tile_px: int, stride_px: int, part_origin: tuple[int, int] = (0, 0),
                   grid_shape: tuple[int, int] | None = None, integral: np.ndarray | None = None) -> tuple[int, int]:
    """Where the tiles' lattice starts, (x, y) in [0, stride)²: of :data:`LATTICE_OFFSETS`² offsets
    from the corner of the ``usable`` area (bool, the part of the grid from ``part_origin`` (x, y)
    of a grid of ``grid_shape`` (rows, cols)), the one that fits the most whole tiles inside it, the
    corner itself on a tie. Why: tiles on the grid's own origin fit an overlap only by chance (a
    315 px overlap held 1 tile of 128 px where 4 fit)."""
    part_h, part_w = usable.shape
    h, w = grid_shape or usable.shape
    kx, ky = part_origin
    rows, cols = np.nonzero(usable.any(axis=1))[0], np.nonzero(usable.any(axis=0))[0]
    if not len(rows):
        return 0, 0
    if integral is None:  # the caller's summed-area table of ``usable``, where it has one
        integral = cv2.integral(usable.view(np.uint8))  # int32: up to 2³¹ px
    corner_x, corner_y = (int(cols[0]) + kx) % stride_px, (int(rows[0]) + ky) % stride_px

    def starts(offset, size, shift, part_size):  # a lattice's tile corners on the grid, in the part's pixels
        corners = np.arange(offset, size - tile_px + 1, stride_px) - shift
        return corners[(corners >= 0) & (corners + tile_px <= part_size)]

    step = max(1, stride_px // LATTICE_OFFSETS)
    best = (-1, 0, 0)
    for dy in range(0, stride_px, step):
        oy = (corner_y + dy) % stride_px
        v0 = starts(oy, h, ky, part_h)[:, None]
        for dx in range(0, stride_px, step):
            ox = (corner_x + dx) % stride_px
            u0 = starts(ox, w, kx, part_w)[None, :]
            inside = (integral[v0 + tile_px, u0 + tile_px] - integral[v0, u0 + tile_px]
                      - integral[v0 + tile_px, u0] + integral[v0, u0])
            count = int(np.count_nonzero(inside == tile_px * tile_px))
            if count > best[0]:
                best = (count, ox, oy)
    return best[1], best[2]


def cut_pairs(
    mosaic: np.ndarray,
    sem: np.ndarray,
    mosaic_to_sem: np.ndarray,
    *,
    mosaic_px_nm: float,
    pixel_size_nm: float | None = None,
    tile_px: int = 512,
    stride_px: int | None = None,
    min_std: float = 0.01,
    test_fraction: float = 0.2,
    block_tiles: int = BLOCK_TILES,
    seed: int = 0,
    mosaic_valid: np.ndarray | None = None,
    mosaic_unsure: np.ndarray | None = None,
    registration: dict | None = None,
    origin_px: tuple[int, int] = (0, 0),
    mosaic_shape: tuple[int, int] | None = None,
) -> PairSet:
    """Cut ``tile_px``² LR/HR pairs every ``stride_px`` (default ``tile_px``) over the overlap.

    A tile is kept only if it lies fully inside the overlap and both members have an intensity
    standard deviation ≥ ``min_std`` of their image's range (0.5–99.5 percentiles over the
    overlap), so a dim but well-exposed SSUM mosaic is judged like a bright SEM image. The grid is
    divided into square blocks of ``block_tiles × tile_px``; a seeded ``test_fraction`` of the
    blocks holding tiles is test (:func:`_test_blocks`). A tile belongs to the block holding its
    top-left corner and is dropped when it reaches into a block of the other split, so train and
    test tiles never overlap. ``mosaic_unsure`` (mosaic-sized bool) marks where
    frames placed with low confidence contribute (:func:`imaging.stitching.frame_footprint`): a tile
    touching it is skipped, since its seams, and so its alignment with the SEM image, may be pixels off.

    ``mosaic`` may be a part of a larger mosaic: the pixels from ``origin_px`` (x, y) of a mosaic of
    ``mosaic_shape`` (rows, cols), with ``mosaic_to_sem``, boxes and blocks those of the whole
    mosaic and ``mosaic_valid`` / ``mosaic_unsure`` over the part's pixels. A part holding the
    SEM footprint (:func:`footprint_box`) gives the pairs the whole mosaic gives, without the rest
    of a large mosaic in memory. On another grid than the mosaic's, the origin must be a whole
    number of grid px (a multiple of :func:`grid_period_px`), so that the part's grid pixels are
    the whole mosaic's.
    """
    if tile_px < 8:
        raise ValueError(f"tile_px must be >= 8, got {tile_px}")
    stride_px = int(stride_px or tile_px)
    if not 1 <= stride_px <= 4 * tile_px:
        raise ValueError(f"stride_px must be in [1, {4 * tile_px}], got {stride_px}")
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if block_tiles < 1:
        raise ValueError(f"block_tiles must be >= 1, got {block_tiles}")
    ox, oy = (int(v) for v in origin_px)
    full_rows, full_cols = mosaic_shape or mosaic.shape[:2]
    part = (ox, oy, full_rows, full_cols) != (0, 0, *mosaic.shape[:2])
    kx = ky = 0  # the part's first grid pixel in the whole mosaic's grid
    if part:
        f_part = float(pixel_size_nm or mosaic_px_nm) / mosaic_px_nm if mosaic_px_nm > 0 else 1.0
        kx, ky = (round(v / f_part) for v in (ox, oy))
        if max(abs(kx * f_part - ox), abs(ky * f_part - oy)) > 1e-6:
            raise ValueError(f"a part of a mosaic must start on a grid pixel: {(ox, oy)} mosaic px is not a whole "
                             f"number of {pixel_size_nm} nm pixels ({f_part:g} mosaic px each)")
        if ox < 0 or oy < 0 or ox + mosaic.shape[1] > full_cols or oy + mosaic.shape[0] > full_rows:
            raise ValueError(f"the part at {(ox, oy)} of {mosaic.shape[1]}×{mosaic.shape[0]} px does not fit "
                             f"in the {full_cols}×{full_rows} px mosaic")
    part_to_sem = np.asarray(mosaic_to_sem, np.float64) @ np.array([[1.0, 0, ox], [0, 1.0, oy], [0, 0, 1]])
    lr, hr, valid, f = resample_to_common_grid(mosaic, sem, part_to_sem, mosaic_px_nm=mosaic_px_nm,
                                               pixel_size_nm=pixel_size_nm, mosaic_valid=mosaic_valid)
    part_h, part_w = lr.shape
    # the whole mosaic's grid, its tiles and blocks
    h, w = (int(np.floor(full_rows / f)), int(np.floor(full_cols / f))) if part else (part_h, part_w)
    block_px = block_tiles * tile_px
    n_bx, n_by = -(-w // block_px), -(-h // block_px)
    lr_range, hr_range = (_robust_range(image, valid) for image in (lr, hr))
    # summed-area table: count of valid pixels in any box in O(1)
    integral = cv2.integral(valid.astype(np.uint8))
    unsure_on_grid = None if mosaic_unsure is None else _mosaic_mask_on_grid(mosaic_unsure, f, (part_h, part_w))
    unsure = None if unsure_on_grid is None else cv2.integral(unsure_on_grid.astype(np.uint8))
    usable = valid if unsure_on_grid is None else valid & ~unsure_on_grid
    lx, ly = lattice_offset(usable, tile_px=tile_px, stride_px=stride_px, part_origin=(kx, ky), grid_shape=(h, w),
                            integral=integral if unsure is None else None)
    skipped = {"outside_overlap": 0, "uncertain_placement": 0, "low_structure": 0, "straddles_split": 0}
    candidates = []  # (box, block) of the tiles that could be pairs, whichever split they fall in
    for y0 in range(ly, h - tile_px + 1, stride_px):
        for x0 in range(lx, w - tile_px + 1, stride_px):
            x1, y1 = x0 + tile_px, y0 + tile_px
            # (u0, v0)–(u1, v1): the tile in the part's pixels; one reaching out of it is outside the overlap
            u0, v0, u1, v1 = x0 - kx, y0 - ky, x1 - kx, y1 - ky
            inside = (integral[v1, u1] - integral[v0, u1] - integral[v1, u0] + integral[v0, u0]
                      if u0 >= 0 and v0 >= 0 and u1 <= part_w and v1 <= part_h else 0)
            if inside < tile_px * tile_px:
                skipped["outside_overlap"] += 1
                continue
            if unsure is not None and unsure[v1, u1] - unsure[v0, u1] - unsure[v1, u0] + unsure[v0, u0]:
                skipped["uncertain_placement"] += 1
                continue
            if lr[v0:v1, u0:u1].std() < min_std * lr_range or hr[v0:v1, u0:u1].std() < min_std * hr_range:
                skipped["low_structure"] += 1
                continue
            box = (x0, y0, x1, y1)
            candidates.append((box, block_of(box, tile_px=tile_px, stride_px=stride_px, block_tiles=block_tiles)))
    is_test = _test_blocks({block for _, block in candidates}, (n_by, n_bx), test_fraction, seed)
    pairs = []
    for (x0, y0, x1, y1), (bx, by) in candidates:
        split_test = is_test[by, bx]
        covered = is_test[by : (y1 - 1 - ly) // block_px + 1, bx : (x1 - 1 - lx) // block_px + 1]
        if (covered != split_test).any():
            skipped["straddles_split"] += 1
            continue
        u0, v0, u1, v1 = x0 - kx, y0 - ky, x1 - kx, y1 - ky
        pairs.append(TilePair(lr=lr[v0:v1, u0:u1].copy(), hr=hr[v0:v1, u0:u1].copy(), box_px=(x0, y0, x1, y1),
                              box_mosaic_px=box_in_mosaic((x0, y0, x1, y1), f),
                              split="test" if split_test else "train", block=(int(bx), int(by))))
    return PairSet(pairs=tuple(pairs), pixel_size_nm=float(pixel_size_nm or mosaic_px_nm), tile_px=tile_px,
                   stride_px=stride_px, skipped=skipped, registration=dict(registration or {}))


#: ``PairSet.skipped``'s reasons in words, in the order :func:`cut_pairs` tests them.
SKIP_REASONS = {
    "outside_overlap": "outside the registered overlap",
    "uncertain_placement": "over frames placed with low confidence",
    "low_structure": "with too little structure",
    "straddles_split": "straddling the train/test blocks",
}


def skipped_in_words(skipped: dict) -> str:
    """``PairSet.skipped`` as a user reads it: "35 tiles outside the registered overlap, 1 over frames placed
    with low confidence" (only the reasons that left tiles out; "" where none did)."""
    parts = []
    for reason, words in SKIP_REASONS.items():
        count = int(skipped.get(reason) or 0)
        if count:
            noun = "" if parts else " tile" if count == 1 else " tiles"
            parts.append(f"{count}{noun} {words}")
    return ", ".join(parts)


def _test_blocks(occupied: set, shape: tuple[int, int], test_fraction: float, seed: int) -> np.ndarray:
    """Which train/test blocks are test, (rows, cols) bool: a seeded ``test_fraction`` of the ``occupied``
    blocks (those holding a tile), rounded, at least one where asked and two or more are occupied, and never
    all of them. Why of the occupied ones: drawn over the whole grid, most blocks lie outside a small overlap,
    and a test fraction of 0.25 held out none of a demo's six pairs."""
    is_test = np.zeros(shape, bool)
    blocks = sorted(occupied)
    if test_fraction <= 0 or len(blocks) < 2:
        return is_test
    count = min(max(1, round(test_fraction * len(blocks))), len(blocks) - 1)
    for index in np.random.default_rng(seed).choice(len(blocks), size=count, replace=False):
        bx, by = blocks[index]
        is_test[by, bx] = True
    return is_test


def _robust_range(image: np.ndarray, valid: np.ndarray) -> float:
    values = image[valid] if valid.any() else image.reshape(-1)
    values = values[:: max(1, values.size // 1_000_000)]
    low, high = np.percentile(values, [0.5, 99.5])
    return float(high - low) if high > low else 1.0


def _png16(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", to_uint16(image))
    if not ok:
        raise ValueError("could not encode a PNG")
    return data.tobytes()


def export_zip(pair_set: PairSet, path: str | os.PathLike) -> str:
    """Write ``pair_set`` as a zip: ``<split>/lr/NNNNN.png``, ``<split>/hr/NNNNN.png`` (16-bit) + manifest.json.

    The manifest lists ``pairs`` with ``lr_path``, ``hr_path``, ``split``, boxes and blocks,
    plus ``pair_pixel_size_nm``, tile size, stride, skipped counts and the registration.
    """
    if not pair_set.pairs:
        raise ValueError("the pair set is empty; nothing to export")
    records = []
    with atomic_path(path, suffix=".zip") as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:  # PNGs are compressed already
            for i, pair in enumerate(pair_set.pairs):
                lr_path, hr_path = f"{pair.split}/lr/{i:05d}.png", f"{pair.split}/hr/{i:05d}.png"
                zf.writestr(lr_path, _png16(pair.lr))
                zf.writestr(hr_path, _png16(pair.hr))
                records.append({"lr_path": lr_path, "hr_path": hr_path, "split": pair.split,
                                "box_px": list(pair.box_px), "box_mosaic_px": list(pair.box_mosaic_px),
                                "block": list(pair.block)})
            manifest = {"pair_pixel_size_nm": pair_set.pixel_size_nm, "tile_px": pair_set.tile_px,
                        "stride_px": pair_set.stride_px, "skipped": pair_set.skipped,
                        "registration": pair_set.registration, "pairs": records}
            buf = io.StringIO()
            json.dump(manifest, buf, indent=1)
            zf.writestr("manifest.json", buf.getvalue())
    return str(path)
