"""Image I/O and the one place where pixel values change representation.

Conventions (ARCHITECTURE.md): images are ``uint16`` on disk, ``float32`` in [0, 1] inside
algorithms, and 8-bit only for display (Deep Zoom tiles, PNG previews). Every file is written
to a temporary name in the destination folder, flushed to disk and renamed into place, so a
crash never leaves half a file behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "ImagingError",
    "ImageFileError",
    "ImageTooLargeError",
    "DisplayWindow",
    "to_float32",
    "to_uint16",
    "to_uint8",
    "display_window",
    "apply_display_window",
    "atomic_path",
    "atomic_write_bytes",
    "write_image16",
    "read_image16",
]


class ImagingError(Exception):
    """Base of every error the imaging core raises on purpose."""


class ImageFileError(ValueError, ImagingError):
    """A file is not a readable image: corrupt, truncated, unsupported or not an image at all."""


class ImageTooLargeError(ImageFileError):
    """An image's declared dimensions exceed the configured limit (refused before decoding)."""


@dataclass(frozen=True)
class DisplayWindow:
    """Grey levels mapped to black (``low``) and white (``high``), in the image's own units.

    For a ``uint16`` image the window is in counts (0–65535); for ``float32`` in [0, 1].
    """

    low: float
    high: float

    def to_dict(self) -> dict:
        return {"low": float(self.low), "high": float(self.high)}


