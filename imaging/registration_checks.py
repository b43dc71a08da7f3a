"""Independent checks of a mosaic ↔ SEM placement, whatever optimiser proposed it.

Each check looks at the claimed placement afresh: SEM sub-windows and the whole footprint
re-located across the whole mosaic in gradients (``subregion_agreement``), local-contrast
features (``contrast_margin``) or the bands that stack both (``band_features``), combined into
one verdict (``verify_placement``); SEM windows re-located near the claim, which tells a
transform stuck a little off in scale or rotation (``local_consistency``); the share of the SEM
footprint inside the mosaic (``footprint_overlap``); how far scale and rotation found at the
SEM's detail are extrapolated over the rest of it (``extrapolation``); and the feature
correlation of the registered pair (``registered_feature_ncc``). ``imaging.registration`` makes
a result falsy when any of them fails.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from imaging.registration_features import (
    band_features,
    contrast_features,
    gradient_magnitude,
    gradient_ncc,
    similarity_lstsq,
    subpixel_peak,
)

#: The independent checks search the whole mosaic, warped into the SEM's frame: at most this many
#: times the SEM footprint's area (memory and time; and a small footprint in a large repeating
#: layout is where a wrong place verifies: a 120 px SEM in a 1200 px synthetic mosaic, without
#: this bound, was accepted 290 px off).
MAX_MOSAIC_TO_FOOTPRINT_AREA = 64

__all__ = ["VERIFY_ROUTES", "LocalCheck", "SubregionCheck", "contrast_margin", "extrapolation", "footprint_overlap",
           "local_consistency", "registered_feature_ncc", "sem_footprint",
           "subregion_agreement", "verify_placement"]


@dataclass(frozen=True)
class SubregionCheck:
    """Independent re-location of SEM sub-windows in the whole mosaic (see ``subregion_agreement``).

    ``agree`` / ``disagree`` : windows whose best match lies within / beyond the tolerance of
    where the registration puts them (uniquely); ``skipped`` : windows too featureless to locate.
    ``offsets_px`` : per located window, distance (mosaic px) of its best match from the claim.
    """

    agree: int
    disagree: int
    skipped: int
    offsets_px: tuple[float, ...]
    ambiguous: int = 0  # found at the claim, but matched about as well elsewhere (repeating pattern)
    #: NCC of the whole footprint at the claim minus its best elsewhere (< 0: a better place exists)
    whole_margin: float = 0.0


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
    min_margin: float = 0.05,
    features: str = "gradient",
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
    ``min_relative_energy`` × the median window's are skipped (nothing to locate). A window found
    at the claim agrees only when its correlation there beats its best elsewhere (beyond twice
    the tolerance) by ≥ ``min_margin``; otherwise it is counted ``ambiguous`` (repeating pattern).
    """
    if grid < 2:
        raise ValueError(f"grid must be >= 2, got {grid}")
    if not 0.2 <= window_fraction <= 0.8:
        raise ValueError(f"window_fraction must be in [0.2, 0.8], got {window_fraction}")
    h, w = fixed.shape
    feature_m, grad_f = _feature_pair(fixed, mosaic, features, sigma)
    canvas, x0, y0 = _fixed_frame_canvas(fixed.shape, feature_m, fixed_to_mosaic)
    wh, ww = max(8, int(h * window_fraction)), max(8, int(w * window_fraction))
    starts_r = np.linspace(0, h - wh, grid).round().astype(int)
    starts_c = np.linspace(0, w - ww, grid).round().astype(int)
    windows = [(r, c) for r in starts_r for c in starts_c]
    energy = np.array([grad_f[r : r + wh, c : c + ww].std() for r, c in windows])
    floor = min_relative_energy * float(np.median(energy))
    agree = disagree = skipped = ambiguous = 0
    offsets = []
    for (r, c), e in zip(windows, energy, strict=True):
        if e <= floor or e <= 0:
            skipped += 1
            continue
        result = cv2.matchTemplate(canvas, grad_f[r : r + wh, c : c + ww], cv2.TM_CCOEFF_NORMED)
        _, best, _, (px, py) = cv2.minMaxLoc(result)
        # claimed canvas position of the window's origin is (c − x0, r − y0); measure in mosaic px
        d = (fixed_to_mosaic[:2, :2] @ np.array([px + x0 - c, py + y0 - r], float))
        dist = float(np.hypot(*d))
        offsets.append(round(dist, 2))
        if dist > tolerance_px:
            disagree += 1
            continue
        # a window of a repeating pattern matches one period away about as well: its "agreement"
        # is a coin toss among the periods and says nothing about the placement
        rad = int(np.ceil(2 * tolerance_px)) + 1
        result[max(0, py - rad) : py + rad + 1, max(0, px - rad) : px + rad + 1] = -1.0
        if best - float(result.max()) < min_margin:
            ambiguous += 1
        else:
            agree += 1
    # the whole footprint (inner part) the same way: its margin over the best placement elsewhere
    whole_margin = _footprint_margin(canvas, grad_f, x0, y0, tolerance_px)
    return SubregionCheck(agree=agree, disagree=disagree, skipped=skipped, offsets_px=tuple(offsets),
                          ambiguous=ambiguous, whole_margin=whole_margin)


