"""End-to-end stitching on seeded synthetic scans with known true positions."""

import json

import numpy as np
import pytest

from imaging.flatfield import flatfield_from_calibration
from imaging.stitching import IncrementalStitcher, Mosaic, StitchingError, frame_footprint, stitch
from tests.imaging.scan_factory import ic_scene, position_errors, shading_left, synthetic_scan


@pytest.fixture(scope="module")
def scan():
    return synthetic_scan(grid=(3, 3), frame_px=128, overlap=0.3, stage_error=0.1, seed=11)


@pytest.fixture(scope="module")
def mosaic(scan):
    return stitch(scan.frames, scan.nominal_xy_nm, pixel_size_nm=scan.pixel_size_nm, fov_mask=scan.fov_mask)


def test_positions_match_truth_within_a_fraction_of_a_pixel(scan, mosaic):
    err = position_errors(mosaic.positions_px, scan.true_xy_px)
    assert err.mean() <= 0.15 and err.max() <= 0.5
    assert mosaic.report.dropped_links == () and mosaic.report.placed_by_stage == ()


def test_a_well_linked_scan_reports_every_frame_placed_with_confidence(mosaic):
    # its one-pixel peaks are inferred widened, which spreads each belief over a few more states:
    # 0.88–0.98 of the mass within 2 px of the mode
    report = mosaic.report
    assert len(report.frame_confidence) == 9 and min(report.frame_confidence) >= 0.8
    assert len(report.frame_disagreement) == 9 and max(report.frame_disagreement) < 0.05
    assert report.uncertain_frames == ()


@pytest.mark.parametrize("seed", [21, 22])
def test_accuracy_holds_on_other_seeds(seed):
    s = synthetic_scan(grid=(3, 3), frame_px=128, seed=seed)
    m = stitch(s.frames, s.nominal_xy_nm, pixel_size_nm=s.pixel_size_nm, fov_mask=s.fov_mask)
    err = position_errors(m.positions_px, s.true_xy_px)
    assert err.mean() <= 0.15 and err.max() <= 0.5


@pytest.mark.parametrize(("grid", "frame_px"), [((3, 3), 384), ((2, 3), 512)])
def test_accuracy_holds_on_larger_frames_whose_peaks_are_one_pixel_wide(grid, frame_px):
    # Flat-field-corrected frames of this size match at NCC ≥ 0.98 with one-pixel-wide peaks and
    # a nominal step of 268.8 / 358.4 px; the joint inference once collapsed to the stage prior
    # on them (18-24 px mean error).
    s = synthetic_scan(grid=grid, frame_px=frame_px, overlap=0.3, stage_error=0.1, seed=1)
    m = stitch(s.frames, s.nominal_xy_nm, pixel_size_nm=s.pixel_size_nm, fov_mask=s.fov_mask)
    err = position_errors(m.positions_px, s.true_xy_px)
    assert err.mean() <= 0.15 and err.max() <= 0.5


def test_mosaic_output_is_16_bit_with_pixel_size_and_report(scan, mosaic):
    assert isinstance(mosaic, Mosaic)
    assert mosaic.image.dtype == np.uint16 and mosaic.pixel_size_nm == scan.pixel_size_nm
    h, w = mosaic.image.shape
    assert w >= mosaic.positions_px[:, 0].max() + 128 and h >= mosaic.positions_px[:, 1].max() + 128
    assert mosaic.positions_px.min() >= 0
    report = json.loads(mosaic.report.to_json())
    assert len(report["links"]) == 12 and report["flatfield"] == "overlaps"  # estimated, then fitted to them
    assert all(link["residual_px"] < 0.5 for link in report["links"])


def test_mosaic_reproduces_the_scene(scan, mosaic):
    # Sample the mosaic where frame 4 (centre) lies and compare with the true scene.
    x, y = np.round(mosaic.positions_px[4]).astype(int)
    tx, ty = np.round(scan.true_xy_px[4]).astype(int)
    patch = mosaic.image[y + 40:y + 88, x + 40:x + 88] / 65535.0
    truth = scan.scene[ty + 40:ty + 88, tx + 40:tx + 88] * (40000 / 65535)
    gain = np.median(patch / truth)
    assert np.abs(patch / gain - truth).mean() < 0.02


