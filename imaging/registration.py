"""Mosaic ↔ SEM registration: coarse sweep or landmarks, a bounded polish, then cross-checks.

Pipeline (measured best in ../shared/reference/imaging_anchors.md §3.2):
1. coarse — scale from the two pixel sizes, rotation ±5° / scale ±3 % sweeps of phase
   correlation on gradient magnitude and of NCC on local-contrast features of the log mosaic
   (``imaging.coarse_registration``), or ≥ 3 landmark pairs;
2. candidates — each distinct coarse placement is polished by a bounded grid search of
   gradient correlation (``imaging.registration_polish``), moved by the similarity its SEM
   windows re-located nearby fit where they say it is off, and verified independently
   (``imaging.registration_checks``: sub-windows in gradients, else in local-contrast features
   where SEM edge outlines defeat gradients, else in locally normalised bands where a few bright
   structures rule them); exactly one must pass, or the match is ambiguous;
   landmarks are polished the same way from their fit, without the independent check (the
   user has placed the SEM image; inside a repeating array that check refuses the truth);
3. fine — Mattes mutual information, similarity then affine (SimpleITK), and ECC on gradient
   magnitude, from the polish: cross-checks of the polish, which is the answer (more accurate
   on simulated SSUM pairs) (``imaging.fine_registration``).

The answer is a frozen ``Registration`` whose ``mosaic_to_sem`` maps mosaic pixel (x, y) to
SEM pixel (x, y) (pixel centres at integer coordinates). It is falsy, with its reason, when any
check fails — a caller never gets a silently wrong transform.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from imaging.coarse_registration import _scale_matrix, coarse_register
from imaging.fine_registration import refine_ecc, refine_mutual_information
from imaging.imageio import to_float32
from imaging.registration_checks import (
    MAX_MOSAIC_TO_FOOTPRINT_AREA,
    VERIFY_ROUTES,
    LocalCheck,
    extrapolation,
    footprint_overlap,
    local_consistency,
    registered_feature_ncc,
    sem_footprint,
    verify_placement,
)
from imaging.registration_features import similarity_lstsq
from imaging.registration_polish import Polish, polish_placement

__all__ = ["Registration", "register", "register_by_landmarks", "register_landmarks", "landmark_box",
           "fit_landmarks", "check_landmarks"]


@dataclass(frozen=True)
class Registration:
    """Result of a mosaic ↔ SEM registration.

    mosaic_to_sem : (3, 3) float64, mosaic pixel (x, y) → SEM pixel (x, y).
    ok / reason : ``bool(registration)`` is ``ok``; ``reason`` says why it failed (or "").
    method : "auto", "landmarks" (the clicks' fit) or "landmarks+polish" (refined on the images).
    residual_px : mosaic px — how far the translation ECC lands from the answer ("auto",
        "landmarks+polish") or the clicks' RMS residual ("landmarks").
    confidence : 0…1, higher is better (gradient correlation × agreement).
    details : JSON-able diagnostics (scores, angles, timings).
    """

    mosaic_to_sem: np.ndarray
    ok: bool
    reason: str
    method: str
    residual_px: float
    confidence: float
    details: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        matrix = np.array(self.mosaic_to_sem, dtype=np.float64).reshape(3, 3)
        matrix.setflags(write=False)
        object.__setattr__(self, "mosaic_to_sem", matrix)

    def __bool__(self) -> bool:
        return bool(self.ok)

    @property
    def sem_to_mosaic(self) -> np.ndarray:
        return np.linalg.inv(self.mosaic_to_sem)

    def in_larger_image(self, x0: float, y0: float) -> Registration:
        """The same registration for a mosaic whose part from pixel (x0, y0) on was registered."""
        if x0 == 0 and y0 == 0:
            return self
        to_part = np.array([[1.0, 0, -x0], [0, 1.0, -y0], [0, 0, 1]])  # mosaic px → px of the part
        return replace(self, mosaic_to_sem=self.mosaic_to_sem @ to_part,
                       details={**self.details, "part_origin_px": [x0, y0]})

    def to_dict(self) -> dict:
        return {
            "mosaic_to_sem": self.mosaic_to_sem.tolist(),
            "ok": bool(self.ok),
            "reason": self.reason,
            "method": self.method,
            "residual_px": _json_float(self.residual_px),
            "confidence": _json_float(self.confidence),
            "details": self.details,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Registration:
        return cls(
            mosaic_to_sem=np.asarray(data["mosaic_to_sem"], dtype=np.float64),
            ok=bool(data["ok"]),
            reason=str(data.get("reason", "")),
            method=str(data["method"]),
            residual_px=float("nan") if data.get("residual_px") is None else float(data["residual_px"]),
            confidence=float(data.get("confidence") or 0.0),
            details=dict(data.get("details", {})),
        )


def _json_float(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


# ---------------------------------------------------------------------------------- landmarks


def fit_landmarks(
    source_xy: Sequence[Sequence[float]],
    target_xy: Sequence[Sequence[float]],
    *,
    model: str = "similarity",
) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares transform source → target from point pairs.

    source_xy, target_xy : (N, 2) pixel coordinates (x, y), N ≥ 3.
    model : "similarity" (rotation, uniform scale, translation) or "affine".
    Returns (matrix (3, 3) float64, residuals (N,) in target px).
    Raises ValueError for fewer than 3 pairs, mismatched lengths, or points that are
    collinear / coincident in either image (the transform would be undetermined).
    """
    if model not in ("similarity", "affine"):
        raise ValueError(f"model must be 'similarity' or 'affine', got {model!r}")
    src = np.asarray(source_xy, dtype=np.float64)
    dst = np.asarray(target_xy, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or dst.shape != src.shape:
        raise ValueError(f"landmarks must be two (N, 2) arrays of (x, y), got {src.shape} and {dst.shape}")
    if len(src) < 3:
        raise ValueError(f"need at least 3 landmark pairs, got {len(src)}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("landmark coordinates must be finite numbers")
    for name, pts in (("mosaic", src), ("SEM", dst)):  # source and target are the mosaic and the SEM image here
        centred = pts - pts.mean(axis=0)
        sv = np.linalg.svd(centred, compute_uv=False)
        if sv[0] < 1e-6 or sv[1] < max(1e-3 * sv[0], 0.5):
            raise ValueError(
                f"the {name} landmarks lie on one line (collinear) or on one spot; pick at least 3 points that "
                "span an area, not a line"
            )
    n = len(src)
    if model == "similarity":
        a, b, tx, ty = similarity_lstsq(src, dst)
        matrix = np.array([[a, -b, tx], [b, a, ty], [0, 0, 1.0]])
    else:
        design = np.column_stack([src, np.ones(n)])
        params, *_ = np.linalg.lstsq(design, dst, rcond=None)
        matrix = np.vstack([params.T, [0, 0, 1.0]])
    if abs(np.linalg.det(matrix[:2, :2])) < 1e-12:
        raise ValueError("landmarks give a degenerate (zero-area) transform")
    mapped = (matrix @ np.column_stack([src, np.ones(n)]).T)[:2].T
    return matrix, np.hypot(*(mapped - dst).T)


def check_landmarks(points: Sequence[Sequence[float]], *, model: str = "similarity") -> None:
    """Validate landmark rows ``[mosaic_x, mosaic_y, sem_x, sem_y]``; raises ValueError saying what is wrong."""
    rows = np.asarray(points, dtype=np.float64) if len(points) else np.zeros((0, 4))
    if rows.ndim != 2 or rows.shape[1] != 4:
        raise ValueError("each landmark must be [mosaic_x, mosaic_y, sem_x, sem_y]")
    fit_landmarks(rows[:, :2], rows[:, 2:], model=model)


def register_landmarks(
    mosaic_xy: Sequence[Sequence[float]],
    sem_xy: Sequence[Sequence[float]],
    *,
    model: str = "similarity",
    max_residual_px: float = 3.0,
) -> Registration:
    """Registration from ≥ 3 clicked landmark pairs (mosaic (x, y) px ↔ SEM (x, y) px).

    Falsy when the RMS residual, in mosaic px, exceeds ``max_residual_px`` (points mis-clicked
    or mismatched). Raises ValueError for too few or collinear landmarks.
    """
    matrix, residuals_sem = fit_landmarks(mosaic_xy, sem_xy, model=model)
    sem_px_per_mosaic_px = float(np.sqrt(abs(np.linalg.det(matrix[:2, :2]))))
    rms = float(np.sqrt(np.mean(residuals_sem**2)) / sem_px_per_mosaic_px)
    ok = rms <= max_residual_px
    dof = 4 if model == "similarity" else 6
    details = {"model": model, "n_landmarks": len(residuals_sem), "max_residual_px":
               float(residuals_sem.max() / sem_px_per_mosaic_px)}
    if 2 * len(residuals_sem) <= dof:
        details["note"] = "exactly determined: the residual cannot reveal a mis-click"
    return Registration(
        mosaic_to_sem=matrix, ok=ok, method="landmarks", residual_px=rms,
        confidence=float(np.exp(-rms)),
        reason="" if ok else f"landmark residual {rms:.2f} mosaic px exceeds {max_residual_px} px; check the clicks",
        details=details,
    )


def register_by_landmarks(
    mosaic: np.ndarray,
    sem: np.ndarray,
    *,
    mosaic_px_nm: float,
    sem_px_nm: float,
    mosaic_xy: Sequence[Sequence[float]],
    sem_xy: Sequence[Sequence[float]],
    origin: tuple[int, int] = (0, 0),
) -> Registration:
    """A user's landmark pairs, refined by the image content where the refinement passes its checks.

    mosaic : the whole mosaic, or its part from pixel ``origin`` (x, y) on that holds
        ``landmark_box`` (a job reads only that part of a large mosaic); ``mosaic_xy`` and the
        answer are in the whole mosaic's pixels.
    Refined (``register(..., landmarks=)``, method "landmarks+polish"): on simulator pairs with
    clicks off by 1 px rms the fit was 1.4 px off (median), the refinement 0.33 px. Where the
    refinement is refused the clicks' own fit is the answer (they are the user's placement,
    checked by their residual), with the refusal in ``details["refinement_refused"]`` so the
    page says so; falsy only when the clicks themselves are inconsistent.
    """
    fit = register_landmarks(mosaic_xy, sem_xy)
    if not fit:
        return fit
    ox, oy = origin
    box = landmark_box(mosaic_xy, sem_xy, sem.shape, (oy + mosaic.shape[0], ox + mosaic.shape[1]))
    if box is None:
        return replace(fit, details={**fit.details, "refinement_refused": "the clicked footprint lies outside the mosaic"})
    x0, y0, x1, y1 = box
    if x0 < ox or y0 < oy:
        raise ValueError(f"the mosaic part from {origin} does not hold the clicked footprint's box {box}")
    part_xy = np.asarray(mosaic_xy, dtype=np.float64) - (x0, y0)
    refined = register(mosaic[y0 - oy:y1 - oy, x0 - ox:x1 - ox], sem, mosaic_px_nm=mosaic_px_nm, sem_px_nm=sem_px_nm,
                       landmarks=(part_xy, sem_xy))
    if refined:
        refined = refined.in_larger_image(x0, y0)
        return replace(refined, details={**refined.details, "landmarks": fit.to_dict()})
    return replace(fit, details={**fit.details, "refinement_refused": refined.reason})


#: Mosaic px kept around a clicked SEM footprint for the refinement: the polish moves a few px
#: (far more is refused), and its gradients need a margin.
LANDMARK_MARGIN_PX = 48


def landmark_box(mosaic_xy: Sequence[Sequence[float]], sem_xy: Sequence[Sequence[float]],
                 sem_shape_rc: tuple[int, int], mosaic_shape_rc: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """The part of the mosaic (x0, y0, x1, y1) the landmarks' refinement reads: the SEM footprint
    their fit gives, ``LANDMARK_MARGIN_PX`` around, inside the mosaic; None where < 16 px is left."""
    matrix, _ = fit_landmarks(mosaic_xy, sem_xy)
    corners = sem_footprint(np.linalg.inv(matrix), sem_shape_rc)
    (low_x, low_y), (high_x, high_y) = corners.min(axis=0), corners.max(axis=0)
    rows, cols = mosaic_shape_rc
    x0, y0 = (max(0, int(np.floor(v)) - LANDMARK_MARGIN_PX) for v in (low_x, low_y))
    x1, y1 = min(cols, int(np.ceil(high_x)) + LANDMARK_MARGIN_PX), min(rows, int(np.ceil(high_y)) + LANDMARK_MARGIN_PX)
    return (x0, y0, x1, y1) if x1 - x0 >= 16 and y1 - y0 >= 16 else None


# ------------------------------------------------------------------------------- automatic


def register(
    mosaic: np.ndarray,
    sem: np.ndarray,
    *,
    mosaic_px_nm: float,
    sem_px_nm: float,
    landmarks: tuple[Sequence[Sequence[float]], Sequence[Sequence[float]]] | None = None,
    model: str = "affine",
    max_rotation_deg: float = 5.0,
    max_scale_error: float = 0.03,
    min_score: float = 0.2,
    min_overlap: float = 0.5,
    max_disagreement_px: float = 2.5,
    max_refine_shift_px: float = 8.0,
    min_subregion_agreement: int = 2,
    min_whole_margin: float = 0.03,
    min_contrast_margin: float = -0.05,
    min_contrast_whole_margin: float = 0.08,
    max_extrapolation: float = 2.5,
    max_local_offset_px: float = 1.5,
    max_click_error_px: float = 6.0,
    min_footprint_px: int = 100,
    candidate_score_ratio: float = 1.6,
    seed: int = 0,
) -> Registration:
    """Register an SEM image to a mosaic; returns a ``Registration`` (falsy with a reason on failure).

    mosaic : (H, W) uint16 or float32 [0, 1], pixel size ``mosaic_px_nm``.
    sem : (h, w) uint16 or float32 [0, 1], data bar removed, nominal pixel size ``sem_px_nm``
        (from metadata or the user; may be off by a few %: the sweep covers ±``max_scale_error``).
    landmarks : optional ``(mosaic_xy, sem_xy)`` pairs (≥ 3) replacing the coarse sweep and its
        verification: their similarity fit is polished, refused when the polish moves more than
        ``max_click_error_px`` (or 3× the clicks' RMS residual) from it (``register_by_landmarks``
        falls back to the fit itself).
    model : "similarity" or "affine" for the final mutual-information stage.
    Automatic: every distinct coarse placement scoring ≥ 1/``candidate_score_ratio`` of the best
    of its sweep (and ≥ ``min_score``) is polished (bounded gradient-correlation grid over scale,
    rotation and shift, which gives the answer), moved by the similarity fitted to its SEM windows
    re-located within ±8 px (``_local_check``) when they say it is > ``LOCAL_CORRECTION_PX`` off
    and polished again (up to twice, kept only where the whole-image correlation rises), and verified
    independently; the one that verifies is cross-checked by MI and ECC. Checks, each making the
    result falsy: the SEM footprint ≥ ``min_footprint_px`` across (on synthetic layouts,
    footprints of 64–96 px were accepted ≥ 1 px off in 5 of 10 acceptances, up to 80 px off;
    112–160 px in none of 22) and ≥ 1/``MAX_MOSAIC_TO_FOOTPRINT_AREA`` of the mosaic's area (the
    independent check searches the whole mosaic), both checked first; coarse correlation ≥
    ``min_score``; exactly one
    placement verifying, where verifying means ≥ ``min_subregion_agreement`` of 9 overlapping
    SEM windows (0.6 of each side), each searched over the whole mosaic, found within 3 mosaic
    px of the placement and the whole footprint correlating there ≥ ``min_whole_margin``
    better than anywhere else (on simulator pairs this rejects every repeating-pattern alias
    while correct placements had 0.036–0.31) — or, where gradients cannot tell (SEM edge
    outlines around pads the optical image shows filled), the same test in local-contrast
    features: ≥ ``min_subregion_agreement`` windows found uniquely at the claim, the whole
    footprint ≥ ``min_contrast_whole_margin`` better than elsewhere and no better gradient match
    elsewhere (wrong simulator placements reached 0.060 at most, correct ones 0.11–0.21) — or,
    where a few structures the optical image shows bright rule the gradients, the gradients'
    test in locally normalised bands (``band_features``; 3 more of the bench's 27 simulator
    truths pass, no adversarial start accepted ≥ 1 px off);
    the polish's gradient correlation ≥ ``min_score``, or, verified in contrast features or bands, ≥ 3
    SEM windows re-located nearby putting it within ``max_local_offset_px``; those windows, when
    ≥ 2 are found, putting the answer within ``max_local_offset_px`` (a transform stuck off in
    scale or rotation is right as a whole but not in its parts); ≥ ``min_overlap`` of the SEM
    footprint inside the mosaic; MI moving ≤ ``max_refine_shift_px`` mosaic px from its start
    unless MI's end point fails the independent check the answer passed and either ≥ 3 windows
    confirm the answer or the affine ECC ends within ``max_disagreement_px`` of it (MI drifts
    on sparse or periodic content); the answer and the translation ECC agreeing within
    ``max_disagreement_px`` mosaic px (when ECC converges); the SEM's detail spread enough that
    scale and rotation are not extrapolated far (``extrapolation`` ≤ ``max_extrapolation``: the
    synthetic table reaches 1.8, a simulator pair whose only detail is a cross in one part of
    the SEM image 2.7, accepted 1.1–2 px off).
    """
    if min_subregion_agreement < 0:
        raise ValueError(f"min_subregion_agreement must be >= 0, got {min_subregion_agreement}")
    if model not in ("similarity", "affine"):
        raise ValueError(f"model must be 'similarity' or 'affine', got {model!r}")
    for name, value in (("mosaic_px_nm", mosaic_px_nm), ("sem_px_nm", sem_px_nm)):
        if value is None or not value > 0:
            raise ValueError(f"{name} must be a pixel size > 0 nm, got {value}")
    mosaic = to_float32(mosaic)
    sem = to_float32(sem)
    if mosaic.ndim != 2 or sem.ndim != 2:
        raise ValueError(f"mosaic and sem must be 2-D grey images, got {mosaic.shape} and {sem.shape}")
    if min(mosaic.shape) < 16 or min(sem.shape) < 16:
        raise ValueError(f"images too small to register: mosaic {mosaic.shape}, sem {sem.shape}")

    t0 = time.perf_counter()
    details: dict = {"mosaic_px_nm": float(mosaic_px_nm), "sem_px_nm": float(sem_px_nm), "model": model}
    ratio = mosaic_px_nm / sem_px_nm

    def fail(reason: str, matrix: np.ndarray, method: str, confidence: float = 0.0) -> Registration:
        details["seconds"] = round(time.perf_counter() - t0, 3)
        return Registration(mosaic_to_sem=matrix, ok=False, reason=reason, method=method,
                            residual_px=float("nan"), confidence=confidence, details=details)

    # Fine stages work on the SEM resampled to the mosaic's pixel size: finer SEM detail cannot
    # be matched by the optical image anyway, and it keeps MI fast.
    fixed, down = _to_mosaic_pixels(sem, ratio)

    if landmarks is not None:
        method = "landmarks+polish"
        start = register_landmarks(*landmarks, model="similarity")
        details["landmarks"] = start.to_dict()
        if not start:
            return fail(start.reason, start.mosaic_to_sem, method)
        # The clicks say where; the image content says exactly where. The user has placed the
        # SEM image, so no independent check (inside a repeating array it would refuse the
        # truth): the bounded polish only moves within a click's error of the fit.
        clicked = start.sem_to_mosaic @ np.linalg.inv(down)
        polished_l = _polish_locally_consistent(fixed, mosaic, clicked)
        if polished_l is None:
            return fail("the SEM image is too small at the mosaic's pixel size to refine the landmark fit",
                        start.mosaic_to_sem, method)
        polished, local = polished_l
        moved = _mean_displacement(polished.fixed_to_mosaic, clicked, fixed.shape)
        allowed = max(max_click_error_px, 3 * start.residual_px)
        details["polish_from_clicks_px"] = round(moved, 3)
        if moved > allowed:
            return fail(f"the images match best {moved:.1f} mosaic px from where the landmarks put the SEM image "
                        f"(limit {allowed:.1f}): the clicks are that far off, or the match is on another copy of a "
                        "repeating structure", start.mosaic_to_sem, method)
    else:
        method = "auto"
        share = fixed.size / mosaic.size
        if min(fixed.shape) < min_footprint_px:
            return fail(f"the SEM image is only {min(fixed.shape)} mosaic px across at the mosaic's pixel size, "
                        f"too little to find and verify its place automatically (at least {min_footprint_px}); "
                        "use landmarks", np.linalg.inv(down), method)
        if share * MAX_MOSAIC_TO_FOOTPRINT_AREA < 1:
            details["footprint_share"] = share
            return fail(f"the SEM image covers only 1/{1 / share:.0f} of the mosaic's area, too little to check "
                        f"a match against the whole mosaic (at least 1/{MAX_MOSAIC_TO_FOOTPRINT_AREA}); search only "
                        "the part of the mosaic it lies in, or use landmarks", np.linalg.inv(down), method)
        coarse = coarse_register(mosaic, sem, mosaic_px_nm=mosaic_px_nm, sem_px_nm=sem_px_nm,
                                 max_rotation_deg=max_rotation_deg, max_scale_error=max_scale_error,
                                 candidate_score_ratio=candidate_score_ratio)
        sem_to_mosaic0 = coarse.sem_to_mosaic
        details["coarse"] = {"score": round(coarse.score, 4), "runner_up": round(coarse.runner_up, 4),
                             "angle_deg": coarse.angle_deg, "scale": round(coarse.scale, 4),
                             "seconds": round(time.perf_counter() - t0, 3)}
        if coarse.score < min_score:
            return fail(f"no convincing match of the SEM image in the mosaic (correlation "
                        f"{coarse.score:.2f} < {min_score}); does the SEM image show part of this mosaic?",
                        np.linalg.inv(sem_to_mosaic0), method)
        # Every distinct coarse placement that scores within reach of the best is polished and
        # verified independently: on repeating layouts the best coarse score is often not the
        # true place, and when two places both verify the answer is ambiguous, never a guess.
        verified, tried = [], []
        for sem_to_mosaic_c, score_c in coarse.candidates:
            if score_c < min_score:
                continue
            polished_c = _polish_locally_consistent(fixed, mosaic, sem_to_mosaic_c @ np.linalg.inv(down))
            if polished_c is None:
                continue
            polish_c, local_c = polished_c
            verdict = verify_placement(fixed, mosaic, polish_c.fixed_to_mosaic, min_agree=min_subregion_agreement,
                              min_margin=min_whole_margin, min_contrast_margin=min_contrast_margin,
                              min_contrast_whole_margin=min_contrast_whole_margin)
            tried.append({"coarse_score": round(score_c, 4), "polish_score": round(polish_c.score, 4),
                          **verdict, "local": local_c})
            # Where gradients cannot tell (SEM outlines, optical fills) their correlation stays
            # low at the right place too: a placement verified in contrast features or bands whose
            # windows each sit where it puts them is strong enough without it.
            confirmed_locally = (verdict["by"] in ("contrast features", "locally normalised bands")
                                 and local_c["located"] >= 3 and local_c["off_px"] <= max_local_offset_px)
            if verdict["verified"] and (polish_c.score >= min_score or confirmed_locally):
                verified.append((polish_c, verdict, local_c))
        details["candidates"] = tried
        weak = [t for t in tried if t["verified"]]
        if not verified and weak:
            best = max(weak, key=lambda t: t["polish_score"])
            return fail(f"the best placement passes the independent check (in {best['by']}) but the two images' "
                        f"edges correlate only {best['polish_score']:.2f} there (need {min_score}): too weak a "
                        "match to accept on its own; use landmarks", np.linalg.inv(sem_to_mosaic0), method)
        if not verified:
            best_margin = max((max(t["whole_margin"], t["contrast_whole_margin"], t.get("bands_whole_margin", -1.0))
                               for t in tried), default=-1.0)
            if tried and best_margin < min_whole_margin:
                return fail(f"ambiguous: the SEM image matches other places in the mosaic as well as any of the "
                            f"{len(tried)} where it was tried (the best stands out by {best_margin:+.3f} in "
                            f"correlation, need {min_whole_margin}); it probably shows the inside of a repeating "
                            "pattern, or is not in this mosaic; use landmarks on features that do not repeat "
                            "(the ends of lines, corners)", np.linalg.inv(sem_to_mosaic0), method)
            return fail(f"independent check failed for all {len(tried)} places tried: fewer than "
                        f"{min_subregion_agreement} parts of the SEM image, each searched for across the whole "
                        f"mosaic, are found where a place puts them, or the whole SEM image matches elsewhere "
                        f"about as well; the match is probably on the wrong structure; use landmarks",
                        np.linalg.inv(sem_to_mosaic0), method)
        polished, verdict, local = verified[0]
        for other, _, _ in verified[1:]:
            apart = _mean_displacement(polished.fixed_to_mosaic, other.fixed_to_mosaic, fixed.shape)
            if apart > max_disagreement_px:
                return fail(f"ambiguous match: {len(verified)} placements {apart:.0f} mosaic px apart both pass "
                            "the independent check (repeating structure); use landmarks",
                            np.linalg.inv(polished.fixed_to_mosaic @ down), method)

    if local["off_px"] is not None and local["off_px"] > max_local_offset_px:
        advice = "check the clicks" if landmarks is not None else "use landmarks"
        return fail(f"the placement is right as a whole but not in its parts: {local['located']} SEM windows "
                    f"re-located nearby say it is {local['off_px']:.1f} mosaic px off (limit "
                    f"{max_local_offset_px}), so its scale or rotation is off; {advice}",
                    np.linalg.inv(polished.fixed_to_mosaic @ down), method)
    details["local"] = local
    details["polish"] = {"score": round(polished.score, 4), "scale_change": round(polished.scale_change, 5),
                         "angle_change_deg": round(polished.angle_change_deg, 4), "at_edge": polished.at_edge}
    sem_to_mosaic0 = polished.fixed_to_mosaic @ down

    overlap = footprint_overlap(sem_to_mosaic0, sem.shape, mosaic.shape)
    details["overlap"] = round(overlap, 4)
    if overlap < min_overlap:
        return fail(f"only {overlap:.0%} of the SEM image lies inside the mosaic (need {min_overlap:.0%})",
                    np.linalg.inv(sem_to_mosaic0), method)
    fixed_to_mosaic0 = sem_to_mosaic0 @ np.linalg.inv(down)

    t1 = time.perf_counter()
    fixed_to_mosaic_mi, mi_info = refine_mutual_information(fixed, mosaic, fixed_to_mosaic0,
                                                            model=model, seed=seed)
    details["mi"] = {**mi_info, "seconds": round(time.perf_counter() - t1, 3)}
    shift = _mean_displacement(fixed_to_mosaic_mi, fixed_to_mosaic0, fixed.shape)
    details["mi"]["moved_px"] = round(shift, 3)
    # The answer is the gradient-correlation polish; MI is a cross-check. On simulator pairs MI
    # started next to the truth ended 0.8 px off (median) and drifted up to 40 px on sparse or
    # periodic content, while the bounded polish ended 0.46 px off (from clicks 1 px rms off:
    # MI was refused or ≥ 1 px off on 11 of 27 pairs, the polish 0.32 px off, none ≥ 1 px).
    final = polished.fixed_to_mosaic
    sem_to_mosaic = final @ down
    mosaic_to_sem = np.linalg.inv(sem_to_mosaic)
    affine_ecc = refine_ecc(fixed, mosaic, fixed_to_mosaic0, motion=cv2.MOTION_AFFINE)
    if shift > max_refine_shift_px:
        # MI ran off (sparse or periodic content: on one simulator pair MI started at the truth
        # ends 12 px away): harmless when its end point fails the independent check the answer
        # passed (for landmarks: the clicks stand in for it), and the answer is confirmed in its
        # parts — ≥ 3 SEM windows re-located where it puts them (it passed that check above) or,
        # with too few windows to tell, the affine ECC, a second full-freedom objective, staying
        # with it (a polish stuck 4 px off in scale and rotation also verified, but the affine
        # ECC left it by 4.4 px). MI's end is judged in the features the answer was verified in: an
        # affine end right in part of the image can beat its own shifts in other features (on one
        # simulator pair an end 17 px off passed in bands, where gradients had verified the answer)
        mi_verdict = verify_placement(fixed, mosaic, fixed_to_mosaic_mi, min_agree=min_subregion_agreement,
                             min_margin=min_whole_margin, min_contrast_margin=min_contrast_margin,
                             min_contrast_whole_margin=min_contrast_whole_margin,
                             routes=(verdict["by"],) if method == "auto" else VERIFY_ROUTES)
        details["mi"]["end_verified"] = mi_verdict["verified"]
        ecc_stays = (affine_ecc is not None
                     and _mean_displacement(final, affine_ecc[0], fixed.shape) <= max_disagreement_px)
        if not mi_verdict["verified"] and (local["located"] >= 3 or ecc_stays):
            shift = 0.0
    if shift > max_refine_shift_px:
        return fail(f"mutual-information refinement moved {shift:.1f} px from the gradient-correlation polish "
                    f"(limit {max_refine_shift_px}); the match is unreliable", mosaic_to_sem, method)

    t2 = time.perf_counter()
    # Cross-check with a second objective: ECC on gradient magnitude, on the translation given
    # the result's linear part (an affine ECC has its own biased optimum on optical-vs-SEM
    # gradients, measured up to 3.4 px off), started from the coarse/polished start and from
    # the result (the start reaching the higher ECC score wins); the affine ECC is reported (and
    # only judges an MI run-off, above).
    start_coarse = final.copy()
    start_coarse[:2, 2] = fixed_to_mosaic0[:2, 2] + (fixed_to_mosaic0[:2, :2] - final[:2, :2]) @ (
        np.array(fixed.shape[::-1]) / 2.0 - 0.5)
    ecc_runs = [run for run in (refine_ecc(fixed, mosaic, start_coarse, motion=cv2.MOTION_TRANSLATION),
                                refine_ecc(fixed, mosaic, final, motion=cv2.MOTION_TRANSLATION))
                if run is not None]
    fixed_to_mosaic_ecc = max(ecc_runs, key=lambda run: run[1])[0] if ecc_runs else None
    details["ecc"] = {"converged": fixed_to_mosaic_ecc is not None,
                      "seconds": round(time.perf_counter() - t2, 3)}
    disagreement = float("nan")
    if fixed_to_mosaic_ecc is not None:
        disagreement = _mean_displacement(final, fixed_to_mosaic_ecc, fixed.shape)
        details["ecc"]["disagreement_px"] = round(disagreement, 3)
    if affine_ecc is not None:
        details["ecc"]["affine_disagreement_px"] = round(
            _mean_displacement(final, affine_ecc[0], fixed.shape), 3)

    # scored in the features the placement was verified in (gradients unless they cannot tell)
    by = verdict["by"] if method == "auto" else ""
    features = {"contrast features": "contrast", "locally normalised bands": "bands"}.get(by, "gradient")
    score = registered_feature_ncc(fixed, mosaic, final, features=features, sigma=1.0)
    details[f"final_{features}_ncc"] = round(score, 4)
    agreement = np.exp(-disagreement / max_disagreement_px) if np.isfinite(disagreement) else 0.5
    confidence = float(np.clip(score, 0, 1) ** 0.5 * agreement)
    details["seconds"] = round(time.perf_counter() - t0, 3)
    reason = ""
    if score < min_score:
        reason = f"registered images correlate poorly ({features} correlation {score:.2f} < {min_score})"
    elif np.isfinite(disagreement) and disagreement > max_disagreement_px:
        reason = (f"the two refiners disagree by {disagreement:.2f} mosaic px (limit {max_disagreement_px}); "
                  "check with landmarks")
    if method == "auto":
        # the answer is the verified polish itself: its verdict stands
        details["verify_subregions"] = verdict
    final_overlap = footprint_overlap(sem_to_mosaic, sem.shape, mosaic.shape)
    if not reason and final_overlap < min_overlap:
        reason = f"only {final_overlap:.0%} of the SEM image lies inside the mosaic (need {min_overlap:.0%})"
    if method == "auto":
        spread = extrapolation(fixed)
        details["extrapolation"] = round(spread, 3)
        if not reason and spread > max_extrapolation:
            reason = (f"low confidence: the SEM image's detail lies in a small part of it, so the scale and "
                      f"rotation found there are extrapolated over the rest (expected error {spread:.1f}x the "
                      f"error at the detail, limit {max_extrapolation}); use landmarks spread over the image")
    return Registration(mosaic_to_sem=mosaic_to_sem, ok=not reason, reason=reason, method=method,
                        residual_px=disagreement, confidence=confidence, details=details)


def _local_check(fixed: np.ndarray, mosaic: np.ndarray, fixed_to_mosaic: np.ndarray) -> LocalCheck:
    """``local_consistency`` in gradients; where they locate < 3 windows (too few to fit a
    correction), in the features that locate the most: gradients, bands or contrast features."""
    check = local_consistency(fixed, mosaic, fixed_to_mosaic)
    if check.located >= 3:
        return check
    others = [local_consistency(fixed, mosaic, fixed_to_mosaic, features=f) for f in ("bands", "contrast")]
    return max([check, *others], key=lambda c: c.located)


#: SEM windows saying a polish is more than this off (mosaic px) propose a move: the windows'
#: own bias on right placements reaches 0.5 px on simulator pairs, more on some synthetic ones,
#: and a move is kept only where the whole-image correlation rises, so proposing is cheap.
LOCAL_CORRECTION_PX = 0.5


def _polish_locally_consistent(fixed: np.ndarray, mosaic: np.ndarray, fixed_to_mosaic0: np.ndarray,
                               ) -> tuple[Polish, dict] | None:
    """Polish a placement; where its SEM windows say it is off (the polish stopped on a ridge of
    the whole-image correlation in scale and rotation), move it by their fitted similarity and
    polish again, keeping the move only where the whole-image correlation rises (the windows
    propose, the polish's own objective decides; twice at most).

    Returns (polish, JSON-able local check with ``off_px``: how far off the windows say it is,
    from their fit with ≥ 3 windows, their median offset with 2, None with fewer), or None
    when the image is too small to polish.
    """
    polish = polish_placement(fixed, mosaic, fixed_to_mosaic0)
    if polish is None:
        return None
    check, corrections = _local_check(fixed, mosaic, polish.fixed_to_mosaic), 0
    while check.correction is not None and check.correction_px > LOCAL_CORRECTION_PX and corrections < 2:
        again = polish_placement(fixed, mosaic, polish.fixed_to_mosaic @ check.correction, fine_only=True)
        if again is None or again.score <= polish.score:
            break
        polish, check, corrections = again, _local_check(fixed, mosaic, again.fixed_to_mosaic), corrections + 1
    off = check.off_px
    return polish, {"located": check.located, "off_px": _json_float(None if off is None else round(off, 3)),
                    "offsets_px": list(check.offsets_px), "corrections": corrections}


def _to_mosaic_pixels(sem: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """The SEM resampled to the mosaic's pixel size (when finer) and the SEM px → resampled px matrix.

    The matrix uses the factors the whole-pixel output size really gives, not 1/``ratio``:
    rounding the size is a scale error of up to 0.13 % (0.1 mosaic px) at a 3 % metadata error.
    """
    if ratio <= 1:
        return sem, np.eye(3)
    h, w = sem.shape
    size = (max(8, round(w / ratio)), max(8, round(h / ratio)))
    fixed = cv2.resize(sem, size, interpolation=cv2.INTER_AREA)
    return fixed, _scale_matrix(size[0] / w, size[1] / h)


def _mean_displacement(a: np.ndarray, b: np.ndarray, shape_rc: tuple[int, int], n: int = 9) -> float:
    """Mean distance between two transforms' images of an n×n grid over a (rows, cols) frame."""
    h, w = shape_rc
    xs, ys = np.meshgrid(np.linspace(0, w - 1, n), np.linspace(0, h - 1, n))
    pts = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    pa, pb = a @ pts, b @ pts
    return float(np.mean(np.hypot(*(pa[:2] / pa[2] - pb[:2] / pb[2]))))