def _feature_pair(fixed: np.ndarray, mosaic: np.ndarray, features: str, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """(mosaic, fixed) feature images: gradient magnitude, or local contrast or bands of the log mosaic."""
    if features == "gradient":
        return gradient_magnitude(mosaic, sigma=sigma), gradient_magnitude(fixed, sigma=sigma)
    if features in ("contrast", "bands"):  # the log mosaic: optical shading multiplies
        feature = contrast_features if features == "contrast" else band_features
        return feature(np.log(np.maximum(mosaic, 1e-4))), feature(fixed)
    raise ValueError(f"features must be 'gradient', 'contrast' or 'bands', got {features!r}")


#: ``local_consistency``'s windows must be this wide (px) to be located at all, and the similarity
#: fitted to their shifts this close to the identity (|scale − 1| and |rotation| in radians) to
#: be a correction: a 40 px SEM image's 16 px windows once fitted a 50 % scale change.
MIN_LOCAL_WINDOW_PX, MAX_LOCAL_SIMILARITY = 24, 0.05


@dataclass(frozen=True)
class LocalCheck:
    """Windows of the SEM re-located near where a placement puts them (see ``local_consistency``).

    ``located`` : windows with a distinct local peak; ``offsets_px`` : their distances (mosaic
    px) from the claim; ``median_px`` : the median of those (nan when none was located);
    ``correction`` : (3, 3) fixed px → fixed px, the similarity fitted to the windows' shifts
    (the claim composed with it puts them where they were found), None with fewer than 3 or
    beyond ``MAX_LOCAL_SIMILARITY`` in scale or rotation (no small move the windows agree on);
    ``correction_px`` : mean distance (mosaic px) it moves the footprint (nan without one).
    """

    located: int
    median_px: float
    offsets_px: tuple[float, ...]
    correction: np.ndarray | None = None
    correction_px: float = float("nan")

    @property
    def off_px(self) -> float | None:
        """How far off (mosaic px) the windows say the claim is: their fitted move with one, their
        median offset with exactly 2 windows, None where they cannot say."""
        if self.correction is not None:
            return self.correction_px
        return self.median_px if self.located == 2 else None


def local_consistency(
    fixed: np.ndarray,
    mosaic: np.ndarray,
    fixed_to_mosaic: np.ndarray,
    *,
    grid: int = 4,
    window_fraction: float = 0.4,
    radius_px: int = 8,
    min_peak_gap: float = 0.03,
    sigma: float = 1.5,
    features: str = "gradient",
) -> LocalCheck:
    """Re-locate ``grid``×``grid`` SEM windows within ±``radius_px`` of the claim; how far off they sit.

    fixed : (h, w) float32, SEM at the mosaic's pixel size; mosaic : (H, W) float32.
    The whole-image checks (``verify_placement``) tell a right place from a wrong one; this one
    tells a right transform from one stuck a little off in scale or rotation, which still
    correlates best as a whole near the right place but leaves its corners pixels off. Each
    window is matched (NCC of ``features``) in the mosaic warped by the claim; a window counts
    when its peak lies inside the search box and beats everything beyond ±2 px by
    ``min_peak_gap`` (a flat or periodic window has no local answer). The similarity fitted to
    the windows' shifts measures how far off the claim is: on the simulator pairs' adversarial
    starts, polishes stuck 2.2–2.9 px off gave 2.2–3.3 px, right ones ≤ 0.5 px; on one
    synthetic pair with inverted contrast, a placement 0.5 px off gave 1.1 px (where optical
    and SEM edges differ in width, windows are biased by the edges they hold).
    """
    h, w = fixed.shape
    wh, ww = int(h * window_fraction), int(w * window_fraction)
    if min(wh, ww) < MIN_LOCAL_WINDOW_PX:  # too little in a window to locate it
        return LocalCheck(located=0, median_px=float("nan"), offsets_px=())
    feature_m, feature_f = _feature_pair(fixed, mosaic, features, sigma)
    canvas, x0, y0 = _fixed_frame_canvas(fixed.shape, feature_m, fixed_to_mosaic)
    centres, shifts = [], []  # fixed px
    for r in np.linspace(0, h - wh, grid).round().astype(int):
        for c in np.linspace(0, w - ww, grid).round().astype(int):
            y, x = r - y0 - radius_px, c - x0 - radius_px  # canvas origin of the search box
            if y < 0 or x < 0 or y + wh + 2 * radius_px > canvas.shape[0] or x + ww + 2 * radius_px > canvas.shape[1]:
                continue
            template = feature_f[r : r + wh, c : c + ww]
            if template.std() <= 0:
                continue
            result = cv2.matchTemplate(canvas[y : y + wh + 2 * radius_px, x : x + ww + 2 * radius_px], template,
                                       cv2.TM_CCOEFF_NORMED)
            _, best, _, (px, py) = cv2.minMaxLoc(result)
            if px in (0, result.shape[1] - 1) or py in (0, result.shape[0] - 1):
                continue  # the peak lies outside the box: no local answer
            dr, dc = subpixel_peak(result, py, px)
            result[max(0, py - 2) : py + 3, max(0, px - 2) : px + 3] = -1.0
            if best - float(result.max()) < min_peak_gap:
                continue
            centres.append((c + (ww - 1) / 2, r + (wh - 1) / 2))
            shifts.append((px + dc - radius_px, py + dr - radius_px))
    lin = fixed_to_mosaic[:2, :2]
    offsets = [round(float(np.hypot(*(lin @ d))), 3) for d in shifts]
    median = float(np.median(offsets)) if offsets else float("nan")
    correction, correction_px = None, float("nan")
    if len(shifts) >= 3:
        # window p is found at p + v: fit v = [[a, −b], [b, a]] (p − centre) + t, evaluate it over the footprint
        p = np.asarray(centres) - ((w - 1) / 2, (h - 1) / 2)
        v = np.asarray(shifts, float)
        a, b, tx, ty = _robust_similarity_field(p, v)
        gx, gy = np.meshgrid(np.linspace(-(w - 1) / 2, (w - 1) / 2, 9), np.linspace(-(h - 1) / 2, (h - 1) / 2, 9))
        field = np.stack([a * gx - b * gy + tx, b * gx + a * gy + ty]).reshape(2, -1)
        correction_px = float(np.mean(np.hypot(*(lin @ field))))
        cx, cy = (w - 1) / 2, (h - 1) / 2
        if max(abs(a), abs(b)) <= MAX_LOCAL_SIMILARITY:  # beyond: the windows do not agree on a small move
            correction = np.array([[1 + a, -b, tx - a * cx + b * cy], [b, 1 + a, ty - b * cx - a * cy], [0, 0, 1]])
    return LocalCheck(located=len(offsets), median_px=median, offsets_px=tuple(offsets), correction=correction,
                      correction_px=correction_px)


def _robust_similarity_field(p: np.ndarray, v: np.ndarray, inlier_px: float = 1.0) -> np.ndarray:
    """(a, b, tx, ty) of the shift field v = [[a, −b], [b, a]] p + t, fitted (``similarity_lstsq``)
    on the windows that agree with the best hypothesis.

    Hypotheses: no shift at all, and the field through each pair of windows (exhaustive: at
    most 120 pairs); the one with the most windows within ``inlier_px`` wins (then the smaller
    sum of their residuals). A window caught by a neighbouring feature cannot drag the fit.
    """
    def residuals(params: np.ndarray) -> np.ndarray:
        a, b, tx, ty = params
        return np.hypot(a * p[:, 0] - b * p[:, 1] + tx - v[:, 0], b * p[:, 0] + a * p[:, 1] + ty - v[:, 1])

    hypotheses = [np.zeros(4)] + [similarity_lstsq(p[[i, j]], v[[i, j]])
                                  for i in range(len(p)) for j in range(i + 1, len(p))]
    best_key, inliers = None, None
    for params in hypotheses:
        r = residuals(params)
        near = r <= inlier_px
        key = (int(near.sum()), -float(r[near].sum()))
        if best_key is None or key > best_key:
            best_key, inliers = key, near
    return similarity_lstsq(p[inliers], v[inliers]) if inliers.sum() >= 2 else similarity_lstsq(p, v)


def _footprint_margin(canvas: np.ndarray, feature_f: np.ndarray, x0: int, y0: int, tolerance_px: float) -> float:
    """NCC of the fixed image's inner part at its claimed place in ``canvas`` minus its best elsewhere.

    canvas : mosaic features warped into the fixed frame, canvas px = fixed px − (x0, y0).
    """
    h, w = feature_f.shape[:2]
    b = max(2, int(0.05 * min(h, w)))
    result = cv2.matchTemplate(canvas, feature_f[b : h - b, b : w - b], cv2.TM_CCOEFF_NORMED)
    cy, cx = b - y0, b - x0  # claimed position of the inner window's origin
    if not (0 <= cy < result.shape[0] and 0 <= cx < result.shape[1]):
        return -1.0
    rad = int(np.ceil(2 * tolerance_px)) + 1
    near = (slice(max(0, cy - rad), cy + rad + 1), slice(max(0, cx - rad), cx + rad + 1))
    at_claim = float(result[near].max())
    result[near] = -1.0
    return at_claim - float(result.max())


def _fixed_frame_canvas(fixed_shape: tuple[int, int], mosaic_feature: np.ndarray, fixed_to_mosaic: np.ndarray,
                        ) -> tuple[np.ndarray, int, int]:
    """The whole mosaic feature image warped into the fixed frame: (canvas, x0, y0), canvas px = fixed px − (x0, y0)."""
    h, w = fixed_shape
    hm, wm = mosaic_feature.shape[:2]
    corners = np.array([[-0.5, -0.5, 1], [wm - 0.5, -0.5, 1], [wm - 0.5, hm - 0.5, 1], [-0.5, hm - 0.5, 1]]).T
    mapped = np.linalg.inv(fixed_to_mosaic) @ corners
    mapped = mapped[:2] / mapped[2]
    x0 = int(np.floor(min(mapped[0].min(), 0))) - 2
    y0 = int(np.floor(min(mapped[1].min(), 0))) - 2
    x1 = int(np.ceil(max(mapped[0].max(), w))) + 2
    y1 = int(np.ceil(max(mapped[1].max(), h))) + 2
    if (x1 - x0) * (y1 - y0) > MAX_MOSAIC_TO_FOOTPRINT_AREA * h * w:
        raise ValueError("the mosaic is too large relative to the SEM footprint")
    shift = np.array([[1.0, 0, x0], [0, 1.0, y0], [0, 0, 1]])  # canvas px → fixed px
    canvas = cv2.warpAffine(mosaic_feature, (fixed_to_mosaic @ shift)[:2], (x1 - x0, y1 - y0),
                            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    return canvas, x0, y0


def contrast_margin(fixed: np.ndarray, mosaic: np.ndarray, fixed_to_mosaic: np.ndarray, *,
                    tolerance_px: float = 3.0) -> float:
    """Whole-footprint margin of a placement in local-contrast features (``contrast_features``).

    fixed : (h, w) float32, SEM at the mosaic's pixel size; mosaic : (H, W) float32 [0, 1].
    NCC at the claim minus the best NCC beyond 2 × ``tolerance_px`` (> 0: the claim is the best
    place). A second opinion beside the gradient features of ``subregion_agreement``: on a
    synthetic IC layout a wrong place 69 px off out-correlated the truth in gradients (0.73 vs
    0.57) while these features ranked the truth first by 0.2.
    """
    feature_m, feature_f = _feature_pair(fixed, mosaic, "contrast", sigma=0.0)
    canvas, x0, y0 = _fixed_frame_canvas(fixed.shape, feature_m, fixed_to_mosaic)
    return _footprint_margin(canvas, feature_f, x0, y0, tolerance_px)


def _verified(check, min_agree: int, min_margin: float) -> bool:
    """The independent check passes: enough re-located windows and a distinct whole footprint."""
    # windows of a repeating pattern found at the claim count here: the whole-footprint margin
    # is what separates a period alias (margin ≤ 0.025 on simulator pairs) from the true place
    return check.agree + check.ambiguous >= min_agree and check.whole_margin >= min_margin


#: The routes of ``verify_placement``, tried in this order; a verdict's ``by`` names the one that passed.
VERIFY_ROUTES = ("gradients", "contrast features", "locally normalised bands")


def verify_placement(fixed: np.ndarray, mosaic: np.ndarray, fixed_to_mosaic: np.ndarray, *, min_agree: int,
            min_margin: float, min_contrast_margin: float, min_contrast_whole_margin: float,
            routes: tuple[str, ...] = VERIFY_ROUTES) -> dict:
    """Independent check of a placement in gradients, else in local-contrast features, else in bands; JSON-able verdict.

    Gradients: ``_verified`` and a contrast-feature whole margin > ``min_contrast_margin``.
    Contrast features (SEM pads seen as bright outlines, filled in the optical image, defeat
    gradients): ≥ ``min_agree`` windows found uniquely at the claim, a whole margin ≥
    ``min_contrast_whole_margin``, and gradients preferring no other place (margin ≥ 0).
    Bands (``band_features``: where a few structures the optical image shows bright rule the
    gradients, which then prefer another place): ``_verified`` in bands, with the same limits as
    gradients, and the contrast-feature whole margin > ``min_contrast_margin``. A margin is the
    claim's correlation minus the best beyond a few px, so in each feature the places that pass
    lie within a few px of one another: a wrong one passes only where that feature prefers it to
    the truth by ``min_margin``. ``routes``: those of ``VERIFY_ROUTES`` to try.
    """
    check = subregion_agreement(fixed, mosaic, fixed_to_mosaic)
    margin = contrast_margin(fixed, mosaic, fixed_to_mosaic)
    verdict = {"agree": check.agree, "disagree": check.disagree, "skipped": check.skipped,
               "ambiguous": check.ambiguous, "offsets_px": list(check.offsets_px),
               "whole_margin": round(check.whole_margin, 4), "contrast_whole_margin": round(margin, 4)}
    if "gradients" in routes and _verified(check, min_agree, min_margin) and margin > min_contrast_margin:
        return {**verdict, "verified": True, "by": "gradients"}
    if "contrast features" in routes and margin >= min_contrast_whole_margin and check.whole_margin >= 0:
        by_contrast = subregion_agreement(fixed, mosaic, fixed_to_mosaic, features="contrast")
        verdict["contrast_agree"] = by_contrast.agree
        if by_contrast.agree >= min_agree:
            return {**verdict, "verified": True, "by": "contrast features"}
    if "locally normalised bands" in routes and margin > min_contrast_margin:
        by_bands = subregion_agreement(fixed, mosaic, fixed_to_mosaic, features="bands")
        verdict["bands_agree"] = by_bands.agree + by_bands.ambiguous
        verdict["bands_whole_margin"] = round(by_bands.whole_margin, 4)
        if _verified(by_bands, min_agree, min_margin):
            return {**verdict, "verified": True, "by": "locally normalised bands"}
    return {**verdict, "verified": False, "by": ""}


def sem_footprint(sem_to_mosaic: np.ndarray, sem_shape_rc: tuple[int, int]) -> np.ndarray:
    """Corners of the SEM image in mosaic pixels, (4, 2) float64 as (x, y)."""
    h, w = sem_shape_rc
    corners = np.array([[-0.5, -0.5, 1], [w - 0.5, -0.5, 1], [w - 0.5, h - 0.5, 1], [-0.5, h - 0.5, 1]]).T
    mapped = sem_to_mosaic @ corners
    return (mapped[:2] / mapped[2]).T


def footprint_overlap(sem_to_mosaic: np.ndarray, sem_shape_rc: tuple[int, int],
                      mosaic_shape_rc: tuple[int, int]) -> float:
    """Fraction of the SEM image's footprint that lies inside the mosaic (0…1)."""
    corners = sem_footprint(sem_to_mosaic, sem_shape_rc).astype(np.float32)
    h, w = mosaic_shape_rc
    box = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]], np.float32)
    area = abs(cv2.contourArea(corners))
    if area <= 0:
        return 0.0
    inter, _ = cv2.intersectConvexConvex(corners, box)
    return float(inter / area)