def test_the_mosaic_is_as_bright_as_the_scene_everywhere(scan, mosaic):
    # uncorrected 8.8 % of shading is left; with the estimated flat field alone 0.74 %, fitted to the overlaps 0.36 %
    assert mosaic.report.flatfield == "overlaps"
    assert shading_left(mosaic.image, scan, mosaic.positions_px[0]) < 0.0055


def test_frames_of_different_brightness_are_evened_out_and_equal_ones_left_alone(scan, mosaic):
    from imaging.flatfield import FlatField

    assert mosaic.report.frame_gain == (1.0,) * 9  # differences at the noise level are not gains
    lamp = np.array([1.0, 1.06, 0.95, 1.03, 0.97, 1.05, 0.94, 1.0, 1.02])  # a lamp flickering frame to frame
    frames = [np.clip(f * g, 0, 65535).astype(np.uint16) for f, g in zip(scan.frames, lamp, strict=True)]
    calibrated = FlatField(flat=np.where(scan.fov_mask, scan.flat, 1).astype(np.float32),
                           dark=np.zeros(scan.flat.shape, np.float32), mask=scan.fov_mask, method="calibration")
    evened = stitch(frames, scan.nominal_xy_nm, pixel_size_nm=scan.pixel_size_nm, fov_mask=scan.fov_mask,
                    flatfield=calibrated)
    gains = np.array(evened.report.frame_gain)
    np.testing.assert_allclose(gains / gains.mean(), lamp / lamp.mean(), rtol=0.01)
    assert shading_left(evened.image, scan, evened.positions_px[0]) < 0.008  # 0.33 %; 3.6 % without the gains
    # with the flat field estimated, the fit to the overlaps takes up a little of the flicker itself
    estimated = stitch(frames, scan.nominal_xy_nm, pixel_size_nm=scan.pixel_size_nm, fov_mask=scan.fov_mask)
    assert shading_left(estimated.image, scan, estimated.positions_px[0]) < 0.025  # 1.6 %; 3.8 % without the gains


def test_one_corrupted_frame_does_not_bend_the_others(scan):
    frames = list(scan.frames)
    rng = np.random.default_rng(5)
    other = ic_scene((128, 128), rng=rng)  # frame 4 shows a different place entirely
    frames[4] = np.where(scan.fov_mask, other * 40000, 0).astype(np.uint16)
    m = stitch(frames, scan.nominal_xy_nm, pixel_size_nm=scan.pixel_size_nm, fov_mask=scan.fov_mask)
    err = position_errors(m.positions_px, scan.true_xy_px, exclude=[4])
    keep = np.arange(9) != 4
    assert err[keep].mean() <= 0.15 and err[keep].max() <= 0.5
    assert m.report.placed_by_stage == (4,) and m.report.uncertain_frames == (4,)
    assert {(link.i, link.j) for link in m.report.dropped_links} == {(1, 4), (3, 4), (4, 5), (4, 7)}


def _live_unmatched(scan, bad: int, **options) -> list[tuple[int, ...]]:
    """The live mosaic's unmatched frames after each frame is added, frame ``bad`` showing another place."""
    frames = list(scan.frames)
    other = ic_scene((128, 128), rng=np.random.default_rng(5))  # a different place entirely
    frames[bad] = np.where(scan.fov_mask, other * 40000, 0).astype(np.uint16)
    stitcher = IncrementalStitcher(frame_shape=(128, 128), pixel_size_nm=scan.pixel_size_nm, fov_mask=scan.fov_mask,
                                   **options)
    unmatched = []
    for frame, nominal in zip(frames, scan.nominal_xy_nm, strict=True):
        stitcher.add_frame(frame, nominal)
        unmatched.append(stitcher.unmatched_frames)
    return unmatched


def test_the_live_mosaic_knows_which_frames_matched_none_of_their_overlaps(scan):
    # the first frame overlaps nothing before it; frame 4 overlaps 0–3 and matches none of them, and
    # the frames after it match their other neighbours
    assert _live_unmatched(scan, 4) == [()] * 4 + [(4,)] * 5


def test_on_a_repeatable_stage_a_frame_placed_by_the_mapped_stage_still_matched_none():
    # by frame 7 the stage's map is known and votes too; the frame is placed by it, but none of its overlaps matched
    scan = synthetic_scan(grid=(3, 3), frame_px=128, overlap=0.3, stage_error=0.001, seed=11)  # lands within 0.1 px
    assert _live_unmatched(scan, 7, stage_repeatability_nm=10.0) == [()] * 7 + [(7,)] * 2


