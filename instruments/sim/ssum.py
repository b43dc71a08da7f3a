"""SSUM frame formation: what the camera sees through the objective and the microsphere.

Inside the sphere's aperture (a disc of radius R·M_obj/pitch on the sensor) the camera sees the
sphere's virtual image: the sample magnified by M, blurred by a field-dependent PSF, defocused
according to each point's depth relative to the plane conjugate to the objective's focal plane,
vignetted and darkened at the rim. Outside it sees the plain objective image of the sample at
1/M the scale, usually far out of focus (the objective is focused on the virtual image, tens
of µm below the sample). Both are lit by a non-uniform Köhler field and go through the camera.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np

from .blur import MAX_SIGMA_PX, variable_gaussian_blur
from .camera import CameraModel, expose
from .chip import OVERVIEW_PIXEL_NM, Layout, overview, rasterize
from .exceptions import check_range
from .optics import SSUMOptics

_WINDOW_MARGIN_PX = 32  # sample context rendered around the sphere's disc for the blur
_RIM_START = 0.85  # the sphere darkens from here to its edge (total internal reflection)
_EDGE_WIDTH = 0.03  # soft transition from virtual image to plain image, in FOV radii


@dataclass(frozen=True)
class Illumination:
    """Köhler illumination over the sensor: smooth radial fall-off around an off-centre peak."""

    nonuniformity: float = 0.12  # fractional fall-off at the sensor's corner
    centre_offset_px: tuple[float, float] = (60.0, -40.0)  # (x, y) from the sensor centre
    field_stop_radius_px: float | None = None  # None: the field stop is open

    def __post_init__(self):
        check_range("nonuniformity", self.nonuniformity, low=0, high=0.9)
        if self.field_stop_radius_px is not None:
            check_range("field_stop_radius_px", self.field_stop_radius_px, low=10, high=1e5, unit="px")


@dataclass(frozen=True)
class OpticalState:
    """Where the sample is and where the microscope focuses, for one frame.

    centre_xy_nm : chip (x, y) nm under the sphere's axis.
    rotation_deg : camera axes relative to chip axes (counter-clockwise in the chip frame).
    gap_nm : sphere bottom to the sample's contact surface (0 in contact).
    contact_height_nm : chip height of that contact surface (the highest point the sphere meets).
    focal_plane_nm : height of the objective's focal plane above the sphere's bottom (nm,
        negative below it; the virtual image lies tens of µm below).
    """

    centre_xy_nm: tuple[float, float]
    rotation_deg: float = 0.0
    gap_nm: float = 0.0
    contact_height_nm: float = 0.0
    focal_plane_nm: float = 0.0


def frame_to_chip(*, state: OpticalState, pixel_size_nm: float, sphere_centre_px: tuple[float, float],
                  roi: tuple[int, int, int, int], binning: int) -> np.ndarray:
    """3×3 matrix mapping an output pixel (x = col, y = row; pixel centres at integers) of a
    ROI frame to chip (x, y) nm through the sphere. ``pixel_size_nm`` is per sensor pixel."""
    x0, y0, _, _ = roi
    b = binning
    th = math.radians(state.rotation_deg)
    c, s = math.cos(th), math.sin(th)
    # output (i, j) → sensor offsets (du, dv) from the sphere image centre
    du0 = x0 + (b - 1) / 2 - sphere_centre_px[0]
    dv0 = y0 + (b - 1) / 2 - sphere_centre_px[1]
    to_offset = np.array([[b, 0, du0], [0, b, dv0], [0, 0, 1]], float)
    rot = np.array([[c * pixel_size_nm, -s * pixel_size_nm, state.centre_xy_nm[0]],
                    [s * pixel_size_nm, c * pixel_size_nm, state.centre_xy_nm[1]], [0, 0, 1]], float)
    return rot @ to_offset


def render_maps(layout: Layout, *, grid_to_chip: np.ndarray, shape: tuple[int, int]):
    """Render (height, reflectance, se_yield) on an output grid whose pixel centres map to chip
    nm by ``grid_to_chip`` (3×3, square pixels, any rotation)."""
    a, bb, tx = grid_to_chip[0]
    c, d, ty = grid_to_chip[1]
    p = math.hypot(a, c)
    rows, cols = shape
    if p >= 2 * OVERVIEW_PIXEL_NM:
        return _maps_from_overview(layout, grid_to_chip=grid_to_chip, shape=shape)
    if abs(bb) < 1e-9 * p and abs(c) < 1e-9 * p and a > 0 and d > 0:  # axis-aligned: exact
        m = rasterize(layout, origin_nm=(tx - 0.5 * p, ty - 0.5 * p), shape=shape, pixel_size_nm=p)
        return m.height_nm, m.reflectance, m.se_yield
    corners = grid_to_chip @ np.array([[-0.5, cols - 0.5, -0.5, cols - 0.5],
                                       [-0.5, -0.5, rows - 0.5, rows - 0.5], [1, 1, 1, 1]])
    x_min, y_min = corners[0].min() - 2 * p, corners[1].min() - 2 * p
    big_shape = (int(math.ceil((corners[1].max() + 2 * p - y_min) / p)),
                 int(math.ceil((corners[0].max() + 2 * p - x_min) / p)))
    m = rasterize(layout, origin_nm=(x_min, y_min), shape=big_shape, pixel_size_nm=p)
    # output pixel → big-raster pixel (centres at integers)
    to_big = np.array([[1 / p, 0, -x_min / p - 0.5], [0, 1 / p, -y_min / p - 0.5], [0, 0, 1]]) @ grid_to_chip
    out = [cv2.warpAffine(img, to_big[:2], (cols, rows), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)
           for img in (m.height_nm, m.reflectance, m.se_yield)]
    return out[0], out[1], out[2]


def _maps_from_overview(layout: Layout, *, grid_to_chip: np.ndarray, shape: tuple[int, int]):
    """Coarse grids (≥ 2 µm pixels, used only for blurred surroundings) resampled from the
    cached 1 µm overview, pre-smoothed so the resampling does not alias."""
    rows, cols = shape
    p = math.hypot(grid_to_chip[0, 0], grid_to_chip[1, 0])
    corners = grid_to_chip @ np.array([[-0.5, cols - 0.5, -0.5, cols - 0.5],
                                       [-0.5, -0.5, rows - 0.5, rows - 0.5], [1, 1, 1, 1]])
    ov = overview(layout, corners[0].min() - p, corners[1].min() - p, corners[0].max() + p, corners[1].max() + p)
    q = OVERVIEW_PIXEL_NM
    to_ov = np.array([[1 / q, 0, -ov.origin_nm[0] / q - 0.5], [0, 1 / q, -ov.origin_nm[1] / q - 0.5],
                      [0, 0, 1]]) @ grid_to_chip
    smooth = 0.5 * p / q
    out = []
    for img in (ov.height_nm, ov.reflectance, ov.se_yield):
        img = cv2.GaussianBlur(img, (0, 0), smooth)
        out.append(cv2.warpAffine(img, to_ov[:2], (cols, rows), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                  borderMode=cv2.BORDER_REPLICATE))
    return out[0], out[1], out[2]


@functools.lru_cache(maxsize=16)
def _field_maps(roi, binning, sphere_centre_px, disc_radius_px, illumination: Illumination,
                sensor_shape, vignetting):
    """Per-output-pixel field fraction ρ, sphere weight, sphere transmission shape and
    illumination; cached because they depend only on geometry."""
    x0, y0, w, h = roi
    b = binning
    rows, cols = h // b, w // b
    u = x0 + b * np.arange(cols, dtype=np.float32) + (b - 1) / 2
    v = y0 + b * np.arange(rows, dtype=np.float32) + (b - 1) / 2
    du, dv = u - sphere_centre_px[0], v - sphere_centre_px[1]
    rho = np.sqrt(dv[:, None] ** 2 + du[None, :] ** 2) / np.float32(disc_radius_px)
    inside = np.clip((1.0 - rho) / _EDGE_WIDTH, 0, 1).astype(np.float32)
    rim_t = np.clip((rho - _RIM_START) / (1 - _RIM_START), 0, 1)
    rim = 1 - 0.85 * rim_t * rim_t * (3 - 2 * rim_t)  # smoothstep darkening toward the edge
    shape_t = ((1 - vignetting * np.minimum(rho, 1) ** 2) * rim).astype(np.float32)
    srows, scols = sensor_shape
    ix = u - ((scols - 1) / 2 + illumination.centre_offset_px[0])
    iy = v - ((srows - 1) / 2 + illumination.centre_offset_px[1])
    r_ill2 = (iy[:, None] ** 2 + ix[None, :] ** 2) / np.float32(0.25 * (srows ** 2 + scols ** 2))
    ill = (1 - illumination.nonuniformity * r_ill2).astype(np.float32)
    if illumination.field_stop_radius_px is not None:
        r_ill = np.sqrt(iy[:, None] ** 2 + ix[None, :] ** 2)
        ill *= np.clip((illumination.field_stop_radius_px - r_ill) / 20.0 + 0.5, 0, 1).astype(np.float32)
    for arr in (rho, inside, shape_t, ill):
        arr.setflags(write=False)
    return rho, inside, shape_t, ill


def _sphere_image(layout: Layout, optics: SSUMOptics, state: OpticalState, *, to_chip: np.ndarray,
                  window: tuple[int, int, int, int], rho: np.ndarray, out_px_nm: float) -> np.ndarray:
    """Virtual image (reflectance units) over ``window = (row0, row1, col0, col1)`` of the output."""
    r0, r1, c0, c1 = window
    shift = np.array([[1, 0, c0], [0, 1, r0], [0, 0, 1]], float)
    height, refl, _ = render_maps(layout, grid_to_chip=to_chip @ shift, shape=(r1 - r0, c1 - c0))
    rho_w = np.minimum(rho[r0:r1, c0:c1], np.float32(1.2))
    f = optics.focal_length_nm
    radius = optics.radius_nm
    # Depth below the sphere's centre, shifted by field curvature (the edge focuses deeper).
    s = (np.float32(radius + state.gap_nm + state.contact_height_nm) - height
         - np.float32(optics.field_curvature_nm) * rho_w * rho_w)
    s = np.minimum(s, np.float32(0.995 * f))
    mag = np.float32(f) / (np.float32(f) - s)
    v_img = s * mag
    v_focus = radius - state.focal_plane_nm
    slope = np.float32(optics.defocus_slope)
    geo = slope * np.abs(v_img - np.float32(v_focus)) / mag
    chroma = slope * mag * np.float32(optics.chromatic_focus_rms_nm)
    psf = np.asarray(optics.psf_sigma_nm(rho_w, state.gap_nm), dtype=np.float32)
    sigma = np.sqrt(psf * psf + geo * geo + chroma * chroma) * np.float32(1.0 / out_px_nm)
    return variable_gaussian_blur(refl, np.minimum(sigma, np.float32(MAX_SIGMA_PX)))


def _plain_image(layout: Layout, optics: SSUMOptics, state: OpticalState, *, to_chip: np.ndarray,
                 shape: tuple[int, int], out_px_nm: float) -> np.ndarray:
    """Objective-only image (reflectance units) of the whole output grid, no sphere."""
    rows, cols = shape
    heights = [layer.height_nm for layer in layout.layers]
    slope = optics.defocus_slope
    sigma0 = optics.objective_psf_sigma_nm

    def sigma_nm(h):  # absolute height of chip height h: h − contact − gap (sphere bottom = 0)
        return np.sqrt(sigma0 ** 2 + (slope * (h - state.contact_height_nm - state.gap_nm
                                               - state.focal_plane_nm)) ** 2)

    sigma_min = float(min(sigma_nm(np.float32(h)) for h in np.linspace(min(heights), max(heights), 9)))
    q = max(1, int(sigma_min / out_px_nm / 2.0))  # blurred far beyond a pixel: work coarser
    crow, ccol = -(-rows // q), -(-cols // q)
    coarse = np.array([[q, 0, (q - 1) / 2], [0, q, (q - 1) / 2], [0, 0, 1]], float)
    height, refl, _ = render_maps(layout, grid_to_chip=to_chip @ coarse, shape=(crow, ccol))
    sigma_px = sigma_nm(height).astype(np.float32) * np.float32(1 / (out_px_nm * q))
    img = variable_gaussian_blur(refl, np.minimum(sigma_px, np.float32(MAX_SIGMA_PX)))
    if q > 1:
        img = cv2.resize(img, (ccol * q, crow * q), interpolation=cv2.INTER_LINEAR)[:rows, :cols]
    return img


def electron_rate(layout: Layout, *, optics: SSUMOptics, camera: CameraModel, illumination: Illumination,
                  state: OpticalState, sphere_centre_px: tuple[float, float],
                  roi: tuple[int, int, int, int], binning: int = 1) -> np.ndarray:
    """Noise-free photo-electron rate (e⁻/s per output pixel), (height//b, width//b) float32."""
    roi = camera.check_roi(roi, binning)
    b = int(binning)
    rows, cols = roi[3] // b, roi[2] // b
    m = optics.magnification_at(state.gap_nm)
    pitch = camera.pixel_pitch_nm
    disc_px = optics.fov_radius_sensor_px(pitch)
    rho, inside, shape_t, ill = _field_maps(tuple(roi), b, tuple(map(float, sphere_centre_px)), disc_px,
                                            illumination, tuple(camera.sensor_shape), optics.vignetting)
    scene = np.zeros((rows, cols), np.float32)
    covered = inside > 0
    if covered.any():
        rr, cc = np.nonzero(covered.any(axis=1))[0], np.nonzero(covered.any(axis=0))[0]
        window = (max(0, rr[0] - _WINDOW_MARGIN_PX), min(rows, rr[-1] + 1 + _WINDOW_MARGIN_PX),
                  max(0, cc[0] - _WINDOW_MARGIN_PX), min(cols, cc[-1] + 1 + _WINDOW_MARGIN_PX))
        sphere_px = pitch / (optics.objective_magnification * m)
        to_chip = frame_to_chip(state=state, pixel_size_nm=sphere_px, sphere_centre_px=sphere_centre_px,
                                roi=roi, binning=b)
        virtual = _sphere_image(layout, optics, state, to_chip=to_chip, window=window, rho=rho,
                                out_px_nm=sphere_px * b)
        r0, r1, c0, c1 = window
        scene[r0:r1, c0:c1] = virtual * (inside[r0:r1, c0:c1] * shape_t[r0:r1, c0:c1]
                                         * np.float32(optics.fresnel_transmission))
    if not covered.all() or (inside < 1).any():
        plain_px = pitch / optics.objective_magnification
        to_chip = frame_to_chip(state=state, pixel_size_nm=plain_px, sphere_centre_px=sphere_centre_px,
                                roi=roi, binning=b)
        plain = _plain_image(layout, optics, state, to_chip=to_chip, shape=(rows, cols), out_px_nm=plain_px * b)
        scene += plain * (np.float32(1) - inside)
    gain = np.float32(camera.photon_flux_per_s * camera.quantum_efficiency * b * b)
    return scene * ill * gain


def form_frame(layout: Layout, *, optics: SSUMOptics, camera: CameraModel, illumination: Illumination,
               state: OpticalState, sphere_centre_px: tuple[float, float], roi: tuple[int, int, int, int],
               binning: int = 1, exposure_s: float, rng: np.random.Generator, noise_seed: int = 0,
               noise: bool = True) -> np.ndarray:
    """One camera frame, (height//b, width//b) uint16 ADU; see :func:`electron_rate`."""
    rate = electron_rate(layout, optics=optics, camera=camera, illumination=illumination, state=state,
                         sphere_centre_px=sphere_centre_px, roi=roi, binning=binning)
    return expose(rate, camera=camera, exposure_s=exposure_s, binning=binning, rng=rng,
                  noise_seed=noise_seed, noise=noise)
