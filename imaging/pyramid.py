"""Deep Zoom (DZI) pyramids for the browser and a pyramidal TIFF master, via libvips.

A 16-bit mosaic is mapped to 8 bits through a stored display window (``display.json`` beside
the ``.dzi``), so a viewer can show the grey levels the tiles stand for. Everything is
generated into a temporary folder next to the destination and renamed into place, so a crash
never leaves a half pyramid being served. Tile paths asked for by a browser are validated
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

from imaging.imageio import DisplayWindow, ImagingError, apply_display_window, atomic_path, display_window

__all__ = ["DziInfo", "TilePathError", "write_dzi", "read_dzi", "write_pyramidal_tiff", "tile_path",
           "dzi_level_count"]

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
    import pyvips

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
    image = np.asarray(image)
    if image.ndim != 2 or image.size == 0:
        raise ValueError(f"image must be a non-empty 2-D array, got shape {image.shape}")
    folder = Path(folder)
    if folder.exists():
        raise ValueError(f"{folder} already exists: pyramids are written once into a new folder")
    if image.dtype == np.uint8 and window is None:
        display = image
    else:
        window = window or display_window(image)
        display = apply_display_window(image, window)

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        vips_image = pyvips.Image.new_from_array(np.ascontiguousarray(display))
        suffix = f".jpeg[Q={quality}]" if format == "jpeg" else ".png"
        vips_image.dzsave(str(staging / name), tile_size=tile_size, overlap=overlap, suffix=suffix,
                          depth="onepixel", layout="dz")
        (staging / f"{name}_files" / "vips-properties.xml").unlink(missing_ok=True)
        (staging / "display.json").write_text(json.dumps({
            "window": window.to_dict() if window else None,
            "source_dtype": str(image.dtype),
            "pixel_size_nm": pixel_size_nm,
            "pixels_per_meter": (1e9 / pixel_size_nm) if pixel_size_nm else None,
        }))
        if master:
            write_pyramidal_tiff(image, staging / f"{name}.tif", pixel_size_nm=pixel_size_nm)
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
    vips_image = pyvips.Image.new_from_array(np.ascontiguousarray(data))
    px_per_mm = 1e6 / pixel_size_nm  # libvips keeps resolution in pixels per millimetre
    vips_image = vips_image.copy(xres=px_per_mm, yres=px_per_mm)
    with atomic_path(path, suffix=".tif") as tmp:
        vips_image.tiffsave(str(tmp), tile=True, tile_width=tile_size, tile_height=tile_size, pyramid=True,
                            compression=compression, resunit="cm", bigtiff=data.size * data.itemsize > 2**31)
    return Path(path)
