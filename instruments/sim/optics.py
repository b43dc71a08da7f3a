"""Ball-lens optics of the microsphere superlens and the objective behind it.

All lengths are nm. The sphere (diameter ``D``, radius ``R``) sits on the sample; a sample
plane at distance ``s`` below the sphere's centre (``s = R + gap`` for the surface in contact
or at a gap) forms a virtual, upright image at ``V(s) = f·s/(f − s)`` below the centre with
lateral magnification ``M(s) = f/(f − s)`` (paraxial ball lens, focal length measured from the
centre ``f = n·D / (4(n − 1))``, ``n`` the relative index). Because the paraxial model with the
real glass index underestimates measured superlens magnifications, the default is a calibrated
magnification at contact (×4) from which an *effective* relative index follows:
``n_eff = 2M₀/(M₀ + 1)``. Formulas and sources: docs/physics.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .exceptions import SimParameterError, check_range

#: σ of the Gaussian PSF per unit of quoted resolution d: a black/white bar grating of period d
#: keeps Michelson contrast 0.2 when (4/π)·exp(−2π²σ²/d²) = 0.2, i.e. σ ≈ 0.306·d
#: (docs/physics.md explains the choice against the Airy fit σ ≈ 0.344·d).
RESOLVED_CONTRAST = 0.2
SIGMA_PER_RESOLUTION = math.sqrt(math.log((4 / math.pi) / RESOLVED_CONTRAST) / (2 * math.pi ** 2))


@dataclass(frozen=True)
class SSUMOptics:
    """The sphere, the objective and the illumination spectrum (defaults: the paper's bench)."""

    sphere_diameter_nm: float = 57_000.0
    sphere_index: float = 1.9
    #: Calibrated virtual-image magnification at contact; used when ``medium_index`` is None.
    magnification: float = 4.0
    #: Real medium index; if given, M follows from paraxial theory instead of ``magnification``.
    medium_index: float | None = None
    wavelength_nm: float = 550.0
    #: 1σ width of the (Gaussian) Köhler white-light spectrum around ``wavelength_nm``.
    bandwidth_nm: float = 60.0
    objective_na: float = 0.55
    objective_magnification: float = 50.0
    #: Resolution at the FOV edge divided by the centre's (spherical aberration, coma).
    edge_resolution_factor: float = 2.5
    #: Best-focus plane at the FOV edge lies this much deeper (sample space): field curvature.
    field_curvature_nm: float = 60.0
    #: rms spread of best focus over the spectrum, sample space (longitudinal chromatic).
    chromatic_focus_rms_nm: float = 8.0
    #: Fractional brightness loss at the FOV edge (vignetting inside the sphere).
    vignetting: float = 0.35
    #: Gap over which the near-field resolution gain halves (phenomenological).
    gap_resolution_scale_nm: float = 550.0

    def __post_init__(self):
        check_range("sphere_diameter_nm", self.sphere_diameter_nm, low=1_000, high=1_000_000, unit="nm")
        check_range("sphere_index", self.sphere_index, low=1.0, high=4.0, low_open=True)
        check_range("magnification", self.magnification, low=1.0, high=50.0, low_open=True)
        if self.medium_index is not None:
            check_range("medium_index", self.medium_index, low=1.0, high=self.sphere_index,
                        high_open=True)
            if self.relative_index >= 2.0:
                raise SimParameterError(
                    f"sphere_index/medium_index={self.relative_index:.3f} must be in (1, 2): at 2 or "
                    "more the sphere focuses inside itself and forms no virtual image of the sample")
        check_range("wavelength_nm", self.wavelength_nm, low=300, high=1100, unit="nm")
        check_range("bandwidth_nm", self.bandwidth_nm, low=0, high=300, unit="nm")
        check_range("objective_na", self.objective_na, low=0.05, high=0.95)
        check_range("objective_magnification", self.objective_magnification, low=1, high=200)
        check_range("edge_resolution_factor", self.edge_resolution_factor, low=1, high=20)
        check_range("field_curvature_nm", self.field_curvature_nm, low=-5_000, high=5_000, unit="nm")
        check_range("chromatic_focus_rms_nm", self.chromatic_focus_rms_nm, low=0, high=5_000, unit="nm")
        check_range("vignetting", self.vignetting, low=0, high=0.95)
        check_range("gap_resolution_scale_nm", self.gap_resolution_scale_nm, low=1, high=1e6, unit="nm")

    # ------------------------------------------------------------- ball lens

    @property
    def radius_nm(self) -> float:
        return 0.5 * self.sphere_diameter_nm

    @property
    def relative_index(self) -> float:
        """n = n_s/n_m, or the effective value that reproduces the calibrated magnification."""
        if self.medium_index is not None:
            return self.sphere_index / self.medium_index
        m = self.magnification
        return 2 * m / (m + 1)

    @property
    def focal_length_nm(self) -> float:
        """Effective focal length from the sphere's centre: f = n·D / (4(n − 1))."""
        n = self.relative_index
        return n * self.sphere_diameter_nm / (4 * (n - 1))

    def image_distance_nm(self, s_nm):
        """Virtual-image distance below the centre for an object ``s_nm`` below it: f·s/(f − s)."""
        f = self.focal_length_nm
        s = np.asarray(s_nm, dtype=np.float64)
        if np.any(s >= f):
            raise SimParameterError(f"object distance {float(np.max(s)):.0f} nm must be below the focal "
                                    f"length {f:.0f} nm for a virtual image (reduce the gap)")
        out = f * s / (f - s)
        return float(out) if out.ndim == 0 else out

    def object_distance_nm(self, v_nm: float) -> float:
        """Inverse of :meth:`image_distance_nm`: the object plane imaged at ``v_nm`` below the centre."""
        f = self.focal_length_nm
        return f * v_nm / (f + v_nm)

    def magnification_at(self, gap_nm: float = 0.0) -> float:
        """Lateral magnification M = f/(f − s), s = R + gap."""
        check_range("gap_nm", gap_nm, low=0, high=self.focal_length_nm - self.radius_nm, high_open=True,
                    unit="nm")
        f = self.focal_length_nm
        return f / (f - (self.radius_nm + gap_nm))

    def virtual_image_depth_nm(self, gap_nm: float = 0.0, *, feature_depth_nm: float = 0.0) -> float:
        """How far below the sample surface (the plane at ``gap_nm``) the virtual image of a
        feature ``feature_depth_nm`` below that surface lies: V(s) − s with s = R + gap."""
        s_surface = self.radius_nm + gap_nm
        return self.image_distance_nm(s_surface + feature_depth_nm) - s_surface

    def axial_magnification_at(self, gap_nm: float = 0.0) -> float:
        """dV/ds = M² (paraxial): focus-stage travel per nm of sample depth."""
        return self.magnification_at(gap_nm) ** 2

    def fov_radius_nm(self, gap_nm: float = 0.0) -> float:
        """Sample radius whose virtual image fills the sphere's aperture: R / M."""
        return self.radius_nm / self.magnification_at(gap_nm)

    def rim_sag_nm(self, gap_nm: float = 0.0) -> float:
        """How far the sphere's surface rises, at the field's rim, above its lowest point: r_FOV² / D. A feature
        there may stand this much above the surface the sphere rests on (890 nm by default)."""
        return self.fov_radius_nm(gap_nm) ** 2 / self.sphere_diameter_nm

    def fov_radius_sensor_px(self, pixel_pitch_nm: float) -> float:
        """The sphere's aperture on the sensor: R · objective magnification / pixel pitch."""
        return self.radius_nm * self.objective_magnification / pixel_pitch_nm

    def sample_pixel_nm(self, pixel_pitch_nm: float, gap_nm: float = 0.0) -> float:
        """Sample nm per sensor pixel through the sphere: pitch / (objective mag · M)."""
        return pixel_pitch_nm / (self.objective_magnification * self.magnification_at(gap_nm))

    # ------------------------------------------------------------- resolution and blur

    @property
    def spectral_scale(self) -> float:
        """sqrt(E[λ²])/λ₀ for the Gaussian spectrum: diffraction blur scales with λ."""
        return math.sqrt(1 + (self.bandwidth_nm / self.wavelength_nm) ** 2)

    @property
    def centre_resolution_nm(self) -> float:
        """Contact resolution at the FOV centre: λ / (2 n_s) (solid-immersion limit)."""
        return self.wavelength_nm / (2 * self.sphere_index)

    @property
    def objective_resolution_nm(self) -> float:
        """Plain objective (Rayleigh): 0.61 λ / NA."""
        return 0.61 * self.wavelength_nm / self.objective_na

    def resolution_nm(self, field_fraction, gap_nm: float = 0.0):
        """Resolution at ``field_fraction`` = r / FOV radius (0 centre, 1 edge) and a gap:
        d = d₀ (1 + g/g₀) (1 + (k − 1)(r/R)²), never worse than the plain objective's / M."""
        rho = np.asarray(field_fraction, dtype=np.float64)
        d0 = self.centre_resolution_nm * (1 + gap_nm / self.gap_resolution_scale_nm)
        d = d0 * (1 + (self.edge_resolution_factor - 1) * rho ** 2)
        d = np.minimum(d, self.objective_resolution_nm)
        return float(d) if d.ndim == 0 else d

    def psf_sigma_nm(self, field_fraction, gap_nm: float = 0.0):
        """Gaussian σ (sample nm) of the in-focus polychromatic PSF through the sphere."""
        return SIGMA_PER_RESOLUTION * self.spectral_scale * self.resolution_nm(field_fraction, gap_nm)

    @property
    def objective_psf_sigma_nm(self) -> float:
        return SIGMA_PER_RESOLUTION * self.spectral_scale * self.objective_resolution_nm

    @property
    def defocus_slope(self) -> float:
        """Geometric blur σ per nm of defocus in the objective's object space: ½·tan(asin NA)
        (a uniform disc of radius ρ has σ = ρ/2 per axis)."""
        na = self.objective_na
        return 0.5 * na / math.sqrt(1 - na * na)

    @property
    def objective_depth_of_field_nm(self) -> float:
        """λ / NA² (air)."""
        return self.wavelength_nm / self.objective_na ** 2

    @property
    def fresnel_transmission(self) -> float:
        """Four passes through a sphere surface (light goes down and back up): (1 − R_F)⁴,
        R_F = ((n_s − 1)/(n_s + 1))² at normal incidence in air."""
        rf = ((self.sphere_index - 1) / (self.sphere_index + 1)) ** 2
        return (1 - rf) ** 4
