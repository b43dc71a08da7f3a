"""Frames → mosaic: flat-field, pairwise offsets, global placement, feather blending.

Two entry points share one engine:

* :class:`IncrementalStitcher` takes frames as the scan produces them. Each new frame is
  registered against the already-placed frames it overlaps, placed from those links at once and
  blended into the live mosaic; ``add_frame`` returns the touched :class:`Region` so a viewer
  (or a later live-translation step) only refreshes that box. ``finish()`` runs the global
  weighted least-squares solve over every link, with each placed link refined once more on its
  overlap with the sphere's field-dependent blur matched (:mod:`imaging.fieldblur`), and
  re-blends; an estimated flat field is fitted again to where the placed frames overlap
  (:func:`imaging.flatfield.flatfield_from_overlaps`).
* :func:`stitch` does the same for a finished scan in one call (``add_frames``: every frame's
  filters and every link measured at once, on all cores, :func:`imaging.parallel.parallel_map`).

Coordinates: positions are (x, y) of a frame's top-left pixel; stage positions in nm, mosaic
positions in px. Nominal positions may refer to any fixed point of the frame (top-left or
centre, see ``anchor``): only their differences steer the search.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from imaging.blending import Canvas, feather_weight, frame_gains
from imaging.consensus import STAGE_SIGMA_FRACTION, Polish, consensus_placement
from imaging.fieldblur import cross_blurred, estimate_edge_blur, field_radius
from imaging.flatfield import FlatField, apply_flatfield, estimate_flatfield, flatfield_from_overlaps
from imaging.imageio import ImagingError, to_float32, to_uint16
from imaging.pairwise import bandpass, mask_overlap_px, refine_offset, refine_pair, register_pair
from imaging.parallel import parallel_map
from imaging.placement import MRF_SHARPNESS, Link, Placement, disagreement, surface_z
from imaging.repeatable_stage import StageCalibration, fitted_stage, repeatable_stage_placement

__all__ = ["USEFUL_FOV_FRACTION", "UNCERTAIN_CONFIDENCE", "useful_fov_mask", "StitchingError", "Region", "LinkReport", "StitchReport", "Mosaic", "IncrementalStitcher", "stitch", "frame_footprint"]


#: Fraction of the sphere's FOV radius worth registering and blending. The SSUM virtual image
#: darkens by up to 85 % from 0.85 R outwards (total internal reflection at the sphere's rim) and
#: its resolution there is ~2.5× worse; in an overlap that rim sits opposite the other frame's
#: sharp centre and drives the NCC negative (measured −0.1 at the true offset on simulated scans
#: with the full circle, ≥ 0.9 with 0.8 R). The Django shell builds its mask with this radius.
USEFUL_FOV_FRACTION = 0.8


#: Band-passes (low σ, high σ) in px: the integer search; the sub-pixel refinement; a wider one
#: whose refinement is kept where it agrees within 0.25 px (more precise on plain texture, but
#: on simulated SSUM scans big pads drag it). Chosen on tests/imaging scans and simulate_scan.
SEARCH_BAND_PX = (1.0, 8.0)
REFINE_BAND_PX: tuple[float, float] | None = None  # None: the corrected frame itself
PRECISE_BAND_PX: tuple[float, float] | None = None  # (0, 16) tried: 0.05 px on tests/imaging scans, 2.2 px on simulate_scan

#: A frame is reported as uncertain when the joint inference holds its placement with less
#: confidence than UNCERTAIN_CONFIDENCE (its belief mass within 2 px), or with less than
#: SURE_CONFIDENCE while one of its overlaps correlates better by DISAGREEING_NCC at another offset
#: (:func:`imaging.placement.disagreement`). Measured over 24 simulator scans (flat, default and
#: Z-stacked chips, 3×3 and 4×4, seeds 1–4) and 3 synthetic ones, 365 frames, 166 of them with a
#: seam off by > 2 px; the thresholds were chosen on these same scans:
#:
#: - confidence < 0.5 alone: 93 flagged, 84 % with a bad seam (7.0 px mean error, the rest
#:   1.6 px), catching 47 % of the bad seams; aliases that agree around every loop are placed
#:   wrong with full confidence;
#: - with the disagreement: 136 flagged, 82 % with a bad seam (6.3 px, the rest 1.0 px),
#:   catching 67 %. Disagreement alone flags frames of sound scans (2 of the synthetic 6×6,
#:   0.01 px off), where a diagonal link's sliver of overlap peaks elsewhere.
#:
#: No synthetic frame is flagged either way.
UNCERTAIN_CONFIDENCE = 0.5
SURE_CONFIDENCE = 0.9
DISAGREEING_NCC = 0.2


#: At most this many links (the largest overlaps) judge a scan's field blur
#: (:func:`imaging.fieldblur.estimate_edge_blur`: the median of their own best values, and
#: their spread): a 3×3 scan has 12 side links, a 4×4 one 24; more would only cost time.
FIELD_BLUR_LINKS = 12


#: Only links whose lens is at least this fraction of the scan's largest are refined again with
#: the field blur matched: side neighbours, not the corner lenses of diagonal ones (~1/7 of a
#: side's). A corner lies near both frames' rims, about as blurred in each, so there is little
#: to match, and blurring both by the rim's excess only takes their detail: simulated planar
#: chips (3×3 and 4×4, seeds 1/2/4/6) 0.076 px mean error with every link matched, 0.060 with
#: the sides only; synthetic 256–512 px scans 0.005–0.010 px either way.
MATCHED_LENS_FRACTION = 0.5


#: ``progress(fraction, message)``: told as each step of a stitch begins (a job's progress bar).
Progress = Callable[[float, str], None]


def _quiet(fraction: float, message: str) -> None:
    """No one to tell."""


#: On a repeatable stage, a live frame is searched for within this many px (plus 3σ of the stage) of where the
#: stage and the frames placed so far put it, until the stage's map is known: the camera turned against the
#: scanner (0.35° on the simulated bench) moves frames up to ~2.6 px across a 4×4 scan relative to their drift.
LIVE_STAGE_TOLERANCE_PX = 3.0
#: Live links kept before the stage's map fitted to them (rotation, each axis's scale) is used: then the search
#: narrows to LIVE_MAPPED_REACH_PX about the mapped stage, and the frame is pulled there with σ
#: LIVE_MAPPED_SIGMA_PX. Chosen on the simulated bench's closed-loop scans (3×3 and 4×4, seeds 1–3, a
#: bare-silicon flat field): after 2 links, flat chips s1 0.27 → 0.98 px (3×3), 0.32 → 0.69 (4×4), the map
#: taken from too few; after 8, default chips 0.96 → 1.12 px (mean of the six), deep layers' links trusted longer.
LIVE_MAP_LINKS = 4
LIVE_MAPPED_REACH_PX = 2
LIVE_MAPPED_SIGMA_PX = 0.3


#: :meth:`IncrementalStitcher.settle` re-blends the live mosaic only when a frame moved by more than this (px).
SETTLE_MOVE_PX = 0.5
#: From SETTLE_HOLD_FROM_FRAMES frames on, a settling holds the frames the last one placed surely (joint confidence
#: ≥ SETTLED_SURE) where it placed them, but those within SETTLE_FREE_LINKS links of a frame added since: the
#: sweeps then cost what the frames left free cost, not the whole scan's. Simulator scans, stage off by 10 % of the
#: step, settled every row: 8×8 planar 81 → 29 s of settling in all (the last 17.9 → 3.0 s), 0.19 → 0.18 px mean at
#: the end and 1.57 → 0.19 at 40 frames; 6×6 flat 30 → 19 s, 0.25 → 0.24 px. On 4×4 scans settled after every frame,
#: holding from the start saved ~15 % and cost accuracy (planar s3 0.10 → 0.25 px): small scans settle whole.
SETTLE_FREE_LINKS = 2
SETTLED_SURE = 0.9
SETTLE_HOLD_FROM_FRAMES = 25
#: With ``flatfield="estimate"``, settle() estimates the shading from the frames so far once there are this many,
#: and again whenever they have grown by this factor since (each time every link is measured again).
LIVE_FLATFIELD_FRAMES = 4
LIVE_FLATFIELD_GROWTH = 1.5


class StitchingError(ValueError, ImagingError):
    """Frames, positions or options that cannot be stitched (the message says which argument)."""


def useful_fov_mask(mask: np.ndarray, fraction: float) -> np.ndarray:
    """Shrink a circular field-of-view mask to ``fraction`` of its radius, about its centroid.

    mask : (rows, cols) bool, the sphere's full circle (or any roughly circular region).
    fraction : in (0, 1]; 1 returns a copy. The circle's radius is taken from its area.
    """
    mask = np.asarray(mask, bool)
    if not 0 < fraction <= 1:
        raise StitchingError(f"useful_fov_fraction must be in (0, 1], got {fraction}")
    if fraction == 1 or not mask.any():
        return mask.copy()
    rows, cols = np.nonzero(mask)
    radius = np.sqrt(len(rows) / np.pi) * fraction
    yy, xx = np.ogrid[: mask.shape[0], : mask.shape[1]]
    return mask & ((yy - rows.mean()) ** 2 + (xx - cols.mean()) ** 2 <= radius**2)


@dataclass(frozen=True)
class Region:
    """Box of the mosaic a new frame touched: (x, y) of its top-left and its size, in mosaic px.

    ``canvas_grew`` is True when the live canvas was reallocated (its origin may have moved, so
    a viewer should refetch the whole mosaic rather than the box).
    """

    x_px: int
    y_px: int
    width_px: int
    height_px: int
    canvas_grew: bool = False


@dataclass(frozen=True)
class LinkReport:
    i: int
    j: int
    nominal_offset_px: tuple[float, float]
    offset_px: tuple[float, float]
    score: float
    residual_px: float | None
    dropped: str  # "" when used; else low_score / no_overlap / blank / stage_model / inconsistent


@dataclass(frozen=True)
class StitchReport:
    """What the stitcher measured and decided; ``to_json()`` for storage next to the mosaic."""

    pixel_size_nm: float
    frame_shape: tuple[int, int]
    positions_px: tuple[tuple[float, float], ...]
    links: tuple[LinkReport, ...]
    placed_by_stage: tuple[int, ...]
    stage_matrix: tuple[tuple[float, float], tuple[float, float]]
    flatfield: str  # "estimated", "overlaps" (estimated, then fitted to the overlaps), "calibration" or "none"
    mean_residual_px: float
    max_residual_px: float
    score_threshold: float
    seconds: float = field(default=0.0, compare=False)
    #: per frame, how sure the placement is, 0–1 (:data:`UNCERTAIN_CONFIDENCE`); empty when the
    #: placement did not come from the joint inference (a single frame, or no link measured)
    frame_confidence: tuple[float, ...] = ()
    #: per frame, how much better one of its overlaps correlates at another offset (NCC,
    #: :func:`imaging.placement.disagreement`); empty like ``frame_confidence``
    frame_disagreement: tuple[float, ...] = ()
    #: frames whose seams may be off by pixels (:data:`UNCERTAIN_CONFIDENCE`), or placed by the stage alone
    uncertain_frames: tuple[int, ...] = ()
    #: per frame, its brightness relative to the others where they overlap (1: as bright), divided
    #: out in the blend (:func:`imaging.blending.frame_gains`)
    frame_gain: tuple[float, ...] = ()
    #: blur (Gaussian σ, px) the field of view's edge has beyond its centre, matched across each
    #: overlap before the last solve (:mod:`imaging.fieldblur`); 0: not matched
    edge_blur_px: float = 0.0
    #: how ``edge_blur_px`` was chosen: "estimated" (from the overlaps), "given" or "none"; or why
    #: it was not matched though asked to estimate it (:class:`imaging.fieldblur.EdgeBlurEstimate`):
    #: "unbounded" or "inconsistent" (the overlaps differ by more than a field blur: defocused
    #: layers), "no_overlaps"
    edge_blur: str = "none"
    #: the stage's repeatability the placement trusted (1σ per axis, nm; :mod:`imaging.repeatable_stage`),
    #: None: not known, the frames were placed by the joint inference over the overlaps
    stage_repeatability_nm: float | None = None
    #: with a repeatable stage, what the overlaps measured of it (:class:`~imaging.repeatable_stage.StageCalibration`);
    #: "believed": false when too few overlaps agreed with it and the overlaps placed the frames instead
    stage_calibration: dict | None = None

    @property
    def dropped_links(self) -> tuple[LinkReport, ...]:
        return tuple(link for link in self.links if link.dropped)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=False, default=float)


@dataclass(frozen=True)
class Mosaic:
    """image : (rows, cols) uint16; pixel_size_nm; origin_nm : (x, y) stage position of mosaic
    pixel (0, 0) in the nominal positions' frame; positions_px : (N, 2) float (x, y) top-left of
    each frame in mosaic px; report : :class:`StitchReport`."""

    image: np.ndarray
    pixel_size_nm: float
    origin_nm: tuple[float, float]
    positions_px: np.ndarray
    report: StitchReport


def _check_frame(frame, shape, name) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim != 2:
        raise StitchingError(f"{name} must be a 2-D (rows, cols) image, got shape {frame.shape}")
    if shape is not None and frame.shape != tuple(shape):
        raise StitchingError(f"{name} has shape {frame.shape}; all frames must be {tuple(shape)}")
    if np.issubdtype(frame.dtype, np.floating) and not np.isfinite(frame).all():
        raise StitchingError(f"{name} contains NaN or infinite values")
    if not (np.issubdtype(frame.dtype, np.floating) or frame.dtype in (np.uint8, np.uint16)):
        raise StitchingError(f"{name} dtype must be uint16, uint8 or float in [0, 1], got {frame.dtype}")
    return frame


class IncrementalStitcher:
    """Builds a mosaic frame by frame; see the module docstring.

    frame_shape : (rows, cols) of every frame.
    pixel_size_nm : size of one camera pixel on the sample, nm (> 0).
    fov_mask : (rows, cols) bool useful field of view (the sphere's circle); None = whole frame.
    flatfield : a :class:`FlatField`, None (no correction) or ``"estimate"`` (estimated from all
        frames in ``finish()``, and the links measured again on corrected frames before the final
        solve; the live view is uncorrected until :meth:`settle` estimates one from the frames so far).
    max_shift_nm : how far a frame may sit from its nominal place relative to a neighbour, per
        axis; default 20 % of each link's nominal length + 2 px (stage errors ≤ 10 % of the step).
    min_score : NCC below which a link is ignored (0.6: wrong matches on IC-like texture were
        measured to reach ~0.5 by chance; true ones score > 0.9 after flat-field correction).
    edge_blur_px : how much blurrier (Gaussian σ, px) the edge of the useful field of view is
        than its centre, matched across each overlap before the last solve
        (:mod:`imaging.fieldblur`): ``"estimate"`` (from the placed overlaps), a number ≥ 0
        (an instrument's calibration; 0 turns the matching off) or None (off).
    useful_fov_fraction : keep only this fraction of ``fov_mask``'s radius (see
        :data:`USEFUL_FOV_FRACTION` for SSUM frames whose mask is the sphere's full circle).
    stage_repeatability_nm : how closely the stage lands where it reads (1σ per axis, nm; a
        closed-loop piezo: a few nm), or None (not known). Given, the frames go where the stage put
        them, mapped by the rotation and scale that the overlaps measure (:mod:`imaging.repeatable_stage`),
        instead of where the joint inference over the overlaps puts them.

    ``finish()`` fits the stage model by consensus over the links and measures again, inside the
    stage's repeatability, every link that strayed from it (aliases on periodic structures).
    """

    def __init__(
        self,
        *,
        frame_shape: tuple[int, int],
        pixel_size_nm: float,
        fov_mask: np.ndarray | None = None,
        flatfield: FlatField | None | str = None,
        max_shift_nm: float | None = None,
        min_score: float = 0.6,
        min_overlap_px: int = 200,
        max_residual_px: float = 1.0,
        useful_fov_fraction: float = 1.0,
        edge_blur_px: float | str | None = "estimate",
        stage_repeatability_nm: float | None = None,
    ):
        if len(tuple(frame_shape)) != 2 or min(frame_shape) < 8:
            raise StitchingError(f"frame_shape must be (rows, cols) with both ≥ 8, got {frame_shape}")
        if not (np.isfinite(pixel_size_nm) and pixel_size_nm > 0):
            raise StitchingError(f"pixel_size_nm must be a positive number, got {pixel_size_nm}")
        self.frame_shape = tuple(int(v) for v in frame_shape)
        self.pixel_size_nm = float(pixel_size_nm)
        mask = np.ones(self.frame_shape, bool) if fov_mask is None else np.asarray(fov_mask, bool)
        if mask.shape != self.frame_shape:
            raise StitchingError(f"fov_mask shape {mask.shape} does not match frame_shape {self.frame_shape}")
        mask = useful_fov_mask(mask, useful_fov_fraction)
        if mask.sum() < min_overlap_px:
            raise StitchingError("fov_mask keeps almost no pixels; it must mark the useful field of view")
        if not (isinstance(flatfield, FlatField) or flatfield is None or flatfield == "estimate"):
            raise StitchingError('flatfield must be a FlatField, None or "estimate"')
        if isinstance(flatfield, FlatField) and flatfield.shape != self.frame_shape:
            raise StitchingError(f"flatfield shape {flatfield.shape} does not match frame_shape {self.frame_shape}")
        if max_shift_nm is not None and not max_shift_nm > 0:
            raise StitchingError(f"max_shift_nm must be > 0, got {max_shift_nm}")
        if not -1 <= min_score <= 1:
            raise StitchingError(f"min_score must be in [-1, 1], got {min_score}")
        if not (edge_blur_px is None or (isinstance(edge_blur_px, str) and edge_blur_px == "estimate")
                or (isinstance(edge_blur_px, (int, float)) and math.isfinite(edge_blur_px) and edge_blur_px >= 0)):
            raise StitchingError(f'edge_blur_px must be "estimate", a number ≥ 0 or None, got {edge_blur_px!r}')
        if not (stage_repeatability_nm is None or (isinstance(stage_repeatability_nm, (int, float))
                                                   and math.isfinite(stage_repeatability_nm) and stage_repeatability_nm >= 0)):
            raise StitchingError(f"stage_repeatability_nm must be a number ≥ 0 or None, got {stage_repeatability_nm!r}")
        self.edge_blur_px = edge_blur_px
        self._edge_blur: tuple[float, str] = (0.0, "none")
        self.stage_repeatability_nm = None if stage_repeatability_nm is None else float(stage_repeatability_nm)
        self._stage_calibration: StageCalibration | None = None
        self.mask = mask
        self.flatfield = flatfield
        self.max_shift_nm = max_shift_nm
        self.min_score = float(min_score)
        self.min_overlap_px = int(min_overlap_px)
        self.max_residual_px = float(max_residual_px)
        self._weight = feather_weight(mask)
        self._raw: list[np.ndarray] = []
        self._frames: list[np.ndarray] = []
        self._features: list[np.ndarray] = []  # band-passed frames the links are measured on
        self._nominal_px: list[np.ndarray] = []
        self._positions: list[np.ndarray] = []
        self._links: list[Link] = []
        self._unmatched: list[int] = []
        self._live_kept: list[Link] = []  # live links refined where they agreed (on a repeatable stage: its map's)
        self._live_flatfield: FlatField | None = None  # flatfield="estimate": settle()'s, from the frames so far
        self._live_flatfield_frames = 0
        self._canvas: Canvas | None = None
        self._seconds = 0.0
        # settle()'s measurements, by (i, j, start, reach): it measures the same links at the same offsets again
        # and again as frames come (a 6×6 simulator scan: two thirds or more of them); forgotten when the frames are
        # corrected anew
        self._measured: dict[tuple, object] = {}
        self._settled: dict[int, np.ndarray] = {}  # see _keep_settled
        self._settled_frames = 0

    # -- live ---------------------------------------------------------------------------
    def _corrected(self, frame: np.ndarray) -> np.ndarray:
        """The frame flat-field corrected, float32, zero outside the field of view (which nothing
        reads: blending weighs it 0), so that it serves as the refinement's frame as well."""
        flatfield = self.flatfield if isinstance(self.flatfield, FlatField) else self._live_flatfield
        corrected = apply_flatfield(frame, flatfield) if flatfield is not None else to_float32(frame)
        return np.where(self.mask, corrected, np.float32(0)).astype(np.float32, copy=False)

    def _filtered(self, frame: np.ndarray):
        """(search, refine, precise) versions of a corrected frame; see :func:`imaging.pairwise.bandpass`."""
        def filtered(band):
            if band is None:  # the corrected frame itself (the same array: 1 MB a 512 px frame)
                return frame
            return bandpass(frame, self.mask, low_sigma_px=band[0], high_sigma_px=band[1])

        return filtered(SEARCH_BAND_PX), filtered(REFINE_BAND_PX), (None if PRECISE_BAND_PX is None
                                                                   else filtered(PRECISE_BAND_PX))

    def _register(self, i: int, j: int, nominal, radius):
        (search_i, refine_i, precise_i), (search_j, refine_j, precise_j) = self._features[i], self._features[j]
        return register_pair(search_i, search_j, nominal, mask=self.mask, max_shift_px=radius,
                             min_overlap_px=self.min_overlap_px, refine_frames=(refine_i, refine_j),
                             precise_frames=None if precise_i is None else (precise_i, precise_j))

    def _refine(self, i: int, j: int, start):
        (_, refine_i, _), (_, refine_j, _) = self._features[i], self._features[j]
        return refine_pair(refine_i, refine_j, start, mask=self.mask)

    def _remembered(self, kind: str, decimals: int):
        """The measurement ``kind`` ("_register" or "_refine"), remembered by its arguments, the start offset to
        ``decimals`` (a refinement climbs to the same optimum from within a tenth of a pixel)."""
        measure = getattr(self, kind)

        def remembered(i: int, j: int, start, *rest):
            key = (kind, i, j, *np.round(np.asarray(start, float), decimals), *rest)
            if key not in self._measured:
                self._measured[key] = measure(i, j, start, *rest)
            return self._measured[key]

        return remembered

    def _measure(self, i: int, j: int) -> Link:
        nominal = self._nominal_px[j] - self._nominal_px[i]
        if self.max_shift_nm is None:
            radius = 0.2 * float(np.hypot(*nominal)) + 2.0
        else:
            radius = self.max_shift_nm / self.pixel_size_nm
        pair = self._register(i, j, nominal, radius)
        return Link(i, j, tuple(map(float, nominal)), pair.offset_px, pair.score, pair.information, pair.reason,
                    pair.alternatives, pair.surface, pair.surface_base, mask_overlap_px(self.mask, nominal))

    def _neighbours(self, j: int) -> list[int]:
        return [i for i in range(j) if mask_overlap_px(self.mask, self._nominal_px[j] - self._nominal_px[i])
                >= self.min_overlap_px]

    def add_frame(self, frame: np.ndarray, nominal_xy_nm, *, anchor: str = "top_left") -> Region:
        """Register, place and blend the next frame; returns the mosaic box it touched.

        frame : (rows, cols) uint16 (or uint8 / float in [0, 1]).
        nominal_xy_nm : (x, y) stage position in nm. ``anchor`` ("top_left" or "center") says
            which point of the frame it refers to; it must be the same for every frame.
        """
        started = time.perf_counter()
        index = len(self._frames)
        frame, nominal_px = self._checked(index, frame, nominal_xy_nm, anchor)
        self._keep(frame, nominal_px, *self._prepared(frame))
        new_links = parallel_map(lambda i: self._measure(i, index), self._neighbours(index))
        region = self._place(index, new_links)
        self._seconds += time.perf_counter() - started
        return region

    def add_frames(self, frames: Sequence[np.ndarray], nominal_xy_nm, *, anchor: str = "top_left",
                   blend: bool = True) -> None:
        """Add a batch of frames (a finished scan), as :meth:`add_frame` would one by one, with the
        same links and positions, but their filters and links computed on all cores at once.

        nominal_xy_nm : (N, 2) stage positions in nm, one per frame. Nothing is added unless
        every frame and position passes :meth:`add_frame`'s checks.
        blend : False only links these frames, for ``finish()`` to place and blend (a finished scan
            stitched at once): until then they stand where the stage put them, outside the live mosaic
            (which would cost as much memory as the final one). Placing each frame live as well had
            taken a fifth of an 8×8 scan's stitch, every place then thrown away.
        """
        started = time.perf_counter()
        if len(frames) != len(nominal_xy_nm):
            raise StitchingError(f"{len(frames)} frames but {len(nominal_xy_nm)} nominal positions")
        first = len(self._frames)
        checked = [self._checked(first + k, frame, nominal, anchor)
                   for k, (frame, nominal) in enumerate(zip(frames, nominal_xy_nm, strict=True))]
        prepared = parallel_map(lambda item: self._prepared(item[0]), checked)
        for (frame, nominal_px), (corrected, features) in zip(checked, prepared, strict=True):
            self._keep(frame, nominal_px, corrected, features)
        indices = range(first, len(self._frames))
        by_frame: dict[int, list[Link]] = {j: [] for j in indices}
        for link in parallel_map(lambda pair: self._measure(*pair), [(i, j) for j in indices for i in self._neighbours(j)]):
            by_frame[link.j].append(link)
        for j in indices:
            if blend:
                self._place(j, by_frame[j])
            else:
                self._links.extend(by_frame[j])
                self._positions.append(self._nominal_px[j].copy())
        self._seconds += time.perf_counter() - started

    def _checked(self, index: int, frame: np.ndarray, nominal_xy_nm, anchor: str) -> tuple[np.ndarray, np.ndarray]:
        """Frame ``index``, checked, and its nominal top-left position (x, y) in px."""
        frame = _check_frame(frame, self.frame_shape, f"frame {index}")
        nominal = np.asarray(nominal_xy_nm, float)
        if nominal.shape != (2,) or not np.isfinite(nominal).all():
            raise StitchingError(f"nominal_xy_nm must be a finite (x, y) pair, got {nominal_xy_nm!r}")
        if anchor not in ("top_left", "center"):
            raise StitchingError(f'anchor must be "top_left" or "center", got {anchor!r}')
        nominal_px = nominal / self.pixel_size_nm
        if anchor == "center":
            nominal_px = nominal_px - np.array([self.frame_shape[1], self.frame_shape[0]]) / 2.0
        return frame, nominal_px

    def _prepared(self, frame: np.ndarray):
        """(flat-field corrected frame, its filtered versions)."""
        corrected = self._corrected(frame)
        return corrected, self._filtered(corrected)

    def _keep(self, frame, nominal_px, corrected, features) -> None:
        self._raw.append(frame)
        self._frames.append(corrected)
        self._features.append(features)
        self._nominal_px.append(nominal_px)

    def _place(self, index: int, new_links: list[Link]) -> Region:
        """Keep a frame's links, place it from them and blend it into the live mosaic."""
        self._links.extend(new_links)
        votes = [(self._positions[link.i] + np.asarray(link.offset_px), np.asarray(link.information) + np.eye(2) * 1e-6)
                 for link in new_links if not link.reason and link.score >= self.min_score]
        stage = []
        if self.stage_repeatability_nm is not None:
            votes, stage = self._on_repeatable_stage(index, new_links)
        elif votes:
            expected = self._live_position(index, [])  # where the stage and the frames placed so far put it
            votes = self._jointly_voted(new_links, expected)[0] or votes
        if new_links and not votes:
            self._unmatched.append(index)
        position = self._live_position(index, votes + stage)
        self._positions.append(position)
        if self._canvas is None:
            origin = np.floor(position).astype(int)
            self._canvas = Canvas.empty(origin, (self.frame_shape[0] + 1, self.frame_shape[1] + 1))
        box, grew = self._canvas.add(self._frames[index], self._weight, position,
                                     margin=max(self.frame_shape) // 2)
        ox, oy = self._canvas.origin_px
        return Region(int(box[0] - ox), int(box[1] - oy), int(box[2]), int(box[3]), bool(grew))

    def _on_repeatable_stage(self, index: int, new_links: list[Link]) -> tuple[list, list]:
        """A new frame's votes on a repeatable stage: its links agreeing (:meth:`_jointly_voted`) near where the
        stage puts it, mapped by the rotation and scale the live links kept so far measure
        (:func:`imaging.repeatable_stage.fitted_stage`); and, once that map is known (``LIVE_MAP_LINKS``), the
        mapped stage's own vote (else none). Kept links join the map's.

        Simulated closed-loop scans (3×3 and 4×4, seeds 1–3, frames in raster order), mean error before → after,
        with a bare-silicon flat field: planar chips 0.69–1.55 → 0.06–0.15 px, flat 0.83–1.47 → 0.19–0.38,
        default 1.31–1.91 → 0.45–1.65; without: planar 0.91–1.63 → 0.04–1.01, flat 0.91–2.00 → 0.15–0.81, default
        1.36–2.15 → 0.81–1.56 (the stage alone 1.5–2.1); taken serpentine (``bench_stitching.py --stage repeatable
        --live``): planar 0.06–0.30, flat 0.20–0.51, default 0.38–1.82. Before, each link's best peak within a
        few px of the unmapped stage voted: on gratings most lay on an alias 5–60 px away, and the frame stood
        where the turned stage put it."""
        placed = np.array(self._positions).reshape(-1, 2)
        nominal = np.array(self._nominal_px[:index]).reshape(-1, 2)
        mapped = len(self._live_kept) >= LIVE_MAP_LINKS
        stage = fitted_stage(self._live_kept, np.eye(2)) if self._live_kept else np.eye(2)
        # where the stage, so mapped, puts the frame relative to the frames placed so far (on average)
        expected = (np.mean(placed - nominal @ stage.T, axis=0) + stage @ self._nominal_px[index] if len(placed)
                    else self._nominal_px[index].copy())
        if mapped:
            votes, kept = self._jointly_voted(new_links, expected, sigma_px=LIVE_MAPPED_SIGMA_PX,
                                              reach_px=LIVE_MAPPED_REACH_PX)
        else:
            near = LIVE_STAGE_TOLERANCE_PX + 3 * self.stage_repeatability_nm / self.pixel_size_nm
            votes, kept = self._jointly_voted(new_links, expected, sigma_px=near / 2, reach_px=int(np.ceil(near)))
        self._live_kept += kept
        return votes, ([(expected, np.eye(2) / LIVE_MAPPED_SIGMA_PX**2)] if mapped else [])

    def _jointly_voted(self, new_links: list[Link], expected: np.ndarray, *, sigma_px: float | None = None,
                       reach_px: int | None = None) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[Link]]:
        """The new frame's votes from where its links agree, weighed with the stage: the whole-pixel place
        maximising the links' support there (Fisher z of each one's NCC surface, × ``MRF_SHARPNESS``, as the
        joint inference weighs them) plus the log of a stage prior (σ ``sigma_px``, by default the joint
        inference's, about where the stage and the frames placed so far put it: ``expected``; searched within
        ``reach_px``, by default 3σ); each link refined from there, kept where it stays within 1.5 px and
        scores. Empty where none does (the links' own best peaks vote then). Also the kept links, refined.

        Each link's best peak alone put live frames 13–27 px off on simulator scans (a grating's periods
        tie), worse than the stage; the links together and the stage: 0.06–6.5 px with the simulator's
        closed-loop stage, 3.8–11.7 with one off by 10 % of the step (the stage alone 1.5–2.1, 6.8–8.6)."""
        usable = [link for link in new_links if link.surface is not None and link.reason in ("", "unrefined")]
        if not usable:
            return [], []
        if sigma_px is None:
            step = float(np.median([np.hypot(*link.nominal_offset_px) for link in usable]))
            sigma_px = max(STAGE_SIGMA_FRACTION * step, 1.0)
        reach = int(np.ceil(3 * sigma_px)) if reach_px is None else int(reach_px)
        dy, dx = np.mgrid[-reach:reach + 1, -reach:reach + 1]
        centre = np.round(expected).astype(int)
        support = -0.5 * (dx**2 + dy**2) / sigma_px**2
        for link in usable:
            surface = surface_z(link, blank=-0.9)
            ry, rx = (surface.shape[0] - 1) // 2, (surface.shape[1] - 1) // 2
            # surface index (ry + v, rx + u) is the offset surface_base + (u, v) of frame j from frame i
            u = np.round(centre[0] + dx - self._positions[link.i][0] - link.surface_base[0]).astype(int) + rx
            v = np.round(centre[1] + dy - self._positions[link.i][1] - link.surface_base[1]).astype(int) + ry
            inside = (u >= 0) & (v >= 0) & (u < surface.shape[1]) & (v < surface.shape[0])
            z = np.full(u.shape, -1.0)
            z[inside] = surface[v[inside], u[inside]]
            support += MRF_SHARPNESS * z
        r, c = np.unravel_index(int(np.argmax(support)), support.shape)
        place = centre + np.array([dx[r, c], dy[r, c]], float)
        votes, kept = [], []
        for link in usable:
            start = place - self._positions[link.i]
            pair = self._refine(link.i, link.j, start)
            if pair.reason or pair.score < self.min_score or np.hypot(*(np.asarray(pair.offset_px) - start)) > 1.5:
                continue
            votes.append((self._positions[link.i] + np.asarray(pair.offset_px),
                          np.asarray(pair.information) + np.eye(2) * 1e-6))
            kept.append(dataclasses.replace(link, offset_px=tuple(map(float, pair.offset_px)), score=float(pair.score),
                                            information=pair.information, alternatives=(), surface=None))
        return votes, kept

    def _live_position(self, index: int, votes: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """Place a new frame from its good links' votes ((position, information) each, weighted by
        the information), else by the stage drift."""
        while votes:
            total = sum(w for _, w in votes)
            estimate = np.linalg.solve(total, sum(w @ p for p, w in votes))
            misses = [np.hypot(*(p - estimate)) for p, _ in votes]
            worst = int(np.argmax(misses))
            if misses[worst] <= 2 * self.max_residual_px or len(votes) == 1:
                return estimate
            votes.pop(worst)  # one neighbour disagrees with the others: trust the majority
        if not self._positions:
            return self._nominal_px[index].copy()
        drift = np.median(np.array(self._positions) - np.array(self._nominal_px[:index]), axis=0)
        return self._nominal_px[index] + drift

    def settle(self) -> Region | None:
        """Place every frame added so far again, from all their links together as ``finish()`` does (the joint
        inference, or the repeatable stage's map where believed), but on the links as measured live (no flat field
        fitted, no field blur matched); later frames are placed against these places. Re-blends the live mosaic
        where a frame moved by more than ``SETTLE_MOVE_PX`` and returns its whole box then, else None.

        A frame added with one link, on a grating, can only be placed on the likeliest of its periods; the frames
        linking it to its other neighbours later tell which. ``bench/bench_stitching.py --live`` (simulator scans,
        3×3 and 4×4, seeds 1–3, taken serpentine, a bare-silicon flat field), mean error as placed → settled after
        each frame: with a stage off by 10 % of the step, planar chips 0.23–13.2 → 0.04–0.24 px, flat 0.63–12.0 →
        0.16–0.53, default 3.9–12.1 → 3.9–6.9 (as the final stitch: the overlaps cannot tell); on the closed-loop
        stage, told so, planar 0.06–0.30 → 0.02–0.12, flat 0.20–0.51 → 0.11–0.34, default 0.38–1.82 → 0.16–0.85.
        A settling took 0.04–0.09 s at two frames, 0.8–1.7 s at sixteen.

        With ``flatfield="estimate"`` it first estimates the shading from the frames so far (from
        ``LIVE_FLATFIELD_FRAMES``, again as they grow by ``LIVE_FLATFIELD_GROWTH``), corrects them and measures
        their links again: the same scans taken with no calibration, settled after each frame, with a stage off by
        10 % of the step, planar 0.05–3.6 → 0.04–0.24 px, flat 0.12–3.9 → 0.11–0.57, default 3.4–7.0 → 3.7–6.9; on
        the closed-loop stage, told so, planar 0.05–0.21 → 0.04–0.13, flat 0.08–0.27 → 0.10–0.31, default
        0.12–8.4 → 0.15–0.93; from 30 % less to 60 % more time.
        """
        if len(self._frames) < 2 or not self._links:
            return None
        started = time.perf_counter()
        reshaded = False
        if (self.flatfield == "estimate" and len(self._raw) >= LIVE_FLATFIELD_FRAMES
                and len(self._raw) >= LIVE_FLATFIELD_GROWTH * self._live_flatfield_frames):
            # the shading estimated from the frames so far, again as they grow by half: the frames corrected and
            # their links measured again (on shaded frames the NCC surfaces of a planar chip tied a grating's periods)
            self._live_flatfield = estimate_flatfield(self._raw, mask=self.mask)
            self._live_flatfield_frames = len(self._raw)
            self._measure_again()
            reshaded = True
        _, placement, _ = self._placed(live=True, held=None if reshaded else self._held())
        self._keep_settled(placement)
        current = np.array(self._positions)
        settled = placement.positions_px + np.mean(current - placement.positions_px, axis=0)  # the mosaic stays put
        self._positions = list(settled)
        moved = float(np.hypot(*(settled - current).T).max())
        region = None
        if (moved > SETTLE_MOVE_PX or reshaded) and self._canvas is not None:
            self._canvas = None  # the new one replaces it (each is 8 bytes a mosaic pixel)
            self._canvas = self._blended(settled, np.ones(len(settled)))
            region = Region(0, 0, self._canvas.shape[1], self._canvas.shape[0], True)
        self._seconds += time.perf_counter() - started
        return region

    def _held(self) -> dict[int, np.ndarray] | None:
        """Frames a settling holds where the last one placed them (their whole-pixel displacements from the stage):
        those it was sure of, more than ``SETTLE_FREE_LINKS`` links from every frame added since. None: none."""
        if len(self._frames) < SETTLE_HOLD_FROM_FRAMES:
            return None
        free = set(range(self._settled_frames, len(self._frames)))
        for _ in range(SETTLE_FREE_LINKS):
            free |= {f for link in self._links if link.i in free or link.j in free for f in (link.i, link.j)}
        held = {f: d for f, d in self._settled.items() if f not in free}
        return held or None

    def _keep_settled(self, placement: Placement) -> None:
        """What the next settling may hold: the frames just placed jointly with confidence ≥ ``SETTLED_SURE``."""
        self._settled_frames = len(self._frames)
        if placement.confidence is None:  # not by the joint inference (a repeatable stage's map): nothing to hold
            self._settled = {}
            return
        displacement = np.rint(placement.inferred_px - np.array(self._nominal_px)).astype(int)
        self._settled = {f: displacement[f] for f in np.flatnonzero(np.asarray(placement.confidence) >= SETTLED_SURE)}

    @property
    def unmatched_frames(self) -> tuple[int, ...]:
        """Frames (in the order added) that overlap frames added before them but matched none of
        them (every overlap blank or scoring under ``min_score``): the live mosaic shows them
        where the stage put them, shifted by the others' drift, until ``finish()`` places them
        from every link they have."""
        return tuple(self._unmatched)

    @property
    def frame_count(self) -> int:
        """Frames added so far."""
        return len(self._frames)

    @property
    def positions_px(self) -> np.ndarray:
        """(N, 2) float (x, y) of each frame's top-left pixel in the live mosaic so far, in the
        same mosaic px as :attr:`origin_px` (a copy; ``finish()`` returns the final ones)."""
        return np.array(self._positions, float).reshape(-1, 2)

    @property
    def links(self) -> tuple[Link, ...]:
        """The links measured so far between overlapping frames (``finish()`` measures some again)."""
        return tuple(self._links)

    @property
    def origin_px(self) -> tuple[int, int]:
        """(x, y) mosaic px of the live mosaic's top-left pixel; :class:`Region` boxes are relative
        to it, and it moves as the mosaic grows up or left ((0, 0) before the first frame)."""
        if self._canvas is None:
            return 0, 0
        ox, oy = self._canvas.origin_px
        return int(ox), int(oy)

    def mosaic(self) -> np.ndarray:
        """The live mosaic as (rows, cols) uint16 (empty (0, 0) before the first frame)."""
        if self._canvas is None:
            return np.zeros((0, 0), np.uint16)
        return to_uint16(self._canvas.image())

    def _blur_matched(self, links: list[Link], placement: Placement, report: Progress) -> list[Link]:
        """The sound links between side neighbours (:data:`MATCHED_LENS_FRACTION`) refined once more on
        their overlaps cross-blurred (:mod:`imaging.fieldblur`), each from its placed offset, with the
        edge blur estimated from the largest of them (or given); a link whose refinement then fails
        or moves by over a pixel keeps its offset."""
        sound = [k for k, link in enumerate(links) if not link.reason and k not in placement.dropped]
        if self.edge_blur_px is None or not sound:
            return links
        frame = lambda k: self._features[k][1]  # noqa: E731 (the refinement's frames)
        if self.edge_blur_px == "estimate":
            report(0.6, "Estimating how the blur grows towards the edge of the field of view…")
            judges = sorted(sound, key=lambda k: -links[k].lens_px)[:FIELD_BLUR_LINKS]
            found = estimate_edge_blur([(frame(links[k].i), frame(links[k].j), links[k].offset_px) for k in judges],
                                       self.mask, mapper=parallel_map)
            edge = found.edge_blur_px
            self._edge_blur = (edge, found.reason or "estimated")
        else:
            edge = float(self.edge_blur_px)
            self._edge_blur = (edge, "given" if edge > 0 else "none")
        if edge <= 0:
            return links
        radius = field_radius(self.mask)

        def matched(k: int) -> Link:
            link = links[k]
            blurred_i, blurred_j = cross_blurred(frame(link.i), frame(link.j), self.mask, link.offset_px, edge, radius)
            offset, information = refine_offset(blurred_i, blurred_j, link.offset_px, mask=self.mask)
            if (not np.isfinite(offset).all() or not information.any()
                    or math.hypot(*(offset - np.asarray(link.offset_px))) > 1.0):
                return link  # too little overlap left to refine on, or it slid off
            return dataclasses.replace(link, offset_px=(float(offset[0]), float(offset[1])),
                                       information=tuple(map(tuple, information.tolist())))

        report(0.7, "Measuring the overlaps again with the field blur matched…")
        largest = max(links[k].lens_px for k in sound)
        sides = [k for k in sound if links[k].lens_px >= MATCHED_LENS_FRACTION * largest]
        out = list(links)
        for k, link in zip(sides, parallel_map(matched, sides), strict=True):
            out[k] = link
        return out

    # -- final --------------------------------------------------------------------------
    def _measure_again(self) -> None:
        """Every frame corrected again (the flat field changed) and every link measured again on them."""
        self._measured.clear()
        self._frames, self._features = map(list, zip(*parallel_map(self._prepared, self._raw), strict=True))
        self._links = parallel_map(lambda link: self._measure(link.i, link.j), self._links)

    def _placed(self, polish: Polish | None = None, *, live: bool = False,
                held: dict[int, np.ndarray] | None = None) -> tuple[list[Link], Placement, StageCalibration | None]:
        """Links and placement of every frame from all links together: by a repeatable stage, as the overlaps
        measure it, where one is said to be and they agree; else by the joint inference. Also the stage's
        calibration (None: not said to be repeatable). ``live`` (settle()): measurements remembered; ``held``: frames
        the joint inference holds (:meth:`_held`)."""
        nominal = np.array(self._nominal_px)
        register, refine = ((self._remembered("_register", 3), self._remembered("_refine", 1)) if live
                            else (self._register, self._refine))
        calibration = None
        if self.stage_repeatability_nm is not None and len(self._frames) > 1:
            links, placement, calibration = repeatable_stage_placement(
                nominal, self._links, register=register,
                stage_sigma_px=self.stage_repeatability_nm / self.pixel_size_nm, min_score=self.min_score,
                max_residual_px=self.max_residual_px, polish=polish)
            if calibration.believed:
                return links, placement, calibration
        # not said to be repeatable, or the overlaps contradict it: they place the frames
        links, placement = consensus_placement(nominal, self._links, register=register, refine=refine,
                                               min_score=self.min_score, max_residual_px=self.max_residual_px,
                                               polish=polish, held=held)
        return links, placement, calibration

    def _blended(self, positions: np.ndarray, gains: np.ndarray) -> Canvas:
        """Every frame, divided by its gain, feathered into a canvas just large enough at ``positions``."""
        corner = np.floor(positions.min(axis=0)).astype(int)
        extent = np.ceil(positions.max(axis=0)).astype(int) - corner
        canvas = Canvas.empty(corner, (int(extent[1]) + self.frame_shape[0] + 1, int(extent[0]) + self.frame_shape[1] + 1))
        for frame, position, gain in zip(self._frames, positions, gains, strict=False):
            canvas.add(frame / np.float32(gain), self._weight, position)
        return canvas

    def finish(self, progress: Progress | None = None) -> Mosaic:
        """Global solve over all links, re-blend, and return the :class:`Mosaic` with its report
        (:meth:`mosaic` and :attr:`origin_px` are then the final mosaic's). ``progress(fraction,
        message)`` is told as each step begins (fraction of ``finish()``'s work, 0–1)."""
        if not self._frames:
            raise StitchingError("no frames were added; a scan needs at least one frame")
        report = progress or _quiet
        started = time.perf_counter()
        method = "none"
        if self.flatfield == "estimate":
            if len(self._raw) >= 2:
                report(0.0, "Estimating the flat field and measuring the overlaps again…")
                self.flatfield = estimate_flatfield(self._raw, mask=self.mask)
                self._measure_again()
                method = "estimated"
            else:
                self.flatfield = None
        elif isinstance(self.flatfield, FlatField):
            method = self.flatfield.method
        threshold = self.min_score
        report(0.1, f"Placing the {len(self._frames)} frames from all {len(self._links)} overlaps together…")
        polish = lambda links, placed: self._blur_matched(links, placed, report)  # noqa: E731
        self._links, placement, self._stage_calibration = self._placed(polish)
        on_stage = self._stage_calibration is not None and self._stage_calibration.believed
        positions = placement.positions_px
        if isinstance(self.flatfield, FlatField) and self.flatfield.method == "estimated":
            # Placed, the frames show the same spots at different places in the field: a better
            # flat field than the estimate, for the blend (the links are measured on band-passed
            # frames, where shading hardly matters).
            placed = [k for k in range(len(positions)) if k not in set(placement.placed_by_stage)]
            report(0.8, "Fitting the flat field to where the frames overlap…")
            refined = (flatfield_from_overlaps([self._raw[k] for k in placed], positions[placed], mask=self.mask)
                       if len(placed) >= 2 else None)
            if refined is not None:
                self.flatfield, method = refined, refined.method
                self._frames = parallel_map(self._corrected, self._raw)
        # a link to a frame with no link left (a frame of another place, a blank one) is that frame's fault
        lonely = set(placement.placed_by_stage)
        disagreeing = disagreement(len(positions), self._links, positions,
                                   skip={k for k in placement.dropped if {self._links[k].i, self._links[k].j} & lonely})
        # gain compensation, where the frames are corrected for shading (else the vignette decides the ratios)
        used_pairs = [(link.i, link.j) for k, link in enumerate(self._links) if k not in placement.dropped]
        gains = (frame_gains(self._frames, positions, self.mask, used_pairs) if self.flatfield is not None
                 else np.ones(len(self._frames)))
        report(0.9, "Blending the mosaic…")
        self._canvas = None  # the live mosaic gives way to the final one (each is 8 bytes a mosaic pixel)
        self._canvas = self._blended(positions, gains)
        corner = self._canvas.origin_px
        image = to_uint16(self._canvas.image())  # clipped to [0, 1] on the way
        link_reports = tuple(
            LinkReport(link.i, link.j, link.nominal_offset_px, tuple(map(float, link.offset_px)), float(link.score),
                       None if not np.isfinite(res) else float(res), placement.dropped.get(k, ""))
            for k, (link, res) in enumerate(zip(self._links, placement.residual_px, strict=False)))
        used = [r.residual_px for r in link_reports if not r.dropped and r.residual_px is not None]
        self._seconds += time.perf_counter() - started
        local = positions - corner
        report = StitchReport(
            pixel_size_nm=self.pixel_size_nm,
            frame_shape=self.frame_shape,
            positions_px=tuple((float(x), float(y)) for x, y in local),
            links=link_reports,
            placed_by_stage=placement.placed_by_stage,
            stage_matrix=tuple(tuple(map(float, row)) for row in placement.stage_matrix),
            flatfield=method,
            mean_residual_px=float(np.mean(used)) if used else 0.0,
            max_residual_px=float(np.max(used)) if used else 0.0,
            score_threshold=float(threshold),
            seconds=self._seconds,
            frame_confidence=() if placement.confidence is None else tuple(map(float, placement.confidence)),
            frame_disagreement=() if placement.confidence is None else tuple(map(float, disagreeing)),
            uncertain_frames=_uncertain_frames(placement, disagreeing, stage_trusted=on_stage),
            frame_gain=tuple(map(float, gains)),
            edge_blur_px=self._edge_blur[0],
            edge_blur=self._edge_blur[1],
            stage_repeatability_nm=self.stage_repeatability_nm,
            stage_calibration=None if self._stage_calibration is None else self._stage_calibration.to_dict(),
        )
        origin_nm = tuple(float(v) for v in corner * self.pixel_size_nm)
        return Mosaic(image, self.pixel_size_nm, origin_nm, local, report)


def frame_footprint(mosaic_shape: tuple[int, int], positions_px, frames, fov_mask: np.ndarray) -> np.ndarray:
    """(rows, cols) bool: the mosaic pixels that ``frames`` (indices into ``positions_px``, the
    report's (x, y) top-left of each frame in mosaic px) blend into, through ``fov_mask`` (the
    frames' useful field of view); at a fractional position, both pixels it falls between."""
    rows, cols = mosaic_shape
    out = np.zeros((rows, cols), bool)
    fh, fw = fov_mask.shape
    for k in frames:
        px, py = (float(v) for v in positions_px[k])
        x, y = math.floor(px), math.floor(py)
        shifts_x, shifts_y = ((0, 1) if v > w else (0,) for v, w in ((px, x), (py, y)))
        grown = np.zeros((fh + 1, fw + 1), bool)
        for dy in shifts_y:
            for dx in shifts_x:
                grown[dy: dy + fh, dx: dx + fw] |= fov_mask
        r0, c0, r1, c1 = max(0, y), max(0, x), min(rows, y + fh + 1), min(cols, x + fw + 1)
        if r1 > r0 and c1 > c0:
            out[r0:r1, c0:c1] |= grown[r0 - y: r1 - y, c0 - x: c1 - x]
    return out


def _uncertain_frames(placement, disagreeing: np.ndarray, *, stage_trusted: bool = False) -> tuple[int, ...]:
    """Frames placed by the stage alone (unless it is a repeatable stage's to place them), held with
    little confidence, or with some confidence while an overlap disagrees (:data:`UNCERTAIN_CONFIDENCE`)."""
    unsure = set() if stage_trusted else set(placement.placed_by_stage)
    if placement.confidence is not None:
        confidence = placement.confidence
        flagged = (confidence < UNCERTAIN_CONFIDENCE) | ((confidence < SURE_CONFIDENCE) & (disagreeing > DISAGREEING_NCC))
        unsure.update(int(f) for f in np.flatnonzero(flagged))
    return tuple(sorted(unsure))


def stitch(
    frames: Sequence[np.ndarray],
    nominal_xy_nm: np.ndarray,
    *,
    pixel_size_nm: float,
    fov_mask: np.ndarray | None = None,
    flatfield: FlatField | None | str = "estimate",
    anchor: str = "top_left",
    max_shift_nm: float | None = None,
    min_score: float = 0.6,
    useful_fov_fraction: float = 1.0,
    edge_blur_px: float | str | None = "estimate",
    stage_repeatability_nm: float | None = None,
    progress: Progress | None = None,
) -> Mosaic:
    """Stitch a finished scan.

    frames : N (rows, cols) uint16 frames (N ≥ 1; a single frame gives a one-frame mosaic).
    nominal_xy_nm : (N, 2) float, (x, y) stage positions in nm (see ``anchor``).
    pixel_size_nm : camera pixel on the sample, nm.
    fov_mask : (rows, cols) bool useful field of view; None = whole frame.
    useful_fov_fraction : shrink ``fov_mask`` to this fraction of its radius first
        (:data:`USEFUL_FOV_FRACTION` for a mask that is the sphere's full circle).
    flatfield : ``"estimate"`` (from these frames, BaSiC-style, and fitted again to their
        overlaps once they are placed), a :class:`FlatField` (e.g. from a bare-silicon
        calibration) or None.
    progress : optional ``progress(fraction, message)``, told as each step begins (0–1 of the stitch),
        from the calling thread.
    Other options as for :class:`IncrementalStitcher`.
    """
    if frames is None or len(frames) == 0:
        raise StitchingError("frames is empty: the scan has no frames to stitch")
    first = _check_frame(frames[0], None, "frame 0")
    checked = [first] + [_check_frame(f, first.shape, f"frame {k}") for k, f in enumerate(frames[1:], 1)]
    nominal = np.asarray(nominal_xy_nm, float)
    if nominal.shape != (len(checked), 2):
        raise StitchingError(f"nominal_xy_nm must have shape ({len(checked)}, 2) for {len(checked)} frames, "
                             f"got {nominal.shape}")
    if not np.isfinite(nominal).all():
        raise StitchingError("nominal_xy_nm contains NaN or infinite values")
    if fov_mask is not None and np.shape(fov_mask) != first.shape:
        raise StitchingError(f"fov_mask shape {np.shape(fov_mask)} does not match frames {first.shape}")
    started = time.perf_counter()
    if fov_mask is not None:
        fov_mask = useful_fov_mask(fov_mask, useful_fov_fraction)
    report = progress or _quiet
    if isinstance(flatfield, str) and flatfield == "estimate":
        flatfield = None  # one frame has nothing to estimate it from
        if len(checked) >= 2:
            report(0.0, f"Estimating the flat field from the {len(checked)} frames…")
            flatfield = estimate_flatfield(checked, mask=fov_mask)
    stitcher = IncrementalStitcher(frame_shape=first.shape, pixel_size_nm=pixel_size_nm, fov_mask=fov_mask,
                                   flatfield=flatfield, max_shift_nm=max_shift_nm, min_score=min_score,
                                   edge_blur_px=edge_blur_px, stage_repeatability_nm=stage_repeatability_nm)
    stitcher._seconds = time.perf_counter() - started
    report(0.05, f"Registering each of the {len(checked)} frames with its neighbours…")
    stitcher.add_frames(checked, nominal, anchor=anchor, blend=False)
    return stitcher.finish(progress=lambda fraction, message: report(0.45 + 0.55 * fraction, message))
