"""SEM image import: TIFF (8/16-bit, multi-page), PNG, JPEG, BMP, GIF, WebP, with pixel size and data bar.

The header is read first and the declared size checked against a limit *before* any pixel is
decoded, so a decompression bomb is refused cheaply. The pixel size comes from the file's own
metadata when present (FEI/Thermo Fisher ``[Scan] PixelWidth`` in metres, Zeiss
``ap_image_pixel_size``, OME ``PhysicalSizeX``, TIFF X/YResolution), else from the caller; if
neither is known it is ``None`` and the caller must ask the user. The instrument's data bar
(a strip of near-constant rows with text at the bottom) is detected and cropped off. Refusals are
for the user: they name the file as the user knows it, never an exception class.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imaging.imageio import ImageFileError, ImageTooLargeError, to_float32

__all__ = ["SemImage", "import_sem", "read_sem", "detect_data_bar", "DEFAULT_MAX_PIXELS", "FORMATS",
           "FORMATS_IN_WORDS"]

DEFAULT_MAX_PIXELS = 200_000_000  # 200 Mpx: far above any SEM frame, far below a bomb
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
# What is read, with the file extensions and media types an upload form offers: TIFF by tifffile,
# the rest by Pillow (keys are Pillow's format names).
FORMATS = {"TIFF": (".tif", ".tiff", "image/tiff"), "PNG": (".png", "image/png"),
           "JPEG": (".jpg", ".jpeg", "image/jpeg"), "BMP": (".bmp", "image/bmp"), "GIF": (".gif", "image/gif"),
           "WEBP": (".webp", "image/webp")}
FORMATS_IN_WORDS = "TIFF, PNG, JPEG, BMP, GIF or WebP"
_LENGTH_TO_NM = {"m": 1e9, "cm": 1e7, "mm": 1e6, "µm": 1e3, "um": 1e3, "μm": 1e3, "micron": 1e3,
                 "nm": 1.0, "pm": 1e-3, "å": 0.1, "a": 0.1}


@dataclass(frozen=True)
class SemImage:
    """An imported SEM image.

    image : (H, W) float32 [0, 1], rows × cols, data bar removed.
    pixel_size_nm : nm per pixel, or None when neither the file nor the caller knows it.
    pixel_size_source : "metadata", "user" or None.
    data_bar_rows : rows cut from the bottom (0 when no data bar was found).
    original_shape : (rows, cols) of the decoded page before cropping.
    page, pages : the page (or channel) used, and how many the file has.
    bit_depth : 8 or 16 (the stored sample depth).
    metadata : JSON-able dict of what the file said (instrument tags, resolution, OME).
    """

    image: np.ndarray
    pixel_size_nm: float | None
    pixel_size_source: str | None
    data_bar_rows: int
    original_shape: tuple[int, int]
    page: int
    pages: int
    bit_depth: int
    metadata: dict = field(default_factory=dict)

    @property
    def crop_box(self) -> tuple[int, int, int, int]:
        """Kept region of the original page as (x0, y0, x1, y1) pixels (end-exclusive)."""
        rows, cols = self.original_shape
        return 0, 0, cols, rows - self.data_bar_rows


def import_sem(
    source: str | os.PathLike | bytes,
    *,
    name: str | None = None,
    pixel_size_nm: float | None = None,
    page: int | None = None,
    channel: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    data_bar: bool | int = True,
) -> SemImage:
    """Read an SEM image file (path or bytes) into a ``SemImage``.

    name : the file's name as the user knows it, for messages (default: the path's name).
    pixel_size_nm : the user's value; it overrides the file's (both are kept in ``metadata``).
    page : TIFF page (or detector channel) index; default the SE channel if the file names its
        channels (``channel`` picks by name, e.g. "SE", "BSE"), else the first page.
    max_pixels : refuse larger images (width × height × channels) before decoding.
    data_bar : True to detect and crop the data bar, False to keep all rows, or an int to crop
        exactly that many rows.
    Raises ``ImageTooLargeError`` / ``ImageFileError`` (both ValueError) with the reason, and
    ``ValueError`` for a page or channel the file does not have.
    """
    if pixel_size_nm is not None and not (np.isfinite(pixel_size_nm) and pixel_size_nm > 0):
        raise ValueError(f"pixel_size_nm must be > 0 nm, got {pixel_size_nm}")
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be >= 1, got {max_pixels}")
    data, stored_name = _read_source(source)
    name = name or stored_name
    if len(data) == 0:
        raise ImageFileError(f"{name}: the file is empty")
    if data[:4] in _TIFF_MAGIC:
        pixels, metadata, page_used, pages, bit_depth = _read_tiff(data, name, page=page, channel=channel,
                                                                   max_pixels=max_pixels)
    else:
        if page not in (None, 0) or channel is not None:
            raise ValueError(f"{name} is not a TIFF: it has one image, so no page or channel can be chosen")
        pixels, metadata, bit_depth = _read_pil(data, name, max_pixels=max_pixels)
        page_used, pages = 0, 1

    if min(pixels.shape[:2]) < MIN_SIDE_PX:
        raise ImageFileError(f"{name} is {pixels.shape[1]} × {pixels.shape[0]} px: too small to pair with a mosaic "
                             f"(at least {MIN_SIDE_PX} × {MIN_SIDE_PX} px)")
    meta_px = metadata.get("pixel_size_nm")
    if meta_px is not None and not plausible_pixel_size_nm(meta_px):
        meta_px = None  # a file's nonsense (0, inf, kilometres) is no pixel size: the user is asked for it
    if pixel_size_nm is not None:
        px, source_kind = float(pixel_size_nm), "user"
    elif meta_px is not None:
        px, source_kind = float(meta_px), "metadata"
    else:
        px, source_kind = None, None

    image = to_float32(pixels)
    if isinstance(data_bar, bool):
        # the instrument's own record of the bar height beats any detector
        declared = metadata.get("fei", {}).get("PrivateFei", {}).get("DatabarHeight")
        if data_bar and isinstance(declared, int) and 0 < declared < image.shape[0] - 8:
            rows_cut = declared
        else:
            rows_cut = detect_data_bar(image) if data_bar else 0
    else:
        rows_cut = int(data_bar)
    if not 0 <= rows_cut < image.shape[0] - 8:
        raise ValueError(f"data_bar rows must be in [0, {image.shape[0] - 8}), got {rows_cut}")
    kept = image[: image.shape[0] - rows_cut] if rows_cut else image
    return SemImage(image=np.ascontiguousarray(kept), pixel_size_nm=px, pixel_size_source=source_kind,
                    data_bar_rows=int(rows_cut), original_shape=tuple(image.shape), page=page_used,
                    pages=pages, bit_depth=bit_depth, metadata=_jsonable(metadata))


def _read_source(source) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), "uploaded file"
    path = Path(source)
    if not path.is_file():
        raise ImageFileError(f"{path.name}: no such file")
    return path.read_bytes(), path.name


def _check_size(name: str, *, width: int, height: int, values: int, max_pixels: int) -> None:
    """Refuse an image whose header declares more than ``max_pixels`` values (all channels counted)."""
    if values > max_pixels:
        channels = values // max(1, width * height)
        size, unit = ((f"{width:,} × {height:,} px", "pixels") if channels == 1
                      else (f"{width:,} × {height:,} px × {channels} channels", "values (pixels × channels)"))
        raise ImageTooLargeError(f"{name}: the image is {size}, which exceeds the limit of {max_pixels:,} {unit}; "
                                 "it was refused without reading its pixels")


def _not_an_image(name: str) -> ImageFileError:
    return ImageFileError(f"{name}: not an image file that can be read here; upload a {FORMATS_IN_WORDS} image")


@contextlib.contextmanager
def _pillow_limit_off():
    """Pillow's own bomb check (179 Mpx) would refuse images that ``max_pixels`` allows; ours decides."""
    from PIL import Image

    old_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit


