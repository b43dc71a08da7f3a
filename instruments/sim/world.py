"""One simulated bench: a seeded chip under a fixed sphere, the piezo's true position, the
focus stage and the camera. The wire-level fakes of the piezo controller and the focus stage
call :meth:`SimWorld.set_piezo_nm` / :meth:`SimWorld.set_focus_nm`; the simulated camera calls
:meth:`SimWorld.render_frame`, which shows what lies under the sphere at the TRUE position.

Coordinates
-----------
* Piezo (P-733.3CL): x, y in [0, 100 000] nm, z in [0, 10 000] nm (closed-loop sensor values).
  The x/y axes are defined so that +x moves the field of view +x across the chip; the point
  under the sphere is ``scan_origin_nm + true (x, y)``. By default ``scan_origin_nm`` centres
  the 100 × 100 µm travel on the chip: on a 200 × 200 µm chip the scan covers x, y ∈ [50, 150] µm.
  +z lifts the sample toward the sphere.
* Camera: sensor pixel (x = col, y = row); the sphere's image is centred at
  ``sphere_image_centre_px``; camera axes are rotated by ``stage_errors.rotation_deg`` from the
  scanner/chip axes.
* Focus stage (IMS100V): position in nm; at :data:`FOCUS_REFERENCE_NM` (mid-travel) the
  objective focuses on the virtual image of a surface in contact with the sphere (which lies
  (M − 1)·R ≈ 85.5 µm below the sample); smaller values move the focal plane down. Deeper
  features or a gap need lower values, by about M² per nm of sample depth; the objective sees
  the sample itself (no sphere) at REFERENCE + (M − 1)·R.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import ssum
from .camera import CameraModel, expose
from .chip import Chip, Layout
from .exceptions import check_range
from .optics import SSUMOptics

PIEZO_TRAVEL_NM = (100_000.0, 100_000.0, 10_000.0)
FOCUS_TRAVEL_NM = 100_000_000.0  # IMS100V: 100 mm
FOCUS_REFERENCE_NM = 50_000_000.0


@dataclass(frozen=True)
class StageErrors:
    """How the real sample position departs from the controller's reading (per move)."""

    rotation_deg: float = 0.35  # camera axes vs scanner axes
    scale: tuple[float, float] = (1.0015, 0.9990)  # scanner calibration error, x and y
    noise_nm: float = 1.5  # 1σ settling error of each move, per axis
    drift_nm_per_move: tuple[float, float] = (0.4, -0.25)  # slow thermal drift
    random_walk_nm: float = 0.5  # 1σ drift increment per move
    z_noise_nm: float = 0.5

    def __post_init__(self):
        check_range("rotation_deg", self.rotation_deg, low=-10, high=10, unit="deg")
        for axis, s in zip("xy", self.scale, strict=True):
            check_range(f"scale[{axis}]", s, low=0.9, high=1.1)
        for name in ("noise_nm", "random_walk_nm", "z_noise_nm"):
            check_range(name, getattr(self, name), low=0, high=1_000, unit="nm")

    @classmethod
    def none(cls) -> StageErrors:
        """A perfect stage: true position == commanded position, camera aligned to the scanner."""
        return cls(0.0, (1.0, 1.0), 0.0, (0.0, 0.0), 0.0, 0.0)


@dataclass
class _State:
    piezo: tuple[float, float, float] = (50_000.0, 50_000.0, 0.0)
    true: tuple[float, float, float] = (50_000.0, 50_000.0, 0.0)
    drift: tuple[float, float] = (0.0, 0.0)
    focus: float = FOCUS_REFERENCE_NM
    moves: int = 0
    frames: int = 0
    cache: dict = field(default_factory=dict)


def _nearest_sq(edges: np.ndarray, c: float) -> float:
    """Squared distance from ``c`` to the nearest point of the intervals ``[a0, b0, a1, b1, …]``."""
    starts, ends = edges[0::2], edges[1::2]
    gaps = np.maximum(np.maximum(starts - c, c - ends), 0.0)
    return float(gaps.min() ** 2)


