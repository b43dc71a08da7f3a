"""Stitching on the physics simulator's SSUM frames (rim darkening, field-dependent blur,
defocused lower layers, periodic test patterns), with the simulator's true frame → chip maps."""

import numpy as np
import pytest

from imaging.stitching import USEFUL_FOV_FRACTION, IncrementalStitcher, stitch
from instruments.sim.chip import Chip, scaled_layers
from instruments.sim.dataset import default_step_nm, simulate_scan
from instruments.sim.world import SimWorld, StageErrors


def _true_offsets_px(scan) -> np.ndarray:
    """(N, 2) (x, y) top-left of each frame in frame 0's pixels, from the true transforms."""
    t = scan.frame_to_chip
    return np.array([np.linalg.solve(t[0][:2, :2], t[k][:2, 2] - t[0][:2, 2]) for k in range(len(t))])


def _errors(scan, mosaic) -> np.ndarray:
    """Each frame's distance (px) from its true place, the best common shift removed; ``mosaic``: anything with
    ``positions_px`` (a Mosaic, a live IncrementalStitcher)."""
    d = (mosaic.positions_px - mosaic.positions_px[0]) - _true_offsets_px(scan)
    d -= d.mean(axis=0)
    return np.hypot(d[:, 0], d[:, 1])


@pytest.fixture(scope="module")
def flat_scan():
    world = SimWorld(seed=2, layout=Chip(seed=2, layers=scaled_layers(0.1)))
    return simulate_scan(world=world, grid=(3, 3))


@pytest.fixture(scope="module")
def flat_errors(flat_scan):
    mosaic = stitch(list(flat_scan.frames), flat_scan.nominal_xy_nm, pixel_size_nm=flat_scan.pixel_size_nm,
                    fov_mask=flat_scan.fov_mask, useful_fov_fraction=USEFUL_FOV_FRACTION, anchor="center")
    return _errors(flat_scan, mosaic)


def test_low_topography_chip_has_no_alias_placements(flat_errors):
    # Periodic test patterns (17–45 px periods) once put frames 10–20 px off; the stage
    # consensus now keeps every frame within a few px (measured 0.86 mean / 3.2 max px).
    assert flat_errors.mean() <= 1.5 and flat_errors.max() <= 5.0, flat_errors


@pytest.mark.xfail(reason="target not reached: measured 0.53/1.49 px mean/max on this scan (0.13/0.24 on "
                          "seed 1, 0.45/0.89 on seed 3, 0.07/0.11 on seed 4); frames whose lenses hold only "
                          "blank areas or parallel lines are placed by the joint inference to a pixel",
                   strict=False)
def test_low_topography_chip_stitches_to_a_fraction_of_a_pixel(flat_errors):
    assert flat_errors.mean() <= 0.25 and flat_errors.max() <= 0.5, flat_errors


def test_full_circle_mask_without_the_useful_fraction_is_worse(flat_scan):
    # The dark rim is why the fraction exists: keep this as the measured reason.
    mosaic = stitch(list(flat_scan.frames), flat_scan.nominal_xy_nm, pixel_size_nm=flat_scan.pixel_size_nm,
                    fov_mask=flat_scan.fov_mask, anchor="center")
    assert _errors(flat_scan, mosaic).mean() > 0.25


def _stitched_and_stage_errors(scan, **options):
    """Per-frame position errors (px) of the stitched scan and of its stage positions alone, and its report."""
    mosaic = stitch(list(scan.frames), scan.nominal_xy_nm, pixel_size_nm=scan.pixel_size_nm,
                    fov_mask=scan.fov_mask, useful_fov_fraction=USEFUL_FOV_FRACTION, anchor="center", **options)
    stage = scan.nominal_xy_nm / scan.pixel_size_nm
    miss = (stage - stage[0]) - _true_offsets_px(scan)
    return _errors(scan, mosaic), np.hypot(*(miss - miss.mean(axis=0)).T), mosaic.report


def _scan_with_large_stage_errors(*, seed: int, heights: float | None = None):
    """A 3×3 simulator scan with stage noise 3σ = 10 % of the step per axis, of the chip of ``seed``
    with its layer heights scaled by ``heights`` (None: the default chip, as the world draws it)."""
    step_nm = default_step_nm(SimWorld(seed=seed).optics, overlap=0.3)
    layout = {} if heights is None else {"layout": Chip(seed=seed, layers=scaled_layers(heights))}
    world = SimWorld(seed=seed, stage_errors=StageErrors(noise_nm=0.1 * step_nm / 3), **layout)
    return simulate_scan(world=world, grid=(3, 3), step_nm=step_nm)


