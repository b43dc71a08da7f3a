"""Test targets and measurements shared by the simulator tests (known truth, no chip)."""

from __future__ import annotations

import numpy as np

from instruments.sim.camera import CameraModel
from instruments.sim.chip import Block, BlockLayout, Layer, Material
from instruments.sim.optics import SSUMOptics
from instruments.sim.ssum import Illumination, OpticalState, electron_rate

#: A chrome-on-glass resolution target in reflection: flat, so only lateral resolution is probed.
GLASS = Material("glass", reflectance=0.04, se_yield=1.0)
CHROME = Material("Cr", reflectance=0.60, se_yield=1.3)
FLAT_TARGET_LAYERS = (Layer("glass", 0.0, GLASS), Layer("chrome", 0.0, CHROME))

CHIP = (0.0, 0.0, 400_000.0, 400_000.0)
SENSOR_CENTRE = (1279.5, 1079.5)  # (x, y): the sphere's image on the default sensor


def grating(centre_xy_nm, *, pitch_nm: float, lines: int = 7, length_nm: float = 2_000.0,
            layer: int = 1, layers=FLAT_TARGET_LAYERS, extra=()) -> BlockLayout:
    """``lines`` vertical lines of width pitch/2 every ``pitch_nm`` centred on ``centre_xy_nm``."""
    cx, cy = centre_xy_nm
    starts = cx - pitch_nm * lines / 2 + pitch_nm / 4 + pitch_nm * np.arange(lines)
    edges = np.column_stack([starts, starts + pitch_nm / 2]).ravel()
    block = Block.from_edges(layer, edges, (cy - length_nm / 2, cy + length_nm / 2))
    return BlockLayout((block, *extra), CHIP, layers)


def michelson(image: np.ndarray, *, pixel_size_nm: float, pitch_nm: float) -> float:
    """(max − min)/(max + min) of the column profile, averaged along the lines over the middle
    third of the rows, within ±1.5 periods of the image's centre column, after dividing out a
    straight-line fit (vignetting is a slope, not a modulation)."""
    rows, cols = image.shape
    profile = image[rows // 3: 2 * rows // 3].mean(axis=0)
    half = max(2, int(round(1.5 * pitch_nm / pixel_size_nm)))
    inner = profile[cols // 2 - half: cols // 2 + half + 1]
    x = np.arange(inner.size)
    inner = inner / np.polyval(np.polyfit(x, inner, 1), x)
    return float((inner.max() - inner.min()) / (inner.max() + inner.min()))


def clean_rate(layout, *, centre_nm, camera_xy, half_px: int = 48, gap_nm: float = 0.0, focal_plane_nm=None,
               optics: SSUMOptics | None = None, contact_height_nm: float = 0.0, camera: CameraModel | None = None):
    """Noise-free e⁻/s in a (2·half_px)² ROI centred on sensor pixel ``camera_xy``, sphere on
    chip ``centre_nm``, no rotation, uniform illumination. Default focus: the virtual image of
    the contact plane."""
    optics = optics or SSUMOptics()
    camera = camera or CameraModel()
    if focal_plane_nm is None:
        focal_plane_nm = optics.radius_nm - optics.image_distance_nm(optics.radius_nm + gap_nm)
    state = OpticalState(centre_xy_nm=centre_nm, rotation_deg=0.0, gap_nm=gap_nm,
                         contact_height_nm=contact_height_nm, focal_plane_nm=focal_plane_nm)
    roi = (int(round(camera_xy[0])) - half_px, int(round(camera_xy[1])) - half_px, 2 * half_px, 2 * half_px)
    return electron_rate(layout, optics=optics, camera=camera, illumination=Illumination(nonuniformity=0.0),
                         state=state, sphere_centre_px=SENSOR_CENTRE, roi=roi)