class SimWorld:
    """One simulated bench: a seeded chip under a fixed sphere, the piezo's true position, the focus stage."""

    def __init__(self, *, seed: int = 0, chip_size_nm=(200_000, 200_000), optics: SSUMOptics | None = None,
                 camera: CameraModel | None = None, stage_errors: StageErrors | None = None,
                 illumination: ssum.Illumination | None = None, layout: Layout | None = None,
                 scan_origin_nm: tuple[float, float] | None = None,
                 sphere_image_centre_px: tuple[float, float] | None = None,
                 contact_offset_nm: float = 0.0, substrate_contact_z_nm: float = 7_000.0):
        self.seed = int(seed)
        self.layout: Layout = layout if layout is not None else Chip(seed=self.seed, size_nm=tuple(chip_size_nm))
        self.optics = optics or SSUMOptics()
        self.camera = camera or CameraModel()
        self.stage_errors = stage_errors if stage_errors is not None else StageErrors()
        self.illumination = illumination or ssum.Illumination()
        bx0, by0, bx1, by1 = self.layout.bounds_nm
        if scan_origin_nm is None:
            scan_origin_nm = (0.5 * (bx0 + bx1) - PIEZO_TRAVEL_NM[0] / 2, 0.5 * (by0 + by1) - PIEZO_TRAVEL_NM[1] / 2)
        self.scan_origin_nm = (float(scan_origin_nm[0]), float(scan_origin_nm[1]))
        rows, cols = self.camera.sensor_shape
        self.sphere_image_centre_px = tuple(map(float, sphere_image_centre_px or ((cols - 1) / 2, (rows - 1) / 2)))
        #: Fault knob: shifts where contact happens (e.g. beyond the 10 µm z travel: never reached).
        self.contact_offset_nm = float(contact_offset_nm)
        self.substrate_contact_z_nm = check_range("substrate_contact_z_nm", substrate_contact_z_nm,
                                                  low=-1e6, high=1e6, unit="nm")
        self._s = _State()
        self._s.true = self._true_after_move(self._s.piezo)

    # ---------------------------------------------------------------- piezo

    def set_piezo_nm(self, x: float, y: float, z: float) -> None:
        """The controller's (sensor) position after a move, nm; the true position gets the errors."""
        for name, value, travel in zip("xyz", (x, y, z), PIEZO_TRAVEL_NM, strict=True):
            check_range(f"piezo {name}", value, low=0, high=travel, unit="nm")
        new = (float(x), float(y), float(z))
        moved_xy = new[:2] != self._s.piezo[:2]
        if moved_xy:
            self._s.moves += 1
        self._s.piezo = new
        self._s.true = self._true_after_move(new, moved_xy=moved_xy)

    def _true_after_move(self, piezo, *, moved_xy: bool = False) -> tuple[float, float, float]:
        e = self.stage_errors
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, self._s.moves, 0x57A9E])
        walk = rng.normal(0, e.random_walk_nm, 2) if e.random_walk_nm else np.zeros(2)
        # Drift is a per-XY-move error: a Z-only move (an approach step) leaves it where it was.
        if moved_xy:
            self._s.drift = (self._s.drift[0] + e.drift_nm_per_move[0] + walk[0],
                             self._s.drift[1] + e.drift_nm_per_move[1] + walk[1])
        noise = rng.normal(0, 1, 3) * (e.noise_nm, e.noise_nm, e.z_noise_nm)
        cx, cy = PIEZO_TRAVEL_NM[0] / 2, PIEZO_TRAVEL_NM[1] / 2  # calibration errors grow from mid-travel
        return (cx + (piezo[0] - cx) * e.scale[0] + self._s.drift[0] + noise[0],
                cy + (piezo[1] - cy) * e.scale[1] + self._s.drift[1] + noise[1],
                piezo[2] + noise[2])

    def piezo_nm(self) -> tuple[float, float, float]:
        """What the controller reports (the commanded, closed-loop sensor position)."""
        return self._s.piezo

    def piezo_true_nm(self) -> tuple[float, float, float]:
        """True sample position in scanner axes, nm, including scale error, drift and noise.
        (The camera is additionally rotated by ``stage_errors.rotation_deg``.)"""
        return self._s.true

    def centre_on_chip_nm(self) -> tuple[float, float]:
        """Chip (x, y) nm under the sphere's axis at the true position."""
        return (self.scan_origin_nm[0] + self._s.true[0], self.scan_origin_nm[1] + self._s.true[1])

    def mount(self, layout: Layout) -> None:
        """Put another sample on the stage (a bare-silicon reference in place of the chip, say): from
        now on the sphere touches and the camera sees ``layout``, under the same scan origin."""
        self.layout = layout
        self._s.cache = {}  # contact heights and scenes of the sample that was there

    # ---------------------------------------------------------------- contact

    def contact_height_nm(self) -> float:
        """Chip height of the point the sphere would touch here: the maximum over the footprint
        of h − ρ²/D (the sphere's sag at distance ρ from its axis).

        Exact and raster-free: a block covers X × Y, so its point nearest the axis has
        ρ² = min_X (x − cx)² + min_Y (y − cy)²."""
        cx, cy = self.centre_on_chip_nm()
        key = ("contact", round(cx, 1), round(cy, 1))
        if key not in self._s.cache:
            layers = self.layout.layers
            d = self.optics.sphere_diameter_nm
            h_span = max(layer.height_nm for layer in layers) - layers[0].height_nm + 100.0
            reach = math.sqrt(d * h_span)  # beyond this the sag exceeds any topography
            best = layers[0].height_nm
            for block in self.layout.blocks_in(cx - reach, cy - reach, cx + reach, cy + reach):
                top = layers[block.layer].height_nm
                if top <= best:
                    continue
                rho2 = _nearest_sq(block.x_edges, cx) + _nearest_sq(block.y_edges, cy)
                best = max(best, top - rho2 / d)
            self._s.cache = {k: v for k, v in self._s.cache.items() if k[0] != "contact"}
            self._s.cache[key] = float(best)
        return self._s.cache[key]

    def contact_z_nm(self) -> float:
        """Piezo z at which the sphere touches the sample here (may lie beyond the travel)."""
        return self.substrate_contact_z_nm - self.contact_height_nm() + self.contact_offset_nm

    def gap_nm(self) -> float:
        """Sphere-to-sample gap at the true position (0 in contact)."""
        return max(0.0, self.contact_z_nm() - self._s.true[2])

    def deflection_nm(self) -> float:
        """Cantilever deflection: the overtravel past contact (rigid sample), 0 out of contact."""
        return max(0.0, self._s.true[2] - self.contact_z_nm())

    # ---------------------------------------------------------------- focus

    def set_focus_nm(self, z: float) -> None:
        """Vertical focus stage position, nm (see the module docstring for its zero)."""
        self._s.focus = check_range("focus z", z, low=0, high=FOCUS_TRAVEL_NM, unit="nm")

    def focus_nm(self) -> float:
        return self._s.focus

    def virtual_image_focus_nm(self, *, feature_depth_nm: float = 0.0) -> float:
        """Focus position that is sharp at the current gap for the contact surface, or for a
        feature ``feature_depth_nm`` below it: REFERENCE + V(R) − V(R + gap + depth)."""
        o = self.optics
        v = o.image_distance_nm(o.radius_nm + self.gap_nm() + feature_depth_nm)
        return FOCUS_REFERENCE_NM + self._contact_image_depth_nm + o.radius_nm - v

    @property
    def _contact_image_depth_nm(self) -> float:
        """V(R) − R: how far below the contact plane the focal plane is at the reference."""
        return self.optics.virtual_image_depth_nm(0.0)

    # ---------------------------------------------------------------- camera

    @property
    def pixel_size_nm(self) -> float:
        """Sample nm per unbinned sensor pixel through the sphere at the current gap."""
        return self.optics.sample_pixel_nm(self.camera.pixel_pitch_nm, self.gap_nm())

    @property
    def fov_radius_px(self) -> float:
        """Radius of the sphere's field of view on the sensor, unbinned pixels."""
        return self.optics.fov_radius_sensor_px(self.camera.pixel_pitch_nm)

    @property
    def fov_radius_nm(self) -> float:
        return self.optics.fov_radius_nm(self.gap_nm())

    @property
    def default_roi(self) -> tuple[int, int, int, int]:
        """(x, y, width, height): 512 × 512 centred on the sphere's image."""
        rows, cols = self.camera.sensor_shape
        cx, cy = self.sphere_image_centre_px
        x = int(min(max(round(cx - 256), 0), cols - 512))
        y = int(min(max(round(cy - 256), 0), rows - 512))
        return (x, y, 512, 512)

    def fov_mask(self, roi: tuple[int, int, int, int] | None = None, binning: int = 1, *,
                 fraction: float = 1.0) -> np.ndarray:
        """(rows, cols) bool: output pixels within ``fraction`` of the FOV radius."""
        roi = self.camera.check_roi(roi or self.default_roi, binning)
        x0, y0, w, h = roi
        b = binning
        u = x0 + b * np.arange(w // b) + (b - 1) / 2 - self.sphere_image_centre_px[0]
        v = y0 + b * np.arange(h // b) + (b - 1) / 2 - self.sphere_image_centre_px[1]
        return (u[None, :] ** 2 + v[:, None] ** 2) < (fraction * self.fov_radius_px) ** 2

    def optical_state(self) -> ssum.OpticalState:
        return ssum.OpticalState(centre_xy_nm=self.centre_on_chip_nm(),
                                 rotation_deg=self.stage_errors.rotation_deg, gap_nm=self.gap_nm(),
                                 contact_height_nm=self.contact_height_nm(),
                                 focal_plane_nm=self._s.focus - FOCUS_REFERENCE_NM - self._contact_image_depth_nm)

    def frame_to_chip(self, roi: tuple[int, int, int, int] | None = None, binning: int = 1) -> np.ndarray:
        """3×3 truth: output pixel (x = col, y = row) of a frame taken now → chip (x, y) nm."""
        roi = self.camera.check_roi(roi or self.default_roi, binning)
        return ssum.frame_to_chip(state=self.optical_state(), pixel_size_nm=self.pixel_size_nm,
                                  sphere_centre_px=self.sphere_image_centre_px, roi=roi, binning=binning)

    def expected_electrons_per_s(self, roi: tuple[int, int, int, int] | None = None,
                                 binning: int = 1) -> np.ndarray:
        """Noise-free photo-electron rate of the current scene; cached until something moves."""
        roi = self.camera.check_roi(roi or self.default_roi, binning)
        state = self.optical_state()
        key = ("rate", state, roi, binning)
        if key not in self._s.cache:
            self._s.cache = {k: v for k, v in self._s.cache.items() if k[0] != "rate"}
            rate = ssum.electron_rate(self.layout, optics=self.optics, camera=self.camera,
                                      illumination=self.illumination, state=state,
                                      sphere_centre_px=self.sphere_image_centre_px, roi=roi, binning=binning)
            rate.setflags(write=False)
            self._s.cache[key] = rate
        return self._s.cache[key]

    def render_frame(self, *, exposure_s: float, roi: tuple[int, int, int, int] | None = None,
                     binning: int = 1, noise: bool = True) -> np.ndarray:
        """One camera frame of what is under the sphere now: (height//b, width//b) uint16 ADU.

        ``roi = (x, y, width, height)`` in unbinned sensor pixels (default: 512 × 512 on the
        sphere); the full sensor is 2560 × 2160."""
        rate = self.expected_electrons_per_s(roi, binning)
        self._s.frames += 1
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, self._s.frames, 0xCA3])
        return expose(rate, camera=self.camera, exposure_s=exposure_s, binning=binning, rng=rng,
                      noise_seed=self.seed, noise=noise)