def extrapolation(fixed: np.ndarray, *, sigma: float = 1.5, n: int = 9) -> float:
    """How much a similarity fitted to the image's detail extrapolates over the whole image (≥ 1).

    fixed : (h, w) float32, the SEM at the mosaic's pixel size.
    From the information matrix of gradient-feature alignment in (shift x, shift y, scale,
    rotation), the predicted position error over an n×n grid of the image, mean over the grid
    divided by its minimum: ~1.5 for detail spread over the image, large when the detail sits in
    one part (scale and rotation then rest on a short lever).
    """
    feature = gradient_magnitude(fixed, sigma=sigma).astype(np.float64)
    h, w = feature.shape
    b = int(np.ceil(2 * sigma)) + 2
    if min(h, w) <= 2 * b + 4:
        return float("inf")
    gx = cv2.Sobel(feature, cv2.CV_64F, 1, 0, ksize=3)[b:h - b, b:w - b]
    gy = cv2.Sobel(feature, cv2.CV_64F, 0, 1, ksize=3)[b:h - b, b:w - b]
    ys, xs = np.mgrid[b:h - b, b:w - b]
    dx, dy = (xs - (w - 1) / 2) / w, (ys - (h - 1) / 2) / w  # lever arms in image widths
    rows = np.stack([gx, gy, gx * dx + gy * dy, gy * dx - gx * dy], axis=-1).reshape(-1, 4)
    info = rows.T @ rows
    if np.linalg.cond(info) > 1e12:
        return float("inf")
    cov = np.linalg.inv(info)
    q = np.linspace(-0.5, 0.5, n) * (w - 1) / w
    qx, qy = np.meshgrid(q, q * (h - 1) / (w - 1))
    jac = np.zeros((qx.size, 2, 4))
    jac[:, 0, 0] = jac[:, 1, 1] = 1.0
    jac[:, 0, 2], jac[:, 0, 3] = qx.ravel(), -qy.ravel()
    jac[:, 1, 2], jac[:, 1, 3] = qy.ravel(), qx.ravel()
    error = np.sqrt(np.einsum("kij,jl,kil->k", jac, cov, jac))
    return float(error.mean() / error.min())


def registered_feature_ncc(fixed: np.ndarray, moving: np.ndarray, fixed_to_moving: np.ndarray, *,
                           features: str, sigma: float = 1.5) -> float:
    """NCC of ``features`` ("gradient" or "contrast") between the fixed image and the moving one warped onto it."""
    h, w = fixed.shape
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    feature_m, feature_f = _feature_pair(fixed, moving, features, sigma)
    warped = cv2.warpAffine(feature_m, fixed_to_moving[:2], (w, h), flags=flags)
    valid = cv2.warpAffine(np.ones(moving.shape, np.float32), fixed_to_moving[:2], (w, h), flags=flags) > 0.999
    return gradient_ncc(feature_f, warped, valid)
