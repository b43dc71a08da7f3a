"""Where the engine puts captured frames: the ``FrameStore`` protocol and two plain stores.

The Django shell implements its own store (file under ``MEDIA_ROOT/scans/<id>/`` + a DB row);
the two here serve tests, the benchmark and notebooks. ``save`` must make the frame durable —
file written to a temporary name and renamed, and recorded — before it returns, because the
engine moves on as soon as it does.
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import tifffile

__all__ = ["CapturedFrame", "FrameStore", "MemoryFrameStore", "DirectoryFrameStore"]


@dataclass(frozen=True)
class CapturedFrame:
    """One saved grid point.

    index, row, col : grid position (acquisition order, row along y, col along x).
    commanded_xy_nm : (x, y) the plan asked for; measured_xyz_nm : (x, y, z) piezo sensors at capture.
    focus_nm : focus-stage position of the saved frame (best focus); focus_score : its sharpness.
    deflection_nm : cantilever deflection when contact was reached (the contact force).
    contact_z_nm : piezo Z where the set-point was reached.
    exposure_s : exposure; captured_at : aware UTC datetime.
    image : (rows, cols) uint16, the frame (EDF-fused when a Z-stack was taken).
    z_stack : tuple of (rows, cols) uint16 planes, or None; z_positions_nm : focus position of each plane.
    """

    index: int
    row: int
    col: int
    commanded_xy_nm: tuple[float, float]
    measured_xyz_nm: tuple[float, float, float]
    focus_nm: float
    focus_score: float
    deflection_nm: float
    contact_z_nm: float
    exposure_s: float
    captured_at: datetime
    image: np.ndarray
    z_stack: tuple[np.ndarray, ...] | None = None
    z_positions_nm: tuple[float, ...] = ()

    def metadata(self) -> dict:
        """Everything but the pixels, JSON-ready."""
        return {"index": self.index, "row": self.row, "col": self.col,
                "commanded_xy_nm": list(self.commanded_xy_nm), "measured_xyz_nm": list(self.measured_xyz_nm),
                "focus_nm": self.focus_nm, "focus_score": self.focus_score, "deflection_nm": self.deflection_nm,
                "contact_z_nm": self.contact_z_nm, "exposure_s": self.exposure_s,
                "captured_at": self.captured_at.isoformat(), "shape": list(self.image.shape),
                "z_positions_nm": list(self.z_positions_nm)}


@runtime_checkable
class FrameStore(Protocol):
    def saved_indices(self) -> set[int]:
        """Grid indices already durable (file on disk and recorded)."""
        ...

    def save(self, frame: CapturedFrame) -> None:
        """Write the frame atomically and record it before returning."""
        ...


class MemoryFrameStore:
    """Frames kept in a dict; ``saves`` counts every call so tests can spot duplicates."""

    def __init__(self):
        self.frames: dict[int, CapturedFrame] = {}
        self.saves: list[int] = []
        self._lock = threading.Lock()

    def saved_indices(self) -> set[int]:
        with self._lock:
            return set(self.frames)

    def save(self, frame: CapturedFrame) -> None:
        with self._lock:
            self.saves.append(frame.index)
            self.frames[frame.index] = frame


_NAME = re.compile(r"^frame_(\d{6})\.tif$")


class DirectoryFrameStore:
    """One 16-bit TIFF per frame (``frame_000012.tif``, metadata JSON in the description) and,
    for a Z-stack, ``frame_000012_zstack.tif`` written *before* the frame, so a frame file on
    disk means the point is complete. Each file goes to ``*.tmp`` then ``os.replace``.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, index: int) -> Path:
        return self.root / f"frame_{index:06d}.tif"

    def saved_indices(self) -> set[int]:
        return {int(m.group(1)) for p in self.root.iterdir() if (m := _NAME.match(p.name))}

    def save(self, frame: CapturedFrame) -> None:
        meta = json.dumps(frame.metadata())
        if frame.z_stack is not None:
            stack_path = self.root / f"frame_{frame.index:06d}_zstack.tif"
            _write_atomic(stack_path, lambda p: tifffile.imwrite(p, np.stack(frame.z_stack), photometric="minisblack", description=meta))
        _write_atomic(self.path(frame.index),
                      lambda p: tifffile.imwrite(p, np.asarray(frame.image, dtype=np.uint16), description=meta))

    def load(self, index: int) -> tuple[np.ndarray, dict]:
        """Return ``(image (rows, cols) uint16, metadata dict)`` of a saved frame."""
        with tifffile.TiffFile(self.path(index)) as tif:
            return tif.asarray(), json.loads(tif.pages[0].description)


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    write(tmp)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
