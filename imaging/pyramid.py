"""Deep Zoom pyramids with libvips: 16-bit images mapped to 8-bit through a stored display window.

`write_dzi` writes `<folder>/<name>.dzi` + `<folder>/<name>_files/<level>/<col>_<row>.jpeg`
(tile 254, overlap 1, JPEG Q 85, as OpenSeadragon expects) and a pyramidal TIFF master
`<folder>/<name>.tif` carrying the physical pixel size. The folder is generated under a
temporary name and renamed into place, so a viewer never sees half a pyramid.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .imageio import DisplayWindow, apply_display_window

TILE_PX = 254
OVERLAP_PX = 1
JPEG_QUALITY = 85


def write_dzi(image: np.ndarray, folder: str | os.PathLike, *, name: str = "mosaic", window: DisplayWindow,
              pixel_size_nm: float, master: bool = True) -> Path:
    """Write a DZI pyramid of `image` into a new `folder` (which must not exist yet).

    image : (H, W) uint16 (or uint8), rows × cols. window : the 16-bit range shown as 0..255.
    pixel_size_nm : physical pixel size, stored in the master TIFF's resolution tags.
    """
    import pyvips

    image = np.ascontiguousarray(image)
    if image.ndim != 2 or image.size == 0:
        raise ValueError(f"image must be a non-empty 2-D array, got shape {image.shape}")
    if not pixel_size_nm > 0:
        raise ValueError(f"pixel_size_nm must be > 0, got {pixel_size_nm}")
    folder = Path(folder)
    if folder.exists():
        raise ValueError(f"{folder} already exists: pyramids are written once into a new folder")
    folder.parent.mkdir(parents=True, exist_ok=True)
    display = np.ascontiguousarray(apply_display_window(image, window) if image.dtype != np.uint8 else image)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        vips_image = pyvips.Image.new_from_memory(display.data, display.shape[1], display.shape[0], 1, "uchar")
        vips_image.dzsave(str(staging / name), tile_size=TILE_PX, overlap=OVERLAP_PX, suffix=f".jpeg[Q={JPEG_QUALITY}]",
                          depth="onepixel", layout="dz")
        if master:
            per_mm = 1e6 / pixel_size_nm  # libvips resolution is in pixels per millimetre
            source = pyvips.Image.new_from_memory(image.data, image.shape[1], image.shape[0], 1,
                                                  "ushort" if image.dtype == np.uint16 else "uchar")
            source = source.copy(xres=per_mm, yres=per_mm)
            source.tiffsave(str(staging / f"{name}.tif"), tile=True, pyramid=True, compression="deflate",
                            tile_width=256, tile_height=256, resunit="cm")
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder
