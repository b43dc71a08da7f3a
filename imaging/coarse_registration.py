"""Coarse mosaic ↔ SEM alignment: a rotation/scale sweep of phase correlation on gradient images.

Gradient magnitude is blind to the sign of the contrast and to the material-dependent grey
levels of optical vs SEM images, so a correlation on it has a wide capture range across
modalities (measured in ../shared/reference/imaging_anchors.md §3.2: 5/5 synthetic IC pairs,
where descriptor matchers failed). The result seeds the mutual-information refinement in
``imaging.registration``.

Transforms are 3×3 homogeneous matrices on pixel coordinates ``(x, y)`` = (col, row), pixel
centres at integer coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["CoarseMatch", "SubregionCheck", "coarse_register", "gradient_magnitude", "gradient_ncc", "sem_footprint",
           "subregion_agreement"]


@dataclass(frozen=True)
class CoarseMatch:
    """Best placement of the SEM image in the mosaic found by the sweep.

    ``sem_to_mosaic`` : (3, 3) float64, SEM pixel (x, y) → mosaic pixel (x, y).
    ``score`` : normalised cross-correlation of gradient images at the best placement (−1…1).
    ``runner_up`` : best score at a placement at least a quarter footprint away (ambiguity check).
    ``angle_deg``, ``scale`` : rotation and scale relative to the nominal (pixel-size) scale.
    """

    sem_to_mosaic: np.ndarray
    score: float
    runner_up: float
    angle_deg: float
    scale: float
    working_scale: float  # working px per mosaic px used in the sweep


def gradient_magnitude(image: np.ndarray, *, sigma: float) -> np.ndarray:
    """Sobel gradient magnitude of ``image`` smoothed with a Gaussian of ``sigma`` px; (H, W) float32."""
    image = np.asarray(image, np.float32)
    if sigma > 0:
        image = cv2.GaussianBlur(image, (0, 0), sigma)
    gx = cv2.Sobel(image, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(image, cv2.CV_32F, 0, 1, ksize=3)
    return cv2.magnitude(gx, gy)


def gradient_ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean-subtracted normalised cross-correlation of ``a`` and ``b`` (same shape) inside ``mask``."""
    if mask is not None:
        a, b = a[mask], b[mask]
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    if a.size < 16:
        return 0.0
    a = a - a.mean()
    b = b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else 0.0


def sem_footprint(sem_to_mosaic: np.ndarray, sem_shape_rc: tuple[int, int]) -> np.ndarray:
    """Corners of the SEM image in mosaic pixels, (4, 2) float64 as (x, y)."""
    h, w = sem_shape_rc
    corners = np.array([[-0.5, -0.5, 1], [w - 0.5, -0.5, 1], [w - 0.5, h - 0.5, 1], [-0.5, h - 0.5, 1]]).T
    mapped = sem_to_mosaic @ corners
    return (mapped[:2] / mapped[2]).T


def _scale_matrix(factor_x: float, factor_y: float | None = None) -> np.ndarray:
    """Pixel-centre-consistent resampling by ``factor`` (new px per old px): x' = (x + .5)f − .5."""
    fy = factor_x if factor_y is None else factor_y
    return np.array([[factor_x, 0, 0.5 * factor_x - 0.5], [0, fy, 0.5 * fy - 0.5], [0, 0, 1.0]])


def _resize(image: np.ndarray, factor: float) -> np.ndarray:
    h, w = image.shape
    size = (max(8, int(round(w * factor))), max(8, int(round(h * factor))))
    interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interp)


def _top_peaks(surface: np.ndarray, valid: np.ndarray, count: int, radius: int) -> list[tuple[int, int]]:
    """(row, col) of the ``count`` highest local maxima of ``surface`` where ``valid``."""
    work = np.where(valid, surface, -np.inf)
    peaks = []
    for _ in range(count):
        idx = int(np.argmax(work))
        r, c = divmod(idx, work.shape[1])
        if not np.isfinite(work[r, c]):
            break
        peaks.append((r, c))
        work[max(0, r - radius) : r + radius + 1, max(0, c - radius) : c + radius + 1] = -np.inf
    return peaks


def _subpixel(surface: np.ndarray, r: int, c: int) -> tuple[float, float]:
    """Parabolic sub-pixel offset (dr, dc) of a peak in a periodic correlation surface."""
    h, w = surface.shape

    def vertex(m: float, z: float, p: float) -> float:
        d = m - 2 * z + p
        return float(np.clip(0.5 * (m - p) / d, -0.5, 0.5)) if d < 0 else 0.0

    z = surface[r, c]
    dr = vertex(surface[(r - 1) % h, c], z, surface[(r + 1) % h, c])
    dc = vertex(surface[r, (c - 1) % w], z, surface[r, (c + 1) % w])
    return dr, dc


def coarse_register(
    mosaic: np.ndarray,
    sem: np.ndarray,
    *,
    mosaic_px_nm: float,
    sem_px_nm: float,
    max_rotation_deg: float = 5.0,
    rotation_step_deg: float = 0.5,
    max_scale_error: float = 0.03,
    scale_steps: int = 5,
    max_search_px: int = 512,
    min_footprint_px: int = 64,
    peaks_per_trial: int = 3,
) -> CoarseMatch:
    """Find rotation, scale and translation of ``sem`` inside ``mosaic`` by an exhaustive sweep.

    mosaic : (H, W) float32 [0, 1], optical mosaic, pixel size ``mosaic_px_nm``.
    sem : (h, w) float32 [0, 1], SEM image (data bar removed), nominal pixel size ``sem_px_nm``.
    For each rotation in ±``max_rotation_deg`` and scale in 1 ± ``max_scale_error`` the SEM
    gradient image is rotated/scaled and located in the mosaic gradient image by phase
    correlation; the ``peaks_per_trial`` highest peaks are scored by gradient NCC and the best
    placement (SEM centre inside the mosaic) wins. Work happens on a downsampled copy whose
    long side is at most ``max_search_px`` (but whose SEM footprint keeps ≥ ``min_footprint_px``).
    """
    for name, value in (("mosaic_px_nm", mosaic_px_nm), ("sem_px_nm", sem_px_nm)):
        if not (value and value > 0):
            raise ValueError(f"{name} must be > 0 nm, got {value}")
    if not 0 <= max_rotation_deg <= 45:
        raise ValueError(f"max_rotation_deg must be in [0, 45], got {max_rotation_deg}")
    if not rotation_step_deg > 0:
        raise ValueError(f"rotation_step_deg must be > 0, got {rotation_step_deg}")
    if not 0 <= max_scale_error < 0.5:
        raise ValueError(f"max_scale_error must be in [0, 0.5), got {max_scale_error}")
    if scale_steps < 1:
        raise ValueError(f"scale_steps must be >= 1, got {scale_steps}")
    mosaic = np.asarray(mosaic, np.float32)
    sem = np.asarray(sem, np.float32)
    if mosaic.ndim != 2 or sem.ndim != 2:
        raise ValueError(f"mosaic and sem must be 2-D, got {mosaic.shape} and {sem.shape}")

    ratio = mosaic_px_nm / sem_px_nm  # SEM px per mosaic px (nominal)
    footprint = max(sem.shape) / ratio  # SEM long side in mosaic px
    k = min(1.0, max_search_px / max(mosaic.shape))
    k = min(1.0, max(k, min_footprint_px / footprint))  # working px per mosaic px

    mosaic_w = _resize(mosaic, k) if k < 1 else mosaic
    sem_w = _resize(sem, k / ratio)
    grad_m = gradient_magnitude(mosaic_w, sigma=1.0)
    grad_s = gradient_magnitude(sem_w, sigma=1.0)
    grad_m -= grad_m.mean()
    hs, ws = grad_s.shape
    window = np.outer(np.hanning(hs), np.hanning(ws)).astype(np.float32)
    template = (grad_s - grad_s.mean()) * window

    hm, wm = grad_m.shape
    diag = int(np.ceil(np.hypot(hs, ws) * (1 + max_scale_error))) + 4
    pad_h = cv2.getOptimalDFTSize(hm + diag)
    pad_w = cv2.getOptimalDFTSize(wm + diag)
    big = np.zeros((pad_h, pad_w), np.float32)
    big[:hm, :wm] = grad_m
    fm = np.fft.rfft2(big)

    angles = np.arange(-max_rotation_deg, max_rotation_deg + 1e-9, rotation_step_deg)
    scales = np.linspace(1 - max_scale_error, 1 + max_scale_error, scale_steps) if scale_steps > 1 else [1.0]
    centre_s = np.array([(ws - 1) / 2, (hs - 1) / 2])
    centre_c = np.array([(diag - 1) / 2, (diag - 1) / 2])
    ones = np.ones((hs, ws), np.float32)

    candidates = []  # (score, x_centre, y_centre, angle, scale, sem_w→mosaic_w matrix)
    for angle in angles:
        for scale in scales:
            rot = cv2.getRotationMatrix2D((0, 0), -angle, scale)[:, :2]  # +angle = counter-clockwise in (x, y)
            to_canvas = np.eye(3)
            to_canvas[:2, :2] = rot
            to_canvas[:2, 2] = centre_c - rot @ centre_s
            canvas = cv2.warpAffine(template, to_canvas[:2], (diag, diag), flags=cv2.INTER_LINEAR)
            raw = cv2.warpAffine(grad_s, to_canvas[:2], (diag, diag), flags=cv2.INTER_LINEAR)
            mask = cv2.warpAffine(ones, to_canvas[:2], (diag, diag), flags=cv2.INTER_LINEAR) > 0.999
            canvas_big = np.zeros((pad_h, pad_w), np.float32)
            canvas_big[:diag, :diag] = canvas
            cross = fm * np.conj(np.fft.rfft2(canvas_big))
            surface = np.fft.irfft2(cross / (np.abs(cross) + 1e-9 * np.abs(cross).max()), s=(pad_h, pad_w))
            # shift (dy, dx) places the canvas origin at mosaic (dx, dy); keep SEM centre inside the mosaic
            dy = np.arange(pad_h)
            dx = np.arange(pad_w)
            dy = np.where(dy > pad_h - diag - 1, dy - pad_h, dy)
            dx = np.where(dx > pad_w - diag - 1, dx - pad_w, dx)
            cy = dy[:, None] + centre_c[1]
            cx = dx[None, :] + centre_c[0]
            valid = (cy >= 0) & (cy <= hm - 1) & (cx >= 0) & (cx <= wm - 1)
            for r, c in _top_peaks(surface, valid, peaks_per_trial, radius=3):
                ox, oy = int(dx[c]), int(dy[r])
                score = _placement_ncc(grad_m, raw, mask, ox, oy)
                sr, sc = _subpixel(surface, r, c)
                to_mosaic = np.eye(3)
                to_mosaic[:2, 2] = (ox + sc, oy + sr)
                candidates.append((score, ox + centre_c[0], oy + centre_c[1], angle, scale,
                                   to_mosaic @ to_canvas))
    if not candidates:
        raise ValueError("coarse_register: the SEM image cannot be placed inside the mosaic")
    best = max(candidates, key=lambda cand: cand[0])
    min_dist = 0.25 * max(hs, ws)
    others = [cand[0] for cand in candidates if np.hypot(cand[1] - best[1], cand[2] - best[2]) > min_dist]
    runner_up = max(others) if others else 0.0
    # full-resolution SEM px → working SEM px → working mosaic px → mosaic px
    sem_to_mosaic = np.linalg.inv(_scale_matrix(k)) @ best[5] @ _scale_matrix(k / ratio)
    return CoarseMatch(sem_to_mosaic=sem_to_mosaic, score=float(best[0]), runner_up=float(runner_up),
                       angle_deg=float(best[3]), scale=float(best[4]), working_scale=float(k))


def _placement_ncc(grad_m: np.ndarray, canvas: np.ndarray, mask: np.ndarray, ox: int, oy: int) -> float:
    """Gradient NCC of the canvas placed with its origin at mosaic (ox, oy), over the overlap."""
    hm, wm = grad_m.shape
    h, w = canvas.shape
    x0, y0 = max(0, ox), max(0, oy)
    x1, y1 = min(wm, ox + w), min(hm, oy + h)
    if x1 - x0 < 8 or y1 - y0 < 8:
        return 0.0
    sub_m = grad_m[y0:y1, x0:x1]
    sub_c = canvas[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
    sub_k = mask[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
    # a placement that covers little of the SEM footprint must not win on a lucky patch
    coverage = sub_k.sum() / max(1, mask.sum())
    return gradient_ncc(sub_m, sub_c, sub_k) * min(1.0, coverage / 0.5)


@dataclass(frozen=True)
class SubregionCheck:
    """Independent re-location of SEM sub-windows in the whole mosaic (see ``subregion_agreement``).

    ``agree`` / ``disagree`` : windows whose best match lies within / beyond the tolerance of
    where the registration puts them; ``skipped`` : windows too featureless to locate.
    ``offsets_px`` : per located window, distance (mosaic px) of its best match from the claim.
    """

    agree: int
    disagree: int
    skipped: int
    offsets_px: tuple[float, ...]


def subregion_agreement(
    fixed: np.ndarray,
    mosaic: np.ndarray,
    fixed_to_mosaic: np.ndarray,
    *,
    grid: int = 3,
    tolerance_px: float = 3.0,
    sigma: float = 1.5,
    min_relative_energy: float = 0.25,
    window_fraction: float = 0.6,
) -> SubregionCheck:
    """Locate each of ``grid``×``grid`` overlapping SEM windows (``window_fraction`` of each side) in the mosaic.

    fixed : (h, w) float32, SEM resampled to the mosaic's pixel size.
    mosaic : (H, W) float32, the mosaic.
    fixed_to_mosaic : (3, 3) float64, the registration to verify (fixed px (x, y) → mosaic px).
    The whole mosaic is warped into the fixed frame with the claimed transform (so rotation and
    scale are taken as given), and each window's gradient image is matched by normalised
    cross-correlation over all of it. A wrong placement that both refiners accepted because they
    started from the same coarse peak shows up as windows whose best match lies elsewhere: the
    check does not depend on where any optimiser started. Windows whose gradient energy is below
    ``min_relative_energy`` × the median window's are skipped (nothing to locate).
    """
    if grid < 2:
        raise ValueError(f"grid must be >= 2, got {grid}")
    if not 0.2 <= window_fraction <= 0.8:
        raise ValueError(f"window_fraction must be in [0.2, 0.8], got {window_fraction}")
    h, w = fixed.shape
    hm, wm = mosaic.shape
    corners = np.array([[-0.5, -0.5, 1], [wm - 0.5, -0.5, 1], [wm - 0.5, hm - 0.5, 1], [-0.5, hm - 0.5, 1]]).T
    mapped = np.linalg.inv(fixed_to_mosaic) @ corners
    mapped = mapped[:2] / mapped[2]
    x0 = int(np.floor(min(mapped[0].min(), 0))) - 2
    y0 = int(np.floor(min(mapped[1].min(), 0))) - 2
    x1 = int(np.ceil(max(mapped[0].max(), w))) + 2
    y1 = int(np.ceil(max(mapped[1].max(), h))) + 2
    if (x1 - x0) * (y1 - y0) > 64 * h * w:
        raise ValueError("subregion_agreement: the mosaic is too large relative to the SEM footprint")
    shift = np.array([[1.0, 0, x0], [0, 1.0, y0], [0, 0, 1]])  # canvas px → fixed px
    canvas_to_mosaic = (fixed_to_mosaic @ shift)[:2]
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    size = (x1 - x0, y1 - y0)
    canvas = cv2.warpAffine(gradient_magnitude(mosaic, sigma=sigma), canvas_to_mosaic, size, flags=flags)
    grad_f = gradient_magnitude(fixed, sigma=sigma)
    wh, ww = max(8, int(h * window_fraction)), max(8, int(w * window_fraction))
    starts_r = np.linspace(0, h - wh, grid).round().astype(int)
    starts_c = np.linspace(0, w - ww, grid).round().astype(int)
    windows = [(r, c) for r in starts_r for c in starts_c]
    energy = np.array([grad_f[r : r + wh, c : c + ww].std() for r, c in windows])
    floor = min_relative_energy * float(np.median(energy))
    agree = disagree = skipped = 0
    offsets = []
    for (r, c), e in zip(windows, energy):
        if e <= floor or e <= 0:
            skipped += 1
            continue
        result = cv2.matchTemplate(canvas, grad_f[r : r + wh, c : c + ww], cv2.TM_CCOEFF_NORMED)
        _, _, _, (px, py) = cv2.minMaxLoc(result)
        # claimed canvas position of the window's origin is (c − x0, r − y0); measure in mosaic px
        d = (fixed_to_mosaic[:2, :2] @ np.array([px + x0 - c, py + y0 - r], float))
        dist = float(np.hypot(*d))
        offsets.append(round(dist, 2))
        if dist <= tolerance_px:
            agree += 1
        else:
            disagree += 1
    return SubregionCheck(agree=agree, disagree=disagree, skipped=skipped, offsets_px=tuple(offsets))