def test_large_stage_errors_do_not_let_aliases_of_periodic_patterns_win():
    # Stage noise 3σ = 10 % of the step per axis (relative errors up to ~20 % between
    # neighbours, more than the 15–17 px periods of the chip's gratings and dot arrays): picking
    # each link's highest peak put frames 10–30 px off (measured 21.5 px mean, worse than the
    # stage's 6.8). Voting among the peaks around loops of frames measured 0.17 / 0.26 px; the
    # joint inference with links weighted by the gradients both frames share, 0.12 / 0.24.
    errors, stage_errors, report = _stitched_and_stage_errors(_scan_with_large_stage_errors(seed=1, heights=0.1))
    assert stage_errors.mean() > 3.0  # the stage alone is far off: the test is about large errors
    assert errors.mean() <= 0.2 and errors.max() <= 0.4, errors
    assert report.uncertain_frames == ()


@pytest.fixture(scope="module")
def planar_scan_large_stage_errors():
    return _scan_with_large_stage_errors(seed=2, heights=0.01)


def test_a_planar_chip_stitches_to_the_goal_once_the_field_blur_is_matched(planar_scan_large_stage_errors):
    # Every layer in focus, stage noise 3σ = 10 % of the step: what is left is the sphere's blur
    # growing towards the rim, opposite in the two frames of each overlap. Unmatched it put this
    # scan's frames 0.25 / 0.69 px off (mean / max); matched, 0.04 / 0.10 (the goal: 0.15 / 0.5).
    scan = planar_scan_large_stage_errors
    errors, _, report = _stitched_and_stage_errors(scan)
    assert report.edge_blur == "estimated" and 2.0 <= report.edge_blur_px <= 4.0, report.edge_blur_px
    assert errors.mean() <= 0.15 and errors.max() <= 0.5, errors
    unmatched = stitch(list(scan.frames), scan.nominal_xy_nm, pixel_size_nm=scan.pixel_size_nm,
                       fov_mask=scan.fov_mask, useful_fov_fraction=USEFUL_FOV_FRACTION, anchor="center",
                       edge_blur_px=None)
    assert _errors(scan, unmatched).mean() > 1.5 * errors.mean()


def test_defocused_layers_and_large_stage_errors_end_nearer_the_truth_than_the_stage():
    # Default chip (lower layers defocused, differently per frame): a link's true offset is
    # often not its best NCC peak, and picking peaks put frames 12–35 px off, worse than the
    # stage (3x3 seed 1: 18.0 px mean vs 6.8). Inferring all displacements jointly from the
    # whole NCC surfaces measured 3.9 / 5.7 px mean/max here against the stage's 8.6 / 16.1 (4.5 / 6.6
    # since links count only the gradients both frames share: the gratings' lenses no longer pin
    # their frames along the lines).
    errors, stage_errors, report = _stitched_and_stage_errors(_scan_with_large_stage_errors(seed=3))
    assert errors.mean() < 0.75 * stage_errors.mean() and errors.max() < stage_errors.max(), (errors, stage_errors)
    # ... and still 3–6 px off: the report must say so rather than pass the mosaic off as sound
    assert len(report.uncertain_frames) >= 5, report.frame_confidence


@pytest.fixture(scope="module")
def deep_scan_repeatable_stage():
    return simulate_scan(world=SimWorld(seed=1), grid=(3, 3))  # the default chip, the simulator's closed-loop stage


