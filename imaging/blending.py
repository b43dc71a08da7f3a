"""Feather blending of placed frames into one mosaic.

Each frame is weighted by its pixels' distance to the edge of the circular field of view, so in
an overlap the frame whose centre is nearer dominates and the hand-over is a smooth ramp (no
seam, even where the flat-field correction left a small step). Frames land at sub-pixel
positions (bilinear resampling of the weighted frame and of its weight).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

__all__ = ["feather_weight", "Canvas"]


def feather_weight(mask: np.ndarray, *, ramp_px: float | None = None) -> np.ndarray:
    """(H, W) float32 weight: distance (px) to the nearest pixel outside ``mask``, 0 outside.

    ramp_px : if given, the weight saturates at this distance (a plateau in the middle of the
        field of view); by default it keeps rising to the centre.
    """
    mask = np.asarray(mask, bool)
    distance = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1].astype(np.float32)
    if ramp_px is not None:
        if ramp_px <= 0:
            raise ValueError(f"ramp_px must be > 0, got {ramp_px}")
        distance = np.minimum(distance, np.float32(ramp_px))
    return distance


@dataclass
class Canvas:
    """Weighted accumulators of a growing mosaic, in mosaic pixels (row 0 = ``origin_px`` y).

    origin_px : (x, y) int, the mosaic-coordinate of canvas pixel (0, 0).
    """

    origin_px: np.ndarray
    numerator: np.ndarray
    denominator: np.ndarray

    @classmethod
    def empty(cls, origin_px, shape: tuple[int, int]) -> Canvas:
        return cls(np.asarray(origin_px, int), np.zeros(shape, np.float32), np.zeros(shape, np.float32))

    @property
    def shape(self) -> tuple[int, int]:
        return self.numerator.shape

    def ensure(self, x0: int, y0: int, x1: int, y1: int, *, margin: int = 0) -> bool:
        """Grow so mosaic box [x0, x1) × [y0, y1) fits; returns True if the canvas was reallocated."""
        ox, oy = self.origin_px
        h, w = self.shape
        if x0 >= ox and y0 >= oy and x1 <= ox + w and y1 <= oy + h:
            return False
        nx0, ny0 = min(ox, x0 - margin), min(oy, y0 - margin)
        nx1, ny1 = max(ox + w, x1 + margin), max(oy + h, y1 + margin)
        num = np.zeros((ny1 - ny0, nx1 - nx0), np.float32)
        den = np.zeros_like(num)
        num[oy - ny0: oy - ny0 + h, ox - nx0: ox - nx0 + w] = self.numerator
        den[oy - ny0: oy - ny0 + h, ox - nx0: ox - nx0 + w] = self.denominator
        self.origin_px, self.numerator, self.denominator = np.array([nx0, ny0]), num, den
        return True

    def add(self, frame: np.ndarray, weight: np.ndarray, position_px, *, margin: int = 0):
        """Blend ``frame`` (H, W) float32 with ``weight`` at mosaic ``position_px`` (x, y).

        Returns the touched box (x, y, width, height) in mosaic pixels and whether the canvas grew.
        """
        h, w = frame.shape
        x, y = float(position_px[0]), float(position_px[1])
        ix, iy = int(np.floor(x)), int(np.floor(y))
        fx, fy = x - ix, y - iy
        grew = self.ensure(ix, iy, ix + w + 1, iy + h + 1, margin=margin)
        shift = np.float32([[1, 0, fx], [0, 1, fy]])
        size = (w + 1, h + 1)
        weighted = cv2.warpAffine(frame * weight, shift, size, flags=cv2.INTER_LINEAR, borderValue=0)
        spread = cv2.warpAffine(weight, shift, size, flags=cv2.INTER_LINEAR, borderValue=0)
        r0, c0 = iy - self.origin_px[1], ix - self.origin_px[0]
        self.numerator[r0: r0 + h + 1, c0: c0 + w + 1] += weighted
        self.denominator[r0: r0 + h + 1, c0: c0 + w + 1] += spread
        return (ix, iy, w + 1, h + 1), grew

    def image(self) -> np.ndarray:
        """(rows, cols) float32 mosaic; 0 where no frame reached."""
        out = np.zeros_like(self.numerator)
        covered = self.denominator > 1e-6
        out[covered] = self.numerator[covered] / self.denominator[covered]
        return out
