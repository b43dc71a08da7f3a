"""Deep Zoom (DZI) pyramids for the browser and a pyramidal TIFF master, via libvips.

A 16-bit mosaic is mapped to 8 bits through a stored display window (``display.json`` beside
the ``.dzi``), so a viewer can show the grey levels the tiles stand for. Everything is
generated into a temporary folder next to the destination and renamed into place, so a crash
never leaves a half pyramid being served. ``write_dzi_file`` streams a file through libvips
instead (memory bounded by libvips' tile buffers, not the image), with the same output. Tile paths asked for by a browser are validated
against the DZI layout (``<name>_files/<level>/<col>_<row>.<ext>``) before any file is opened.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imaging.imageio import (
    DisplayWindow,
    ImageFileError,
    ImagingError,
    apply_display_window,
    atomic_path,
    display_window,
    process_umask,
)

__all__ = ["DziInfo", "TilePathError", "write_dzi", "write_dzi_file", "read_subsample", "read_region", "read_dzi",
           "write_pyramidal_tiff", "tile_path", "dzi_level_count"]

_DZI_NS = "http://schemas.microsoft.com/deepzoom/2008"
TILE_PX = 254
OVERLAP_PX = 1
JPEG_QUALITY = 85
_TILE_RE = re.compile(r"(?P<level>\d{1,2})/(?P<col>\d{1,7})_(?P<row>\d{1,7})\.(?P<ext>jpeg|jpg|png)")


class TilePathError(ValueError, ImagingError):
    """A requested tile path is malformed, outside the pyramid, or names a tile that cannot exist."""


@dataclass(frozen=True)
class DziInfo:
    """A written Deep Zoom pyramid.

    root : folder holding ``<name>.dzi``, ``<name>_files/``, ``display.json`` (and ``<name>.tif``).
    width, height : full-resolution size in pixels. levels : number of levels (0 … levels − 1).
    window : display window applied to reach 8 bits (in the source image's units).
    pixel_size_nm : nm per full-resolution pixel (for a scale bar), or None.
    """

    root: Path
    name: str
    width: int
    height: int
    tile_size: int
    overlap: int
    format: str
    levels: int
    window: DisplayWindow | None
    pixel_size_nm: float | None

    @property
    def dzi_path(self) -> Path:
        return self.root / f"{self.name}.dzi"

    @property
    def tiles_dir(self) -> Path:
        return self.root / f"{self.name}_files"

    def level_size(self, level: int) -> tuple[int, int]:
        """(width, height) of ``level``; the top level is full resolution, level 0 is 1×1."""
        factor = 2 ** (self.levels - 1 - level)
        return max(1, math.ceil(self.width / factor)), max(1, math.ceil(self.height / factor))

    def tile_count(self, level: int) -> tuple[int, int]:
        """(columns, rows) of tiles at ``level``."""
        w, h = self.level_size(level)
        return math.ceil(w / self.tile_size), math.ceil(h / self.tile_size)


def dzi_level_count(width: int, height: int) -> int:
    """Levels of a DZI pyramid: ceil(log2(max side)) + 1 (level 0 is one pixel)."""
    return int(math.ceil(math.log2(max(width, height, 1)))) + 1


def write_dzi(
    image: np.ndarray,
    folder: str | os.PathLike,
    *,
    name: str = "mosaic",
    window: DisplayWindow | None = None,
    pixel_size_nm: float | None = None,
    master: bool = True,
    tile_size: int = TILE_PX,
    overlap: int = OVERLAP_PX,
    format: str = "jpeg",
    quality: int = JPEG_QUALITY,
) -> Path:
    """Write a Deep Zoom pyramid of ``image`` into the new folder ``folder``; returns the folder.

    image : (H, W) uint16, uint8 or float32 [0, 1], rows × cols. 16-bit and float images are
        mapped to 8 bits through ``window`` (default: 0.5–99.5 percentiles); 8-bit images are kept.
    Layout: ``<folder>/<name>.dzi``, ``<folder>/<name>_files/<level>/<col>_<row>.<format>``,
    ``<folder>/display.json`` (window, pixel size) and, with ``master``, ``<folder>/<name>.tif``:
    a tiled pyramidal TIFF of the original (16-bit) pixels with ``pixel_size_nm`` in its
    resolution tags. ``folder`` must not exist: pyramids are written once under a fresh name,
    so cached tiles never go stale; generation happens in a temporary folder renamed at the end.
    """
    image = np.asarray(image)
    if image.ndim != 2 or image.size == 0:
        raise ValueError(f"image must be a non-empty 2-D array, got shape {image.shape}")
    _check_dzi_options(folder, name=name, pixel_size_nm=pixel_size_nm, master=master, tile_size=tile_size,
                       overlap=overlap, format=format, quality=quality)
    if image.dtype == np.uint8 and window is None:
        display = image
    else:
        window = window or display_window(image)
        display = apply_display_window(image, window)

    def vips_display():
        import pyvips

        return pyvips.Image.new_from_array(np.ascontiguousarray(display))

    def save_master(path: Path) -> None:
        write_pyramidal_tiff(image, path, pixel_size_nm=pixel_size_nm)

    return _stage_dzi(vips_display, save_master if master else None, Path(folder), name=name, window=window,
                      source_dtype=str(image.dtype), pixel_size_nm=pixel_size_nm, tile_size=tile_size,
                      overlap=overlap, format=format, quality=quality)


def write_dzi_file(
    path: str | os.PathLike,
    folder: str | os.PathLike,
    *,
    name: str = "mosaic",
    window: DisplayWindow | None = None,
    divide_by: float | None = None,
    pixel_size_nm: float | None = None,
    master: bool = True,
    tile_size: int = TILE_PX,
    overlap: int = OVERLAP_PX,
    format: str = "jpeg",
    quality: int = JPEG_QUALITY,
) -> Path:
    """``write_dzi`` of the image in the file ``path``, streamed through libvips (never read whole).

    path : single-channel TIFF/PNG, uint16, uint8 (read as 16 bits ×257, as ``read_image16``
        does) or float. A float file needs ``divide_by``: it becomes 16 bits as
        ``to_uint16(clip(image / divide_by, 0, 1))`` would make it (the master keeps those 16 bits).
    The 16-bit pixels are mapped to 8 through ``window`` (default: 0.5–99.5 percentiles of
    ``read_subsample``) exactly as ``write_dzi`` maps an array; layout and files are the same.
    """
    _check_dzi_options(folder, name=name, pixel_size_nm=pixel_size_nm, master=master, tile_size=tile_size,
                       overlap=overlap, format=format, quality=quality)
    path = Path(path)
    _open16(path, divide_by=divide_by)  # fail on an unusable file before anything is written
    if window is None:
        window = display_window(read_subsample(path, divide_by=divide_by))
    if not window.high > window.low:
        raise ValueError(f"display window needs high > low, got {window}")

    def vips_display():
        # (x − low) · scale in float32, rounded half to even and clipped: apply_display_window's arithmetic.
        scale = 255.0 / (window.high - window.low)
        image = _open16(path, divide_by=divide_by, access="sequential")
        display = image.linear(1.0, -window.low).linear(scale, 0.0).rint().cast("uchar")
        return display.copy(interpretation="b-w")  # else PNG tiles keep the source's 16-bit depth

    def save_master(target: Path) -> None:
        _stream_pyramidal_tiff(lambda: _open16(path, divide_by=divide_by), target, pixel_size_nm=pixel_size_nm)

    return _stage_dzi(vips_display, save_master if master else None, Path(folder), name=name, window=window,
                      source_dtype="uint16", pixel_size_nm=pixel_size_nm, tile_size=tile_size, overlap=overlap,
                      format=format, quality=quality)


def read_subsample(path: str | os.PathLike, *, max_pixels: int = 1_000_000,
                   divide_by: float | None = None) -> np.ndarray:
    """Every s-th row and column (of whole s × s blocks) of the image in ``path``, with
    the smallest s that keeps it within ``max_pixels``: statistics of a giant file in bounded memory.
    Pixels are as ``write_dzi_file`` reads them, except that float files are left as they are.

    A regular 2-D grid (s = ceil(sqrt(pixels / max_pixels))) samples the whole field evenly, so
    percentiles of ~1 Mpx are within a few thousandths of a percentile rank of the full image's
    (binomial error sqrt(p(1−p)/n) ≈ 7e-5 at p = 99.5 %); the same budget ``display_window`` uses.
    """
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be >= 1, got {max_pixels}")
    image = _open16(Path(path), divide_by=divide_by, raw_float=True, access="sequential")
    step = max(1, math.ceil(math.sqrt(image.width * image.height / max_pixels)))
    if step > 1:
        image = image.subsample(step, step)
    return image.numpy()


def read_region(path: str | os.PathLike, box: tuple[int, int, int, int]) -> np.ndarray:
    """Pixels ``[y0:y1, x0:x1]`` of the 8- or 16-bit image in ``path`` as (H, W) uint16 (8-bit ×257),
    decoding only the strips or tiles the box touches: a part of a giant mosaic without the whole.

    ``box`` is (x0, y0, x1, y1), clipped to the image; ``ImageFileError`` if nothing is left.
    """
    image = _open16(Path(path), divide_by=None)
    x0, y0 = max(0, int(box[0])), max(0, int(box[1]))
    x1, y1 = min(image.width, int(box[2])), min(image.height, int(box[3]))
    if x1 <= x0 or y1 <= y0:
        raise ImageFileError(f"{Path(path).name}: box {tuple(box)} lies outside the {image.width}×{image.height} image")
    return image.crop(x0, y0, x1 - x0, y1 - y0).numpy()


def _open16(path: Path, *, divide_by: float | None, raw_float: bool = False, access: str = "random"):
    """The file as a lazy one-band libvips image: ushort (uint8 ×257; float ÷ divide_by, clipped
    to [0, 1], ×65535, rounded), or with ``raw_float`` float files as they are."""
    import pyvips

    if not path.is_file():
        raise ImageFileError(f"{path.name}: no such file")
    try:
        image = pyvips.Image.new_from_file(str(path), access=access)
    except pyvips.Error as exc:
        raise ImageFileError(f"{path.name}: cannot read image ({exc})") from exc
    if image.bands != 1:
        raise ImageFileError(f"{path.name}: expected one channel, got {image.bands}")
    if image.format == "uchar":
        return image.cast("ushort").linear(257, 0).cast("ushort")
    if image.format == "ushort":
        return image
    if image.format not in ("float", "double"):
        raise ImageFileError(f"{path.name}: expected 8- or 16-bit or float pixels, got {image.format}")
    if raw_float:
        return image
    if divide_by is None or not divide_by > 0:
        raise ValueError(f"a float image needs divide_by > 0, got {divide_by}")
    # Divided by a constant image, not multiplied by 1/divide_by: bit-identical to numpy's float32 division.
    ratio = image.cast("float").divide(pyvips.Image.black(image.width, image.height).linear(0.0, divide_by)
                                       .cast("float"))
    ratio = (ratio > 1.0).ifthenelse(1.0, (ratio < 0.0).ifthenelse(0.0, ratio))
    return ratio.cast("float").linear(65535.0, 0.0).rint().cast("ushort")


def _check_dzi_options(folder, *, name, pixel_size_nm, master, tile_size, overlap, format, quality) -> None:
    if format not in ("jpeg", "png"):
        raise ValueError(f"format must be 'jpeg' or 'png', got {format!r}")
    if not 1 <= tile_size <= 8192 or not 0 <= overlap < tile_size // 2:
        raise ValueError(f"need 1 <= tile_size <= 8192 and 0 <= overlap < tile_size/2, got {tile_size}, {overlap}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in [1, 100], got {quality}")
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
        raise ValueError(f"name must be 1–64 letters, digits, '_' or '-', got {name!r}")
    if pixel_size_nm is not None and not pixel_size_nm > 0:
        raise ValueError(f"pixel_size_nm must be > 0, got {pixel_size_nm}")
    if master and pixel_size_nm is None:
        raise ValueError("the master TIFF needs pixel_size_nm")
    if Path(folder).exists():
        raise ValueError(f"{folder} already exists: pyramids are written once into a new folder")


def _stage_dzi(vips_display, save_master, folder: Path, *, name, window, source_dtype, pixel_size_nm, tile_size,
               overlap, format, quality) -> Path:
    """Write tiles, display.json and the master into a staging folder, then rename it to ``folder``."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        suffix = f".jpeg[Q={quality}]" if format == "jpeg" else ".png"
        vips_display().dzsave(str(staging / name), tile_size=tile_size, overlap=overlap, suffix=suffix,
                              depth="onepixel", layout="dz")
        (staging / f"{name}_files" / "vips-properties.xml").unlink(missing_ok=True)
        (staging / "display.json").write_text(json.dumps({
            "window": window.to_dict() if window else None,
            "source_dtype": source_dtype,
            "pixel_size_nm": pixel_size_nm,
            "pixels_per_meter": (1e9 / pixel_size_nm) if pixel_size_nm else None,
        }))
        if save_master is not None:
            save_master(staging / f"{name}.tif")
        staging.chmod(0o777 & ~process_umask())  # mkdtemp's 0700 would hide the tiles from a proxy serving media
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def read_dzi(root: str | os.PathLike, *, name: str = "mosaic") -> DziInfo:
    """Describe the pyramid in ``root`` from its ``.dzi`` and ``display.json``."""
    root = Path(root)
    try:
        tree = ElementTree.parse(root / f"{name}.dzi").getroot()
    except (OSError, ElementTree.ParseError) as exc:
        raise ImagingError(f"no readable Deep Zoom descriptor {name}.dzi in {root}: {exc}") from exc
    size = tree.find(f"{{{_DZI_NS}}}Size")
    width, height = int(size.get("Width")), int(size.get("Height"))
    display_file = root / "display.json"
    display = json.loads(display_file.read_text()) if display_file.exists() else {}
    window = DisplayWindow(**display["window"]) if display.get("window") else None
    return DziInfo(root=root, name=name, width=width, height=height, tile_size=int(tree.get("TileSize")),
                   overlap=int(tree.get("Overlap")), format=tree.get("Format"),
                   levels=dzi_level_count(width, height), window=window,
                   pixel_size_nm=display.get("pixel_size_nm"))


def whole_image_level(info: DziInfo) -> int:
    """The most detailed level that fits in one tile (``<level>/0_0``): the whole image as a thumbnail."""
    return next(level for level in range(info.levels - 1, -1, -1)
                if max(info.level_size(level)) <= info.tile_size)


def tile_path(info: DziInfo, requested: str) -> Path:
    """Validate a browser's tile request and return the file it names inside the pyramid.

    requested : ``"<level>/<col>_<row>.<ext>"``, optionally prefixed by ``"<name>_files/"``.
    Raises ``TilePathError`` for anything else: traversal (``..``), absolute paths, backslashes,
    a wrong extension, a level or tile index outside the pyramid. The file may still be missing
    (the caller answers 404).
    """
    if not isinstance(requested, str) or "\x00" in requested or "\\" in requested:
        raise TilePathError("tile path must be a plain string without backslashes or NUL")
    prefix = f"{info.name}_files/"
    rel = requested[len(prefix):] if requested.startswith(prefix) else requested
    match = _TILE_RE.fullmatch(rel)
    if not match:
        raise TilePathError(f"not a tile path: {requested!r}; expected <level>/<col>_<row>.{info.format}")
    level, col, row = int(match["level"]), int(match["col"]), int(match["row"])
    if match["ext"] != info.format:
        raise TilePathError(f"this pyramid's tiles are .{info.format}, not .{match['ext']}")
    if level >= info.levels:
        raise TilePathError(f"level {level} does not exist (levels 0–{info.levels - 1})")
    cols, rows = info.tile_count(level)
    if col >= cols or row >= rows:
        raise TilePathError(f"tile {col}_{row} is outside level {level} ({cols}×{rows} tiles)")
    path = (info.tiles_dir / str(level) / f"{col}_{row}.{info.format}").resolve()
    if not path.is_relative_to(info.tiles_dir.resolve()):  # symlinked folders must not lead outside
        raise TilePathError("tile path leaves the pyramid")
    return path


def write_pyramidal_tiff(
    image: np.ndarray,
    path: str | os.PathLike,
    *,
    pixel_size_nm: float,
    tile_size: int = 256,
    compression: str = "deflate",
) -> Path:
    """Write a tiled, pyramidal TIFF master (16-bit kept) with the pixel size in its resolution tags.

    image : (H, W) uint16, uint8 or float32 [0, 1] (float → uint16). Resolution is stored as
    pixels per centimetre (ResolutionUnit = CENTIMETER) on every level, scaled per level.
    """
    import pyvips

    from imaging.imageio import to_uint16

    if not pixel_size_nm or pixel_size_nm <= 0:
        raise ValueError(f"pixel_size_nm must be > 0 nm, got {pixel_size_nm}")
    if compression not in ("deflate", "lzw", "none"):
        raise ValueError(f"compression must be 'deflate', 'lzw' or 'none', got {compression!r}")
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D, got shape {image.shape}")
    data = image if image.dtype in (np.uint8, np.uint16) else to_uint16(image)
    return _save_pyramidal_tiff(pyvips.Image.new_from_array(np.ascontiguousarray(data)), path,
                                pixel_size_nm=pixel_size_nm, tile_size=tile_size, compression=compression)


def _save_pyramidal_tiff(vips_image, path, *, pixel_size_nm: float, tile_size: int = 256,
                         compression: str = "deflate") -> Path:
    px_per_mm = 1e6 / pixel_size_nm  # libvips keeps resolution in pixels per millimetre
    vips_image = vips_image.copy(xres=px_per_mm, yres=px_per_mm)
    nbytes = vips_image.width * vips_image.height * (1 if vips_image.format == "uchar" else 2)
    with atomic_path(path, suffix=".tif") as tmp:
        vips_image.tiffsave(str(tmp), tile=True, tile_width=tile_size, tile_height=tile_size, pyramid=True,
                            compression=compression, resunit="cm", bigtiff=nbytes > 2**31)
    return Path(path)


def _stream_pyramidal_tiff(open_image, path, *, pixel_size_nm: float, tile_size: int = 256) -> Path:
    """The master of ``write_pyramidal_tiff`` (deflate) written one row of tiles at a time.

    libvips' own pyramid writer holds every level below the top in memory until it ends (~1/3
    of the image); here each level is a fresh libvips pipeline (the file box-shrunk by 2^k, as
    libvips shrinks its levels) read in strips of one tile row, so memory is one strip.
    ``open_image()`` gives a new lazy one-band uchar/ushort libvips image of the source.
    """
    import tifffile

    base = open_image()
    dtype = np.uint8 if base.format == "uchar" else np.uint16
    shapes, factor = [(base.height, base.width)], 1
    while max(shapes[-1]) > tile_size:  # down to one tile, like libvips' pyramid
        factor *= 2
        shapes.append((max(1, base.height // factor), max(1, base.width // factor)))

    def tiles(level: int):
        image = base if level == 0 else open_image().shrink(2 ** level, 2 ** level).cast(base.format)
        height, width = shapes[level]
        image = image.crop(0, 0, width, height)
        for top in range(0, height, tile_size):
            rows = min(tile_size, height - top)
            strip = np.zeros((tile_size, -(-width // tile_size) * tile_size), dtype)
            strip[:rows, :width] = image.crop(0, top, width, rows).numpy()
            for left in range(0, width, tile_size):
                yield strip[:, left:left + tile_size]

    nbytes = base.width * base.height * np.dtype(dtype).itemsize
    with atomic_path(path, suffix=".tif") as tmp, tifffile.TiffWriter(tmp, bigtiff=nbytes > 2**31) as tif:
        for level, shape in enumerate(shapes):
            per_cm = 1e7 / pixel_size_nm * shape[1] / base.width
            tif.write(tiles(level), shape=shape, dtype=dtype, tile=(tile_size, tile_size), compression="zlib",
                      predictor=True, photometric="minisblack", subfiletype=1 if level else 0,
                      resolution=(per_cm, per_cm), resolutionunit="CENTIMETER")
    return Path(path)