def test_a_repeatable_stage_places_a_deep_chip_where_the_overlaps_alone_cannot(deep_scan_repeatable_stage):
    # The simulator's own closed-loop scanner (1.5 nm settling noise; the camera turned 0.36° against it, its
    # scale 0.1–0.15 % off) on the default chip: the stage alone is 1.5 px off (the rotation), the joint inference
    # over the overlaps 5.0 / 17 px (aliases, layers defocused differently in each frame). Told the stage repeats
    # within 2 nm, the stitcher puts the frames where it put them, mapped by the rotation and per-axis scale the
    # overlaps measure: 0.15 / 0.27 px (with the rotation alone 0.41 / 0.92), −0.370° (true −0.35°), scale
    # (1.00167, 0.99808) (true (1.0015, 0.999)).
    scan = deep_scan_repeatable_stage
    errors, stage_errors, report = _stitched_and_stage_errors(scan, stage_repeatability_nm=2.0)
    inferred, _, _ = _stitched_and_stage_errors(scan)
    assert errors.mean() <= 0.25 and errors.max() <= 0.5, errors
    assert errors.mean() < 0.2 * stage_errors.mean() and errors.mean() < 0.1 * inferred.mean(), (stage_errors, inferred)
    calibration = report.stage_calibration
    # image axes turn against the scanner's by the camera's rotation, the other way
    assert calibration["believed"] and abs(calibration["rotation_deg"] + StageErrors().rotation_deg) <= 0.05, calibration
    assert calibration["scale"] == pytest.approx(StageErrors().scale, abs=0.001), calibration
    assert report.stage_repeatability_nm == 2.0 and report.uncertain_frames == ()


def test_a_stage_said_to_be_repeatable_that_is_not_is_overruled_by_the_overlaps(planar_scan_large_stage_errors):
    # A stage that misses by up to 10 % of the step, said to repeat within 2 nm: 3 of its 20 overlaps land where
    # it put the frames (turned), so the joint inference over the overlaps places them, as without the claim.
    errors, _, report = _stitched_and_stage_errors(planar_scan_large_stage_errors, stage_repeatability_nm=2.0)
    assert not report.stage_calibration["believed"], report.stage_calibration
    assert errors.mean() <= 0.15 and errors.max() <= 0.5, errors


@pytest.mark.parametrize(("heights", "limits"), [(1.0, (1.2, 2.0)), (0.1, (0.3, 0.6))], ids=["deep", "flat"])
def test_the_live_mosaic_on_a_repeatable_stage_follows_the_stage_as_its_links_map_it(heights, limits):
    # Frame by frame on the simulator's closed-loop stage (turned 0.35° against the camera: 1.5 px off alone).
    # Each new frame's links searched near the stage, mapped by the rotation and scale the links kept so far
    # measure, and (once four are kept) pulled to it: default chip 0.87 / 1.54 px, flat 0.17 / 0.41. Before, each
    # link's best peak within 3 px of the unmapped stage voted (most on gratings lay on an alias 5–60 px away):
    # 1.80 / 2.97 and 1.62 / 1.89.
    scan = simulate_scan(world=SimWorld(seed=1, layout=Chip(seed=1, layers=scaled_layers(heights))), grid=(3, 3))
    stitcher = IncrementalStitcher(frame_shape=scan.frames[0].shape, pixel_size_nm=scan.pixel_size_nm,
                                   fov_mask=scan.fov_mask, useful_fov_fraction=USEFUL_FOV_FRACTION,
                                   stage_repeatability_nm=2.0)
    for frame, xy in zip(scan.frames, scan.nominal_xy_nm, strict=True):
        stitcher.add_frame(frame, xy, anchor="center")
    errors = _errors(scan, stitcher)  # the live mosaic's places
    assert errors.mean() <= limits[0] and errors.max() <= limits[1], errors


def test_the_live_mosaic_places_a_frame_where_its_links_agree_with_each_other_and_the_stage():
    # A planar chip, the simulator's closed-loop scanner, its repeatability not given: each link's best peak alone
    # put live frames 24.7 / 34.7 px off (a grating's periods tie, NCC 0.92–0.96 each), worse than the stage
    # (1.5 px); the place where the new frame's links agree, weighed with the stage prior, then refined: 0.06 / 0.12.
    scan = simulate_scan(world=SimWorld(seed=1, layout=Chip(seed=1, layers=scaled_layers(0.01))), grid=(3, 3))
    stitcher = IncrementalStitcher(frame_shape=scan.frames[0].shape, pixel_size_nm=scan.pixel_size_nm,
                                   fov_mask=scan.fov_mask, useful_fov_fraction=USEFUL_FOV_FRACTION)
    for frame, xy in zip(scan.frames, scan.nominal_xy_nm, strict=True):
        stitcher.add_frame(frame, xy, anchor="center")
    errors = _errors(scan, stitcher)  # the live mosaic's places
    assert errors.mean() <= 0.3 and errors.max() <= 0.6, errors