def _read_pil(data: bytes, name: str, *, max_pixels: int) -> tuple[np.ndarray, dict, int]:
    from PIL import Image

    try:
        with _pillow_limit_off():
            pil = Image.open(io.BytesIO(data), formats=[f for f in FORMATS if f != "TIFF"])  # lazy: the header only
    except Exception as exc:
        raise _not_an_image(name) from exc
    _check_size(name, width=pil.width, height=pil.height, values=pil.width * pil.height * len(pil.getbands()),
                max_pixels=max_pixels)
    metadata: dict = {"format": pil.format, "mode": pil.mode}
    dpi = pil.info.get("dpi")
    if dpi and dpi[0] and float(dpi[0]) > 1.0:  # PIL reports 72/1 dpi defaults as 'no information' poorly
        metadata["resolution_dpi"] = [float(dpi[0]), float(dpi[1])]
        if pil.format == "PNG":  # pHYs is exact (pixels per metre); JPEG dpi is usually a 72/96 default
            metadata["pixel_size_nm"] = 25.4e6 / float(dpi[0])
    try:
        with _pillow_limit_off():
            pil.load()
    except Exception as exc:
        raise _truncated(name) from exc
    if pil.mode in ("I;16", "I;16B", "I;16L", "I"):
        pixels = np.asarray(pil)
        if pixels.dtype != np.uint16:
            pixels = np.clip(pixels, 0, 65535).astype(np.uint16)
        return pixels, metadata, 16
    if pil.mode != "L":
        pil = pil.convert("L")  # SEM images are grey; a colour export is converted by luminance
    return np.asarray(pil), metadata, 8