def test_frame_footprint_covers_where_the_frames_blend_in(scan, mosaic):
    mask = scan.fov_mask
    area = frame_footprint(mosaic.image.shape, mosaic.report.positions_px, [4], mask)
    x, y = mosaic.report.positions_px[4]
    r, c = int(y) + 64, int(x) + 64  # the centre frame's centre, and its corners outside the circle
    assert area[r, c] and not area[int(y) + 2, int(x) + 2] and not area[int(y) + 125, int(x) + 2]
    # every pixel the centre frame's circle reaches, at its sub-pixel place, is inside
    rows, cols = np.nonzero(mask)
    assert area[np.floor(rows + y).astype(int), np.floor(cols + x).astype(int)].all()
    assert area[np.ceil(rows + y).astype(int), np.ceil(cols + x).astype(int)].all()
    assert area.sum() < 1.1 * (mask.sum() + 2 * 128)
    assert not frame_footprint(mosaic.image.shape, mosaic.report.positions_px, [], mask).any()


def test_incremental_matches_final_and_reports_growing_regions(scan, mosaic):
    ff = flatfield_from_calibration([np.where(scan.fov_mask, scan.flat * 30000, 0).astype(np.uint16)],
                                    mask=scan.fov_mask, smooth_sigma_px=0)
    stitcher = IncrementalStitcher(frame_shape=(128, 128), pixel_size_nm=scan.pixel_size_nm,
                                   fov_mask=scan.fov_mask, flatfield=ff)
    sizes = []
    assert stitcher.frame_count == 0 and stitcher.origin_px == (0, 0)
    for k, (frame, nominal) in enumerate(zip(scan.frames, scan.nominal_xy_nm, strict=False)):
        region = stitcher.add_frame(frame, nominal)
        live = stitcher.mosaic()
        assert stitcher.frame_count == k + 1
        assert region.width_px == 129 and region.height_px == 129
        assert region.x_px + region.width_px <= live.shape[1] and region.y_px + region.height_px <= live.shape[0]
        sizes.append(live.size)
    assert sizes == sorted(sizes) and sizes[-1] > 4 * sizes[0]
    live_positions = stitcher.positions_px
    # The live mosaic's origin (mosaic px) is at or above-left of every frame placed in it.
    assert np.all(np.array(stitcher.origin_px) <= np.floor(live_positions.min(axis=0)))
    final = stitcher.finish()
    live_err = position_errors(live_positions, scan.true_xy_px)
    assert live_err.max() < 0.5  # frame-by-frame placement is already close
    # Up to a common translation: the two flat fields differ and the whole mosaic's place on
    # the stage is only as sure as the stage is (0.34 px in y between these two).
    np.testing.assert_allclose(final.positions_px - final.positions_px.mean(0),
                               mosaic.positions_px - mosaic.positions_px.mean(0), atol=0.1)
    assert final.report.flatfield == "calibration"


def test_an_incremental_stitch_can_estimate_its_flat_field_when_finished(scan, mosaic):
    # the live frames go uncorrected; finish() estimates the flat field from them and measures every link again
    stitcher = IncrementalStitcher(frame_shape=(128, 128), pixel_size_nm=scan.pixel_size_nm, fov_mask=scan.fov_mask,
                                   flatfield="estimate")
    stitcher.add_frames(scan.frames, scan.nominal_xy_nm)
    final = stitcher.finish()
    assert final.report.flatfield == "overlaps"
    err = position_errors(final.positions_px, scan.true_xy_px)
    assert err.mean() <= 0.15 and err.max() <= 0.5
    np.testing.assert_allclose(final.positions_px - final.positions_px.mean(0),
                               mosaic.positions_px - mosaic.positions_px.mean(0), atol=1e-6)


def test_a_batch_of_frames_is_placed_as_frame_by_frame(scan):
    def stitcher():
        return IncrementalStitcher(frame_shape=(128, 128), pixel_size_nm=scan.pixel_size_nm, fov_mask=scan.fov_mask)

    one_by_one, batch = stitcher(), stitcher()
    for frame, nominal in zip(scan.frames, scan.nominal_xy_nm, strict=True):
        one_by_one.add_frame(frame, nominal)
    batch.add_frames(scan.frames, scan.nominal_xy_nm)
    assert [(link.i, link.j, link.offset_px) for link in batch.links] == \
        [(link.i, link.j, link.offset_px) for link in one_by_one.links]
    np.testing.assert_array_equal(batch.mosaic(), one_by_one.mosaic())
    np.testing.assert_array_equal(batch.finish().positions_px, one_by_one.finish().positions_px)