def test_the_live_mosaic_settled_places_a_frame_that_one_link_put_on_a_grating_s_alias():
    # A flat chip, a stage off by up to 10 % of the step (σ 7 px), no flat field: frame 1's only link, to frame 0,
    # peaks a grating period off, and there it goes; the frames after it follow it, and frames 0 and 5 stand
    # 16 px from the rest: 7.1 / 16.1 px. Settled after each frame (all links so far placed together, as the final
    # stitch places them): 0.15 / 0.32.
    scan = _scan_with_large_stage_errors(seed=1, heights=0.1)
    stitcher = IncrementalStitcher(frame_shape=scan.frames[0].shape, pixel_size_nm=scan.pixel_size_nm,
                                   fov_mask=scan.fov_mask, useful_fov_fraction=USEFUL_FOV_FRACTION)
    regions = []
    for frame, xy in zip(scan.frames, scan.nominal_xy_nm, strict=True):
        stitcher.add_frame(frame, xy, anchor="center")
        regions.append(stitcher.settle())
    errors = _errors(scan, stitcher)  # the live mosaic's places
    assert errors.mean() <= 0.25 and errors.max() <= 0.5, errors
    assert regions[0] is None and any(r is not None and r.canvas_grew for r in regions)  # a frame moved: re-blended
    extent = np.ceil(stitcher.positions_px.max(axis=0) - stitcher.positions_px.min(axis=0)).astype(int)
    assert stitcher.mosaic().shape >= (extent[1] + scan.frames[0].shape[0], extent[0] + scan.frames[0].shape[1])


def test_a_scan_stitches_the_same_in_the_order_it_was_taken_as_in_raster_order():
    # A planar chip, a stage off by up to 10 % of the step, a bare-silicon flat field. The joint inference passed
    # its messages in the links' order, and in the serpentine order the instrument takes the frames one frame
    # went to a grating's alias 16 px off: 3.6 / 16 px against 0.049 / 0.18 in raster order.
    from imaging.flatfield import flatfield_from_calibration
    from instruments.sim.chip import bare_silicon

    scan = _scan_with_large_stage_errors(seed=1, heights=0.01)  # serpentine
    bare = simulate_scan(world=SimWorld(seed=1, layout=bare_silicon(Chip(seed=1).bounds_nm, seed=1)), grid=(3, 3))
    flatfield = flatfield_from_calibration(list(bare.frames), mask=bare.fov_mask)
    raster = np.lexsort((scan.grid_index[:, 1], scan.grid_index[:, 0]))
    true = _true_offsets_px(scan)
    for order in (np.arange(len(scan.frames)), raster):
        mosaic = stitch(list(scan.frames[order]), scan.nominal_xy_nm[order], pixel_size_nm=scan.pixel_size_nm,
                        fov_mask=scan.fov_mask, useful_fov_fraction=USEFUL_FOV_FRACTION, anchor="center",
                        flatfield=flatfield)
        d = (mosaic.positions_px - mosaic.positions_px[0]) - (true[order] - true[order][0])
        errors = np.hypot(*(d - d.mean(axis=0)).T)
        assert errors.mean() <= 0.15 and errors.max() <= 0.5, (order, errors)


def test_the_live_mosaic_settled_estimates_the_shading_from_the_frames_so_far():
    # A planar chip, a stage off by up to 10 % of the step, no calibration: on shaded frames a grating's periods
    # tie and frame 1 stays on an alias even settled (3.6 / 16.3 px); with the shading estimated from the frames so
    # far at each settling, its links are measured on corrected frames: 0.043 / 0.07.
    scan = _scan_with_large_stage_errors(seed=1, heights=0.01)
    stitcher = IncrementalStitcher(frame_shape=scan.frames[0].shape, pixel_size_nm=scan.pixel_size_nm,
                                   fov_mask=scan.fov_mask, useful_fov_fraction=USEFUL_FOV_FRACTION, flatfield="estimate")
    for frame, xy in zip(scan.frames, scan.nominal_xy_nm, strict=True):
        stitcher.add_frame(frame, xy, anchor="center")
        stitcher.settle()
    errors = _errors(scan, stitcher)  # the live mosaic's places
    assert errors.mean() <= 0.15 and errors.max() <= 0.3, errors
    assert stitcher.flatfield == "estimate"  # the final stitch estimates its own from every frame
