"""The PCO.edge 5.5 pixel chain: photons → electrons (QE) → shot + read noise → ADU, 16-bit.

Noise comes from a precomputed bank of standard-normal numbers sliced at random offsets, so a
frame costs a few array operations instead of a Poisson draw per pixel. Shot and read noise
are independent Gaussians, so one slice scaled by ``sqrt(mean + read²)`` carries both; pixels
with fewer than :data:`EXACT_POISSON_BELOW_E` electrons get an exact Poisson draw instead,
where the Gaussian approximation would be poor.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .exceptions import SimParameterError, check_range

EXACT_POISSON_BELOW_E = 20.0
_BANK_MARGIN = 256


@dataclass(frozen=True)
class CameraModel:
    """Published PCO.edge 5.5 figures (see docs/physics.md for sources)."""

    sensor_shape: tuple[int, int] = (2160, 2560)  # (rows, cols)
    pixel_pitch_nm: float = 6_500.0
    quantum_efficiency: float = 0.6
    read_noise_e: float = 1.5
    full_well_e: float = 30_000.0
    conversion_e_per_adu: float = 0.46
    offset_adu: float = 100.0
    dark_current_e_per_s: float = 0.6
    max_fps: float = 100.0
    #: Photons per second reaching one sensor pixel from a reflectance-1 sample at full
    #: illumination (lamp and stops); 10 ms then fills ~60 % of the well.
    photon_flux_per_s: float = 3.0e6

    def __post_init__(self):
        rows, cols = self.sensor_shape
        check_range("sensor_shape[0] (rows)", rows, low=16, high=20_000)
        check_range("sensor_shape[1] (cols)", cols, low=16, high=20_000)
        check_range("pixel_pitch_nm", self.pixel_pitch_nm, low=500, high=100_000, unit="nm")
        check_range("quantum_efficiency", self.quantum_efficiency, low=0, high=1, low_open=True)
        check_range("read_noise_e", self.read_noise_e, low=0, high=100, unit="e-")
        check_range("full_well_e", self.full_well_e, low=100, high=1e7, unit="e-")
        check_range("conversion_e_per_adu", self.conversion_e_per_adu, low=0.01, high=100, unit="e-/ADU")
        check_range("offset_adu", self.offset_adu, low=0, high=10_000, unit="ADU")
        check_range("dark_current_e_per_s", self.dark_current_e_per_s, low=0, high=1e4, unit="e-/s")
        check_range("max_fps", self.max_fps, low=0.1, high=1e5)
        check_range("photon_flux_per_s", self.photon_flux_per_s, low=0, high=1e12)

    @property
    def default_roi(self) -> tuple[int, int, int, int]:
        """(x, y, width, height): 512 × 512 around the sensor centre, where the sphere's image sits."""
        rows, cols = self.sensor_shape
        return ((cols - 512) // 2, (rows - 512) // 2, 512, 512)

    def check_roi(self, roi: tuple[int, int, int, int], binning: int = 1) -> tuple[int, int, int, int]:
        """Validate ``roi = (x, y, width, height)`` in unbinned sensor pixels, 0-based."""
        if len(roi) != 4:
            raise SimParameterError(f"roi={roi!r} must be (x, y, width, height) in sensor pixels")
        x, y, w, h = (int(v) for v in roi)
        rows, cols = self.sensor_shape
        check_range("binning", binning, low=1, high=16)
        check_range("roi width", w, low=binning, high=cols, unit="px")
        check_range("roi height", h, low=binning, high=rows, unit="px")
        check_range("roi x", x, low=0, high=cols - w, unit="px")
        check_range("roi y", y, low=0, high=rows - h, unit="px")
        return (x, y, w, h)


@functools.lru_cache(maxsize=4)
def noise_bank(seed: int, rows: int, cols: int) -> np.ndarray:
    """Standard-normal float32 bank of (rows + margin, cols + margin); cached per seed and size."""
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 0xBA4C])
    return rng.standard_normal((rows + _BANK_MARGIN, cols + _BANK_MARGIN), dtype=np.float32)


def _bank_slice(shape: tuple[int, int], rng: np.random.Generator, seed: int) -> np.ndarray:
    rows, cols = shape
    # Banks come in 512-px steps so neighbouring ROI sizes share one.
    bank = noise_bank(seed, -(-rows // 512) * 512, -(-cols // 512) * 512)
    r0 = int(rng.integers(0, bank.shape[0] - rows + 1))
    c0 = int(rng.integers(0, bank.shape[1] - cols + 1))
    view = bank[r0:r0 + rows, c0:c0 + cols]
    flip = int(rng.integers(0, 4))  # flips multiply the distinct slices by four
    if flip & 1:
        view = view[::-1]
    if flip & 2:
        view = view[:, ::-1]
    return view


def expose(electron_rate: np.ndarray, *, camera: CameraModel, exposure_s: float, binning: int = 1,
           rng: np.random.Generator, noise_seed: int = 0, noise: bool = True) -> np.ndarray:
    """Turn a mean photo-electron rate into a camera frame.

    Parameters
    ----------
    electron_rate : (rows, cols) float32, photo-electrons per second per output (binned) pixel,
        QE already applied.
    exposure_s : exposure time, s (10 µs … 10 s).
    binning : digital b×b binning; read noise adds per sensor pixel, so its variance is b²·read².
    rng : picks the noise-bank offsets (and exact Poisson draws for dim pixels).

    Returns
    -------
    (rows, cols) uint16 ADU: round(e/conversion + offset), clipped to [0, 65535] and to the
    binned full well.
    """
    t = check_range("exposure_s", exposure_s, low=1e-5, high=10.0, unit="s")
    b2 = float(binning * binning)
    mean_e = electron_rate.astype(np.float32, copy=False) * np.float32(t)
    mean_e += np.float32(camera.dark_current_e_per_s * t * b2)
    read_var = np.float32(b2 * camera.read_noise_e ** 2)
    if noise:
        z = _bank_slice(mean_e.shape, rng, noise_seed)
        electrons = mean_e + np.sqrt(mean_e + read_var) * z
        dim = mean_e < EXACT_POISSON_BELOW_E
        if dim.any():
            lam = mean_e[dim]
            electrons[dim] = rng.poisson(lam) + np.sqrt(read_var) * rng.standard_normal(lam.size)
    else:
        electrons = mean_e
    np.minimum(electrons, np.float32(camera.full_well_e * b2), out=electrons)
    adu = electrons * np.float32(1.0 / camera.conversion_e_per_adu) + np.float32(camera.offset_adu + 0.5)
    np.clip(adu, 0, 65535, out=adu)
    return adu.astype(np.uint16)