def test_settling_again_measures_no_link_it_has_measured():
    # Each settling measured the same links from the same offsets again (a 6×6 simulator scan: two thirds or more
    # of its measurements); it remembers them until the frames are corrected anew. Here 3 were measured again.
    scan = synthetic_scan(grid=(4, 4), frame_px=128, overlap=0.3, stage_error=0.1, seed=5)
    stitcher = IncrementalStitcher(frame_shape=(128, 128), pixel_size_nm=scan.pixel_size_nm, fov_mask=scan.fov_mask)
    for frame, nominal in zip(scan.frames, scan.nominal_xy_nm, strict=True):
        stitcher.add_frame(frame, nominal)
        stitcher.settle()
    measured = []
    for name in ("_register", "_refine"):
        measure = getattr(stitcher, name)
        setattr(stitcher, name, lambda *args, measure=measure: measured.append(args[:2]) or measure(*args))
    placed = stitcher.positions_px
    stitcher.settle()
    assert measured == []
    np.testing.assert_allclose(stitcher.positions_px, placed, atol=1e-9)


def test_a_large_scan_s_settling_holds_the_frames_far_from_the_new_ones(monkeypatch):
    # From 25 frames on, the frames the last settling placed surely, two links or more from every new frame, are
    # held where they are: the joint inference's sweeps cost what the free frames cost (an 8×8 simulator scan
    # settled every row: 81 → 29 s in all). The scan still stitches live to the goal.
    import imaging.consensus as consensus

    held = []
    infer = consensus.mrf_displacements
    monkeypatch.setattr(consensus, "mrf_displacements",
                        lambda *args, **kwargs: held.append(set(kwargs.get("held") or ())) or infer(*args, **kwargs))
    scan = synthetic_scan(grid=(6, 6), frame_px=128, overlap=0.3, stage_error=0.1, seed=2)
    stitcher = IncrementalStitcher(frame_shape=(128, 128), pixel_size_nm=scan.pixel_size_nm, fov_mask=scan.fov_mask)
    for k, (frame, nominal) in enumerate(zip(scan.frames, scan.nominal_xy_nm, strict=True), 1):
        stitcher.add_frame(frame, nominal)
        if k % 6 == 0:
            held.clear()
            stitcher.settle()
    assert held and set(range(12)) <= held[-1] and not held[-1] & set(range(18, 36))  # rows 0–1 held, 3–5 free
    errors = position_errors(stitcher.positions_px, scan.true_xy_px)
    assert errors.mean() <= 0.15 and errors.max() <= 0.5, errors


def test_a_batch_left_out_of_the_live_mosaic_stitches_the_same(scan):
    # a finished scan needs no live mosaic (it would hold as much memory as the final one), nor live places:
    # its frames stand where the stage put them until finish() places them all
    def stitcher():
        return IncrementalStitcher(frame_shape=(128, 128), pixel_size_nm=scan.pixel_size_nm, fov_mask=scan.fov_mask)

    live, batch = stitcher(), stitcher()
    live.add_frames(scan.frames, scan.nominal_xy_nm)
    batch.add_frames(scan.frames, scan.nominal_xy_nm, blend=False)
    assert batch.mosaic().shape == (0, 0) and batch.frame_count == 9
    assert [(link.i, link.j, link.offset_px) for link in batch.links] == \
        [(link.i, link.j, link.offset_px) for link in live.links]
    stage_px = scan.nominal_xy_nm / scan.pixel_size_nm
    np.testing.assert_allclose(batch.positions_px - batch.positions_px[0], stage_px - stage_px[0], atol=1e-9)
    a, b = live.finish(), batch.finish()
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.positions_px, b.positions_px)
    # once finished, the live mosaic is the final one, where the final one is
    np.testing.assert_array_equal(live.mosaic(), a.image)
    assert np.array(live.origin_px) * scan.pixel_size_nm == pytest.approx(a.origin_nm)