def _read_tiff(data: bytes, name: str, *, page: int | None, channel: str | None,
               max_pixels: int) -> tuple[np.ndarray, dict, int, int, int]:
    import tifffile

    try:
        tif = tifffile.TiffFile(io.BytesIO(data))
    except Exception as exc:
        raise ImageFileError(f"{name}: a damaged TIFF file (its header cannot be read)") from exc
    with tif:
        try:
            pages = list(tif.pages)
        except Exception as exc:
            raise ImageFileError(f"{name}: a damaged TIFF file (its list of images cannot be read)") from exc
        if not pages:
            raise ImageFileError(f"{name}: a damaged TIFF file (it holds no image)")
        metadata: dict = {"format": "TIFF", "pages": len(pages)}
        channel_names = _ome_channel_names(tif)
        if channel_names:
            metadata["channels"] = channel_names
        index = _choose_page(name, len(pages), channel_names, page, channel)
        chosen = pages[index]
        _check_size(name, width=chosen.imagewidth, height=chosen.imagelength,
                    values=int(np.prod(chosen.shape, dtype=np.float64)), max_pixels=max_pixels)
        metadata.update(_tiff_metadata(tif, chosen))
        try:
            pixels = chosen.asarray()
        except Exception as exc:
            raise _truncated(name) from exc
    pixels = np.squeeze(pixels)
    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4):
        pixels = pixels[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        pixels = pixels.astype(np.uint16 if chosen.bitspersample > 8 else np.uint8)
    if pixels.ndim != 2:
        raise ImageFileError(f"{name}: page {index} is not one grey or colour image (its shape is "
                             f"{' × '.join(map(str, pixels.shape))})")
    if pixels.dtype == np.uint8:
        bit_depth = 8
    elif pixels.dtype == np.uint16:
        bit_depth = 16
    elif np.issubdtype(pixels.dtype, np.integer) or np.issubdtype(pixels.dtype, np.floating):
        lo, hi = float(np.nanmin(pixels)), float(np.nanmax(pixels))
        pixels = ((pixels - lo) / (hi - lo or 1.0) * 65535).astype(np.uint16)
        bit_depth = 16
        metadata["rescaled_from"] = [lo, hi]
    else:
        raise ImageFileError(f"{name}: its pixels are {pixels.dtype} values, which cannot be read as grey levels")
    return pixels, metadata, index, len(pages), bit_depth


def _truncated(name: str) -> ImageFileError:
    return ImageFileError(f"{name}: the image data is truncated or damaged (was the file copied completely?)")


def _choose_page(name: str, count: int, channel_names: list[str], page: int | None,
                 channel: str | None) -> int:
    if page is not None and channel is not None:
        raise ValueError("give either page or channel, not both")
    if channel is not None:
        lowered = [c.lower() for c in channel_names]
        if channel.lower() not in lowered:
            has = f"its channels are {', '.join(channel_names)}" if channel_names else "it names no channels"
            raise ValueError(f"{name} has no channel “{channel}”: {has}")
        return lowered.index(channel.lower())
    if page is not None:
        if not 0 <= page < count:
            pages = "one page (0)" if count == 1 else f"{count} pages (0 to {count - 1})"
            raise ValueError(f"{name} has {pages}: there is no page {page}")
        return page
    for i, label in enumerate(channel_names):  # default: the secondary-electron channel
        if re.fullmatch(r"(se|se\d|sei|etd|inlens|in-lens|tld|secondary.*)", label.strip().lower()):
            return i
    return 0


def _ome_channel_names(tif) -> list[str]:
    xml = tif.ome_metadata if tif.is_ome else None
    if not xml:
        return []
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return []
    return [el.get("Name", "") for el in root.iter() if el.tag.endswith("}Channel") and el.get("Name")]


def _tiff_metadata(tif, page) -> dict:
    """Instrument metadata and pixel size (nm) from FEI, Zeiss, OME and resolution tags, in that order."""
    out: dict = {}
    found: list[tuple[str, float]] = []
    fei = tif.fei_metadata if tif.is_fei else None
    if fei:
        out["fei"] = fei
        for section, key in (("Scan", "PixelWidth"), ("EScan", "PixelWidth"), ("Image", "PixelWidth")):
            value = fei.get(section, {}).get(key)
            if isinstance(value, (int, float)) and value > 0:
                found.append(("fei", float(value) * 1e9))  # metres → nm
                break
    sem = tif.sem_metadata if tif.is_sem else None
    if sem:
        out["zeiss"] = {k: list(v) if isinstance(v, tuple) else v for k, v in sem.items() if k}
        entry = sem.get("ap_image_pixel_size") or sem.get("ap_pixel_size")
        if isinstance(entry, tuple) and len(entry) >= 3 and isinstance(entry[1], (int, float)):
            factor = _LENGTH_TO_NM.get(str(entry[2]).strip().lower())
            if factor:
                found.append(("zeiss", float(entry[1]) * factor))
    if tif.is_ome and tif.ome_metadata:
        px = _ome_pixel_size_nm(tif.ome_metadata)
        if px:
            out["ome_pixel_size_nm"] = px
            found.append(("ome", px))
    tags = page.tags
    if "XResolution" in tags and "ResolutionUnit" in tags:
        num, den = tags["XResolution"].value
        unit = int(tags["ResolutionUnit"].value)
        per_unit = num / den if den else 0.0
        out["resolution"] = {"x": per_unit, "unit": {1: "none", 2: "inch", 3: "centimeter"}.get(unit, unit)}
        if per_unit > 0 and unit in (2, 3):
            nm = (25.4e6 if unit == 2 else 1e7) / per_unit
            # 72/96 dpi are writer defaults, not a measurement
            if not (unit == 2 and round(per_unit) in (72, 96, 150, 300)):
                found.append(("resolution", nm))
    found = [(kind, nm) for kind, nm in found if plausible_pixel_size_nm(nm)]
    if found:
        out["pixel_size_from"], out["pixel_size_nm"] = found[0]
    desc = page.description
    if desc and not desc.lstrip().startswith("<"):
        out["description"] = desc[:2000]
    return out


#: The smallest SEM image taken (px a side): less is no image to register or cut pairs from.
MIN_SIDE_PX = 32

#: Pixel sizes a file may state (nm): 10 pm to 1 mm, as a user may. Outside, the metadata is wrong (an OME
#: PhysicalSizeX of "INF" was stored and made every later read of the SEM images fail).
PLAUSIBLE_PIXEL_SIZE_NM = (0.01, 1e6)


def plausible_pixel_size_nm(value) -> bool:
    low, high = PLAUSIBLE_PIXEL_SIZE_NM
    try:
        return bool(low <= float(value) <= high)  # NaN compares false
    except (TypeError, ValueError):
        return False


def _ome_pixel_size_nm(xml: str) -> float | None:
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return None
    for el in root.iter():
        if el.tag.endswith("}Pixels") and el.get("PhysicalSizeX"):
            unit = el.get("PhysicalSizeXUnit", "µm").strip().lower()
            factor = _LENGTH_TO_NM.get(unit)
            try:
                value = float(el.get("PhysicalSizeX"))
            except ValueError:
                return None
            return value * factor if factor and value > 0 else None
    return None


def detect_data_bar(image: np.ndarray, *, max_fraction: float = 0.3, min_rows: int = 8) -> int:
    """Number of rows at the bottom of ``image`` that form an instrument data bar (0 if none).

    image : (H, W) float32 [0, 1]. A data-bar row is dominated (≥ 60 % of its pixels) by one
    grey level shared with the bottom row — the bar background — while image rows spread over
    many levels (noise, structure). The bar must be ≥ ``min_rows`` tall, ≤ ``max_fraction`` of
    the height, and carry some marks (text or a frame line) that differ from its background.
    """
    image = np.asarray(image, np.float32)
    rows, _ = image.shape
    limit = int(rows * max_fraction)
    if limit < min_rows:
        return 0
    bottom = image[-max(2, min_rows // 2):]
    levels = np.round(bottom * 255).astype(np.int32).ravel()
    background = np.bincount(levels, minlength=256).argmax() / 255.0
    near = np.abs(image[rows - limit:] - background) <= 3 / 255.0
    dominant = near.mean(axis=1) >= 0.6  # per row, bottom `limit` rows
    # allow a few non-dominant rows inside the bar (a frame line, a line of text)
    height = 0
    gap = 0
    for is_bar in dominant[::-1]:
        if is_bar:
            height += 1 + gap
            gap = 0
        else:
            gap += 1
            if gap > 6:
                break
    if height < min_rows or height >= limit:
        return 0
    bar = image[rows - height:]
    marks = np.abs(bar - background) > 0.2
    if not 0.002 <= marks.mean() <= 0.45:
        return 0  # a uniform dark region of the specimen, not a labelled bar
    return int(height)


def _jsonable(value):
    """Recursively convert metadata to JSON-able types (numpy scalars, tuples, bytes, enums)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, bytes):
        return value[:200].decode("latin-1")
    if isinstance(value, np.ndarray):
        return value.tolist() if value.size <= 64 else f"array{value.shape}"
    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)


def read_sem(source: str | os.PathLike | bytes, **options) -> SemImage:
    """Alias of ``import_sem`` (the name the Django service calls)."""
    return import_sem(source, **options)
