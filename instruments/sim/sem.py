"""Secondary-electron SEM images of the same chip, with the instrument's export quirks.

Contrast (see docs/physics.md): material SE yield; the edge effect — a bright outline on the
upper side of every step, one-sided FWHM ≈ 1.18·``edge_width_nm``, saturating with step height;
a darker trough at the foot of the step; directional shading and a soft shadow on the side
away from the Everhart–Thornley detector; a sub-pixel probe blur; Poisson statistics of the
detected electrons; per-line jitter and gain flicker. Calibrated so a flat Si area holds
≈ 30 detected electrons (SNR ≈ 5.5, grey ≈ 54 in 8 bits) and an outline peaks near 4.7× that.
Depth of field is treated as infinite (µm-scale at this working distance), so all heights stay
sharp.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .chip import Layout
from .exceptions import SimParameterError, check_range
from .ssum import render_maps

_MARGIN = 16  # px rendered around the image for gradients, shadows and jitter


@dataclass(frozen=True)
class SEMSettings:
    """An FEI Quanta 450 FEG in SE mode (30 kV, spot 4) and its export."""

    high_voltage_kv: float = 30.0
    spot: float = 4.0
    working_distance_mm: float = 10.0
    probe_sigma_nm: float = 1.5
    flat_electrons: float = 30.0  # detected SE per pixel on flat Si
    grey_per_electron: float = 1.8  # 8-bit grey per detected electron (flat Si → 54)
    edge_gain: float = 3.7  # outline peak = (1 + edge_gain) × flat
    edge_width_nm: float = 100.0
    edge_step_nm: float = 100.0  # step height at which the edge effect reaches tanh(1)
    trough_depth: float = 0.2
    detector_azimuth_deg: float = 0.0  # ETD direction in the image, from +x toward +y
    detector_shading: float = 0.25
    shadow_strength: float = 0.3
    shadow_length_nm: float = 600.0
    detector_elevation_deg: float = 35.0
    line_jitter_px: float = 0.25
    line_gain_noise: float = 0.02
    bit_depth: int = 8
    data_bar: bool = True
    display_width_mm: float = 128.0  # FEI quotes magnification against this screen width

    def __post_init__(self):
        check_range("high_voltage_kv", self.high_voltage_kv, low=0.2, high=30)
        check_range("probe_sigma_nm", self.probe_sigma_nm, low=0, high=1_000, unit="nm")
        check_range("flat_electrons", self.flat_electrons, low=0.1, high=1e6)
        check_range("edge_gain", self.edge_gain, low=0, high=50)
        check_range("edge_width_nm", self.edge_width_nm, low=1, high=10_000, unit="nm")
        check_range("trough_depth", self.trough_depth, low=0, high=0.9)
        check_range("shadow_strength", self.shadow_strength, low=0, high=1)
        check_range("line_jitter_px", self.line_jitter_px, low=0, high=10, unit="px")
        if self.bit_depth not in (8, 16):
            raise SimParameterError(f"bit_depth={self.bit_depth!r} must be 8 or 16")


@dataclass(frozen=True)
class SEMImage:
    """A simulated SEM export.

    image : (rows + data_bar_rows, cols) uint8 or uint16; the data bar is the bottom rows.
    pixel_size_nm : sample nm per pixel (square).
    sem_to_chip : 3×3, SEM pixel (x = col, y = row; centres at integers) → chip (x, y) nm.
    """

    image: np.ndarray
    pixel_size_nm: float
    sem_to_chip: np.ndarray
    data_bar_rows: int
    rotation_deg: float
    settings: SEMSettings

    @property
    def image_area(self) -> np.ndarray:
        """The image without its data bar."""
        return self.image[: self.image.shape[0] - self.data_bar_rows]


def sem_to_chip_matrix(*, centre_xy_nm, shape, pixel_size_nm, rotation_deg) -> np.ndarray:
    rows, cols = shape
    th = math.radians(rotation_deg)
    c, s = math.cos(th) * pixel_size_nm, math.sin(th) * pixel_size_nm
    centre = np.array([[1, 0, -(cols - 1) / 2], [0, 1, -(rows - 1) / 2], [0, 0, 1]])
    return np.array([[c, -s, centre_xy_nm[0]], [s, c, centre_xy_nm[1]], [0, 0, 1]]) @ centre


def se_signal(height_nm: np.ndarray, se_yield: np.ndarray, *, pixel_size_nm: float,
              settings: SEMSettings) -> np.ndarray:
    """Mean detected SE per pixel, (rows, cols) float32, before noise and scan distortions."""
    p = pixel_size_nm
    sig_px = settings.edge_width_nm / p
    grad_x = cv2.Sobel(height_nm, cv2.CV_32F, 1, 0, ksize=3, scale=1 / (8 * p))
    grad_y = cv2.Sobel(height_nm, cv2.CV_32F, 0, 1, ksize=3, scale=1 / (8 * p))
    slope = cv2.magnitude(grad_x, grad_y)
    # ∫|∇h| across a step is its height, so this blur reads ≈ step height / edge_step_nm.
    band = cv2.GaussianBlur(slope, (0, 0), sig_px) * np.float32(math.sqrt(2 * math.pi) * settings.edge_width_nm
                                                                 / settings.edge_step_nm)
    edge = np.tanh(band)
    upper = 0.5 + 0.5 * np.tanh((height_nm - cv2.GaussianBlur(height_nm, (0, 0), sig_px)) / np.float32(15.0))
    signal = se_yield * (1 + settings.edge_gain * edge * upper) * (1 - settings.trough_depth * edge * (1 - upper))
    az = math.radians(settings.detector_azimuth_deg)
    facing = -(cv2.GaussianBlur(grad_x, (0, 0), max(sig_px / 2, 0.5)) * math.cos(az)
               + cv2.GaussianBlur(grad_y, (0, 0), max(sig_px / 2, 0.5)) * math.sin(az))
    signal *= 1 + settings.detector_shading * np.tanh(facing)
    if settings.shadow_strength > 0:
        excess = np.zeros_like(height_nm)
        rise = math.tan(math.radians(settings.detector_elevation_deg))
        steps = max(1, min(12, int(settings.shadow_length_nm / p)))
        for k in range(1, steps + 1):
            t_nm = settings.shadow_length_nm * k / steps
            dx, dy = round(t_nm / p * math.cos(az)), round(t_nm / p * math.sin(az))
            ahead = np.roll(height_nm, (-dy, -dx), axis=(0, 1))  # the surface toward the detector
            np.maximum(excess, ahead - height_nm - np.float32(t_nm * rise), out=excess)
        signal *= 1 - settings.shadow_strength * np.clip(excess / np.float32(200.0), 0, 1)
    return (signal * np.float32(settings.flat_electrons)).astype(np.float32)


def simulate_sem_image(layout: Layout, *, centre_xy_nm: tuple[float, float], shape: tuple[int, int],
                       pixel_size_nm: float, rotation_deg: float = 0.0, settings: SEMSettings | None = None,
                       seed: int = 0) -> SEMImage:
    """Image ``shape = (rows, cols)`` chip pixels centred on chip ``centre_xy_nm`` at
    ``pixel_size_nm``, the scan rotated by ``rotation_deg`` from the chip's axes."""
    settings = settings or SEMSettings()
    rows, cols = (int(shape[0]), int(shape[1]))
    check_range("SEM rows", rows, low=16, high=16_384, unit="px")
    check_range("SEM cols", cols, low=16, high=16_384, unit="px")
    p = check_range("pixel_size_nm", pixel_size_nm, low=0.5, high=10_000, unit="nm")
    check_range("rotation_deg", rotation_deg, low=-180, high=180, unit="deg")
    to_chip = sem_to_chip_matrix(centre_xy_nm=centre_xy_nm, shape=(rows, cols), pixel_size_nm=p,
                                 rotation_deg=rotation_deg)
    corners = to_chip @ np.array([[0, cols - 1, 0, cols - 1], [0, 0, rows - 1, rows - 1], [1, 1, 1, 1]])
    bx0, by0, bx1, by1 = layout.bounds_nm
    if corners[0].min() < bx0 or corners[0].max() > bx1 or corners[1].min() < by0 or corners[1].max() > by1:
        raise SimParameterError(
            f"SEM field (centre {tuple(round(v) for v in centre_xy_nm)} nm, {cols}×{rows} px at {p:g} nm) "
            f"must lie inside the chip, x in [{bx0:g}, {bx1:g}] and y in [{by0:g}, {by1:g}] nm")
    m = _MARGIN
    shift = np.array([[1, 0, -m], [0, 1, -m], [0, 0, 1]], float)
    height, _, se_yield = render_maps(layout, grid_to_chip=to_chip @ shift, shape=(rows + 2 * m, cols + 2 * m))
    mean = se_signal(height, se_yield, pixel_size_nm=p, settings=settings)
    probe_px = settings.probe_sigma_nm / p
    if probe_px > 0.3:
        mean = cv2.GaussianBlur(mean, (0, 0), probe_px)
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 0x5E3])
    # Scan-line jitter: each line starts a little early or late; slow drift on top.
    jitter = rng.normal(0, settings.line_jitter_px, rows + 2 * m) + np.cumsum(rng.normal(0, 0.02, rows + 2 * m))
    map_x = (np.arange(cols + 2 * m, dtype=np.float32)[None, :] + jitter[:, None].astype(np.float32))
    map_y = np.repeat(np.arange(rows + 2 * m, dtype=np.float32)[:, None], cols + 2 * m, axis=1)
    mean = cv2.remap(mean, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    mean = mean[m:m + rows, m:m + cols] * (1 + rng.normal(0, settings.line_gain_noise, rows))[:, None]
    electrons = rng.poisson(np.maximum(mean, 0)).astype(np.float32)
    full = 255.0 if settings.bit_depth == 8 else 65535.0
    grey_scale = settings.grey_per_electron * (1.0 if settings.bit_depth == 8 else 257.0)
    image = np.clip(np.rint(electrons * grey_scale), 0, full)
    image = image.astype(np.uint8 if settings.bit_depth == 8 else np.uint16)
    bar_rows = 0
    if settings.data_bar:
        bar = data_bar(cols=cols, pixel_size_nm=p, settings=settings, dtype=image.dtype)
        bar_rows = bar.shape[0]
        image = np.vstack([image, bar])
    return SEMImage(image, p, to_chip, bar_rows, float(rotation_deg), settings)


def data_bar(*, cols: int, pixel_size_nm: float, settings: SEMSettings, dtype) -> np.ndarray:
    """The black strip FEI instruments burn under the image: HV, WD, spot, mag, HFW, scale bar."""
    rows = max(16, round(cols * 59 / 1024))
    bar = np.zeros((rows, cols), np.uint8)
    hfw_um = cols * pixel_size_nm / 1000
    mag = settings.display_width_mm * 1000 / hfw_um
    text = (f"HV {settings.high_voltage_kv:.2f} kV  WD {settings.working_distance_mm:.1f} mm  "
            f"spot {settings.spot:g}  mag {mag:,.0f}x  HFW {hfw_um:.1f} um  det ETD  mode SE")
    scale = rows / 90
    cv2.putText(bar, text, (4, int(rows * 0.62)), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, 1, cv2.LINE_AA)
    nice = [10 ** e * k for e in range(-1, 5) for k in (1, 2, 5)]
    length_um = max([v for v in nice if v <= 0.2 * hfw_um] or [nice[0]])
    length_px = int(round(length_um * 1000 / pixel_size_nm))
    x1 = cols - 8
    y = int(rows * 0.7)
    bar[y - 2:y + 2, max(0, x1 - length_px):x1] = 255
    label = f"{length_um:g} um"
    cv2.putText(bar, label, (max(0, x1 - length_px), int(rows * 0.45)), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, 1,
                cv2.LINE_AA)
    if dtype == np.uint16:
        return bar.astype(np.uint16) * 257
    return bar


def fei_metadata_text(sem: SEMImage) -> str:
    """INI text as FEI instruments store it in TIFF tag 34682 (read by tifffile's fei_metadata)."""
    s = sem.settings
    p_m = sem.pixel_size_nm * 1e-9
    rows, cols = sem.image_area.shape
    lines = ["[User]", "Date=01/01/2026", "Time=12:00:00 PM", "User=ssumweb-sim", "[System]",
             "Type=SEM", "Dnumber=Quanta 450 FEG (simulated)", "[Beam]",
             f"HV={s.high_voltage_kv * 1000:.0f}", f"Spot={s.spot:g}", "[Scan]", f"PixelWidth={p_m:.6e}",
             f"PixelHeight={p_m:.6e}", f"HorFieldsize={cols * p_m:.6e}", f"VerFieldsize={rows * p_m:.6e}",
             f"Rotation={math.radians(sem.rotation_deg):.6f}", "[Stage]", f"WorkingDistance={s.working_distance_mm * 1e-3:.6e}",
             "[Detectors]", "Name=ETD", "Mode=SE", "[PrivateFei]", f"DatabarHeight={sem.data_bar_rows}",
             "DatabarStartFlag=1", ""]
    return "\r\n".join(lines)


def write_sem_tiff(path: str | os.PathLike, sem: SEMImage) -> Path:
    """Write a TIFF with FEI metadata (``[Scan] PixelWidth`` in metres) and resolution tags
    (pixels per cm); written to a temporary name and renamed into place."""
    import tifffile

    path = Path(path)
    px_per_cm = 1e7 / sem.pixel_size_nm
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".tif", dir=path.parent)
    os.close(fd)
    try:
        tifffile.imwrite(tmp, sem.image, photometric="minisblack", resolution=(px_per_cm, px_per_cm),
                         resolutionunit="CENTIMETER",
                         extratags=[(34682, "s", 0, fei_metadata_text(sem), True)])
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