def test_a_stitch_says_what_it_is_doing_as_it_goes(scan, mosaic):
    # a job's progress bar (and its cancel check) hear from each step, in order, from this thread
    told = []
    again = stitch(scan.frames, scan.nominal_xy_nm, pixel_size_nm=scan.pixel_size_nm, fov_mask=scan.fov_mask,
                   progress=lambda fraction, message: told.append((fraction, message)))
    fractions, messages = zip(*told, strict=True)
    assert list(fractions) == sorted(fractions) and 0 <= fractions[0] and fractions[-1] < 1
    assert [m.split(" ")[0] for m in messages] == ["Estimating", "Registering", "Placing", "Estimating", "Fitting",
                                                   "Blending"]
    assert "9 frames" in messages[1] and "12 overlaps" in messages[2]
    np.testing.assert_array_equal(again.image, mosaic.image)


def test_a_batch_with_one_bad_frame_adds_nothing(scan):
    stitcher = IncrementalStitcher(frame_shape=(128, 128), pixel_size_nm=scan.pixel_size_nm, fov_mask=scan.fov_mask)
    frames = [*scan.frames[:3], np.zeros((128, 100), np.uint16)]
    with pytest.raises(StitchingError, match="frame 3 has shape"):
        stitcher.add_frames(frames, scan.nominal_xy_nm[:4])
    with pytest.raises(StitchingError, match="3 frames but 4 nominal positions"):
        stitcher.add_frames(scan.frames[:3], scan.nominal_xy_nm[:4])
    assert stitcher.frame_count == 0 and stitcher.links == ()


def test_single_frame_gives_a_one_frame_mosaic(scan):
    m = stitch(scan.frames[:1], scan.nominal_xy_nm[:1], pixel_size_nm=40.0, fov_mask=scan.fov_mask)
    assert m.image.shape == (129, 129) and m.report.links == ()
    assert m.report.frame_confidence == () and m.report.uncertain_frames == ()


@pytest.mark.parametrize(
    "frames, positions, match",
    [
        ([], np.zeros((0, 2)), "frames is empty"),
        ([np.zeros((64, 64), np.uint16), np.zeros((64, 60), np.uint16)], np.zeros((2, 2)), "frame 1 has shape"),
        ([np.zeros((2, 64, 64), np.uint16)], np.zeros((1, 2)), "2-D"),
        ([np.full((64, 64), np.nan)], np.zeros((1, 2)), "NaN"),
        ([np.zeros((64, 64), np.uint16)] * 2, np.zeros((3, 2)), "nominal_xy_nm must have shape"),
        ([np.zeros((64, 64), np.int32)], np.zeros((1, 2)), "dtype"),
    ],
)
def test_bad_input_raises_naming_the_argument(frames, positions, match):
    with pytest.raises(StitchingError, match=match):
        stitch(frames, positions, pixel_size_nm=40.0)


def test_bad_options_raise():
    with pytest.raises(ValueError, match="pixel_size_nm"):
        IncrementalStitcher(frame_shape=(64, 64), pixel_size_nm=0)
    with pytest.raises(ValueError, match="fov_mask shape"):
        IncrementalStitcher(frame_shape=(64, 64), pixel_size_nm=1, fov_mask=np.ones((8, 8), bool))
    with pytest.raises(StitchingError, match="no frames"):
        IncrementalStitcher(frame_shape=(64, 64), pixel_size_nm=1).finish()
    for bad in ("guess", -1.0, float("nan"), "2"):
        with pytest.raises(StitchingError, match="edge_blur_px"):
            IncrementalStitcher(frame_shape=(64, 64), pixel_size_nm=1, edge_blur_px=bad)
    for bad in (-0.5, float("inf"), "2"):
        with pytest.raises(StitchingError, match="stage_repeatability_nm"):
            IncrementalStitcher(frame_shape=(64, 64), pixel_size_nm=1, stage_repeatability_nm=bad)


def test_the_field_blur_is_estimated_given_or_left_alone(scan, mosaic):
    # These frames have no field-dependent blur: each overlap's best match lies at the ~1 px
    # its noise smooths, spread 0.5 px between them (0.25 px on 256 px frames, where the lenses
    # are larger and one is matched: 0.013 → 0.005 px mean error), so none is matched here.
    assert mosaic.report.edge_blur == "inconsistent" and mosaic.report.edge_blur_px == 0.0
    for given, words in ((None, "none"), (0.0, "none"), (1.0, "given")):
        again = stitch(scan.frames, scan.nominal_xy_nm, pixel_size_nm=scan.pixel_size_nm, fov_mask=scan.fov_mask,
                       edge_blur_px=given)
        assert again.report.edge_blur == words and again.report.edge_blur_px == (given or 0.0)
        assert position_errors(again.positions_px, scan.true_xy_px).max() < 0.1