def to_float32(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as float32 in [0, 1].

    ``uint8`` is divided by 255, ``uint16`` by 65535, ``bool`` becomes 0/1; float input is
    clipped to [0, 1] (NaN → 0). Other integer types raise ``ValueError``.
    """
    image = np.asarray(image)
    # One new array, worked on in place: a mosaic's temporaries cost as much as the mosaic.
    if image.dtype in (np.uint16, np.uint8):
        out = image.astype(np.float32)
        out /= np.float32(65535.0 if image.dtype == np.uint16 else 255.0)
        return out
    if image.dtype == np.bool_:
        return image.astype(np.float32)
    if np.issubdtype(image.dtype, np.floating):
        out = np.nan_to_num(image.astype(np.float32, copy=True), copy=False, nan=0.0, posinf=1.0, neginf=0.0)
        return np.clip(out, 0.0, 1.0, out=out)
    raise ValueError(f"image dtype must be uint8, uint16, bool or float, got {image.dtype}")


def to_uint16(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as uint16: float in [0, 1] is scaled by 65535 and rounded (clipped)."""
    image = np.asarray(image)
    if image.dtype == np.uint16:
        return image
    if image.dtype == np.uint8:
        return image.astype(np.uint16) * np.uint16(257)  # 255 → 65535 exactly
    if image.ndim == 0:
        return to_uint16(image.reshape(1))[0]
    # A few million pixels at a time: converting a mosaic whole made four float copies of it.
    out = np.empty(image.shape, np.uint16)
    step = max(1, _CHUNK_PX // max(1, image[0].size if len(image) else 1))
    for start in range(0, len(image), step):
        block = to_float32(image[start:start + step])
        block *= np.float32(65535.0)
        out[start:start + step] = np.rint(block, out=block)
    return out


_CHUNK_PX = 1 << 22


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as uint8 with a full-range mapping (no windowing); see ``apply_display_window``."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    return np.round(to_float32(image) * np.float32(255.0)).astype(np.uint8)


def display_window(
    image: np.ndarray,
    *,
    low_percentile: float = 0.5,
    high_percentile: float = 99.5,
    mask: np.ndarray | None = None,
) -> DisplayWindow:
    """Display window from percentiles of ``image`` (optionally only where ``mask`` is true).

    Percentiles are computed on at most ~1 Mpx (a regular subsample) so the call stays cheap
    for giant mosaics. A flat image gets a window of width 1 count (or 1/65535) to avoid /0.
    """
    if not 0.0 <= low_percentile < high_percentile <= 100.0:
        raise ValueError(
            "need 0 <= low_percentile < high_percentile <= 100, "
            f"got {low_percentile}, {high_percentile}"
        )
    image = np.asarray(image)
    values = image[mask] if mask is not None else image.reshape(-1)
    if values.size == 0:
        raise ValueError("display_window: no pixels to measure (empty image or empty mask)")
    step = max(1, values.size // 1_000_000)
    low, high = np.percentile(values[::step].astype(np.float64), [low_percentile, high_percentile])
    if high <= low:
        high = low + (1.0 if np.issubdtype(image.dtype, np.integer) else 1.0 / 65535.0)
    return DisplayWindow(float(low), float(high))


def apply_display_window(image: np.ndarray, window: DisplayWindow) -> np.ndarray:
    """Map ``image`` linearly so ``window.low`` → 0 and ``window.high`` → 255; returns (H, W) uint8."""
    if not window.high > window.low:
        raise ValueError(f"display window needs high > low, got {window}")
    scale = 255.0 / (window.high - window.low)
    out = (np.asarray(image, dtype=np.float32) - np.float32(window.low)) * np.float32(scale)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success fsync it and rename it onto ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched.
    ``suffix`` (default: ``path``'s suffix) lets writers that choose a format by extension work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{path.name}.tmp-", suffix=path.suffix if suffix is None else suffix, dir=path.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~process_umask())  # mkstemp's 0600 would hide it from a proxy serving media
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def process_umask() -> int:
    """The process umask, read without setting it (os.umask would race other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not all platforms allow opening a directory.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_image16(
    path: str | os.PathLike,
    image: np.ndarray,
    *,
    pixel_size_nm: float | None = None,
    description: str | None = None,
) -> Path:
    """Write a single-channel image as 16-bit TIFF (``.tif``/``.tiff``) or PNG (``.png``), atomically.

    ``image`` : (H, W) uint16, or float in [0, 1] (converted with ``to_uint16``).
    ``pixel_size_nm`` goes into the TIFF X/YResolution tags (pixels per centimetre), so
    ``imaging.sem_import`` and other readers recover it; PNG stores it as pHYs (pixels per metre).
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D (H, W), got shape {image.shape}")
    if pixel_size_nm is not None and not pixel_size_nm > 0:
        raise ValueError(f"pixel_size_nm must be > 0, got {pixel_size_nm}")
    data = to_uint16(image)
    path = Path(path)
    ext = path.suffix.lower()
    if ext in (".tif", ".tiff"):
        import tifffile

        kwargs: dict = {"photometric": "minisblack", "compression": "zlib"}
        if pixel_size_nm is not None:
            per_cm = 1e7 / pixel_size_nm
            kwargs.update(resolution=(per_cm, per_cm), resolutionunit="CENTIMETER")
        if description is not None:
            kwargs["description"] = description
        with atomic_path(path) as tmp:
            tifffile.imwrite(tmp, data, **kwargs)
    elif ext == ".png":
        from PIL import Image

        pil = Image.fromarray(data)
        kwargs = {}
        if pixel_size_nm is not None:
            kwargs["dpi"] = (25.4e6 / pixel_size_nm,) * 2
        with atomic_path(path) as tmp:
            pil.save(tmp, format="PNG", **kwargs)
    else:
        raise ValueError(f"path must end in .tif, .tiff or .png, got {path.name!r}")
    return path


def read_image16(path: str | os.PathLike) -> np.ndarray:
    """Read a single-channel 8- or 16-bit TIFF/PNG and return (H, W) uint16 (8-bit is scaled ×257).

    Raises ``ImageFileError`` for missing, unreadable or multi-channel files.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageFileError(f"{path.name}: no such file")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            data = tifffile.imread(path, key=0)
        else:
            from PIL import Image

            with Image.open(path) as pil:
                data = np.asarray(pil)
    except ImageFileError:
        raise
    except Exception as exc:  # codecs raise many types; one clear error for the caller
        raise ImageFileError(f"{path.name}: cannot read image ({exc})") from exc
    data = np.squeeze(data)
    if data.ndim != 2:
        raise ImageFileError(f"{path.name}: expected one channel, got shape {data.shape}")
    if data.dtype == np.int32 and data.max(initial=0) <= 65535 and data.min(initial=0) >= 0:
        data = data.astype(np.uint16)  # PIL's 'I' mode for some 16-bit PNGs
    if data.dtype not in (np.uint8, np.uint16):
        raise ImageFileError(f"{path.name}: expected 8- or 16-bit pixels, got {data.dtype}")
    return to_uint16(data)
