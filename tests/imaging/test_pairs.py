"""imaging.pairs: common grid, tiles inside the overlap, disjoint train/test, zip export."""

import json
import zipfile

import numpy as np
import pytest

from imaging.pairs import (
    block_of,
    cut_pairs,
    export_zip,
    footprint_box,
    grid_period_px,
    lattice_offset,
    resample_to_common_grid,
    skipped_in_words,
)
from tests.imaging.synthetic_ic import ic_layout


def scene(shape=(300, 360), seed=0):
    rng = np.random.default_rng(seed)
    return (ic_layout(shape, feature_px=1.0, rng=rng) / 2.0).astype(np.float32)


def assert_splits_apart(result):
    for a in result.split("train"):
        for b in result.split("test"):
            ax0, ay0, ax1, ay1 = a.box_px
            bx0, by0, bx1, by1 = b.box_px
            assert ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0, "a test tile overlaps a training tile"


def test_sem_resampled_onto_the_mosaic_grid_matches_the_truth():
    mosaic = scene()
    # SEM: 2× finer pixels of the region x ∈ [40, 240), y ∈ [30, 230) of the mosaic
    sem = np.kron(mosaic[30:230, 40:240], np.ones((2, 2), np.float32))
    mosaic_to_sem = np.array([[2.0, 0, 0.5 - 80], [0, 2.0, 0.5 - 60], [0, 0, 1]])
    lr, hr, valid, f = resample_to_common_grid(mosaic, sem, mosaic_to_sem, mosaic_px_nm=50.0)
    assert f == 1 and lr.shape == mosaic.shape
    assert valid[30:230, 40:240][1:-1, 1:-1].all() and not valid[:25].any()
    # away from edges (the anti-alias blur softens them) the warped SEM equals the mosaic
    flat = np.abs(hr - lr)[35:225, 45:235]
    assert np.median(flat) < 1e-3


@pytest.mark.parametrize("pixel_size_nm", [68.5, 125.0, 35.0])
def test_mosaic_and_sem_stay_aligned_across_a_grid_of_another_pixel_size(pixel_size_nm):
    """A 3001 px wide mosaic onto grids of 1.37, 2.5 and 0.7 mosaic px: LR and HR (here the same
    image) agree to a few hundredths of a mosaic pixel at both ends. Resized to the grid's whole
    size, the mosaic scaled by 3001 / 1200 instead of 2.5 and drifted 1.27 px off by the right end."""
    import cv2

    texture = cv2.GaussianBlur(np.random.default_rng(0).random((300, 3001)).astype(np.float32), (0, 0), 3)
    texture = (texture - texture.min()) / (texture.max() - texture.min())
    lr, hr, valid, f = resample_to_common_grid(texture, texture, np.eye(3), mosaic_px_nm=50.0,
                                               pixel_size_nm=pixel_size_nm)
    assert f == pytest.approx(pixel_size_nm / 50.0) and valid[20:-20, 20:-20].all()
    for x0 in (20, lr.shape[1] - 120):
        for y0 in (20, lr.shape[0] - 120):
            (dx, dy), _ = cv2.phaseCorrelate(lr[y0:y0 + 100, x0:x0 + 100].astype(np.float64),
                                             hr[y0:y0 + 100, x0:x0 + 100].astype(np.float64))
            assert np.hypot(dx, dy) * f < 0.08, (x0, y0, dx * f, dy * f)


def test_tiles_inside_overlap_structure_and_disjoint_splits():
    mosaic = scene((400, 400), seed=1)
    mosaic[:, 300:] = 0.25  # featureless strip: its tiles must be skipped for low structure
    sem = mosaic.copy()
    identity = np.eye(3)
    result = cut_pairs(mosaic, sem, identity, mosaic_px_nm=50.0, tile_px=64, stride_px=32, test_fraction=0.3,
                       block_tiles=2, seed=3)
    assert result.split("train") and result.split("test")
    assert result.skipped["low_structure"] > 0 and result.skipped["straddles_split"] > 0
    for pair in result.pairs:
        x0, y0, x1, y1 = pair.box_px
        assert (x1 - x0, y1 - y0) == (64, 64) and pair.lr.shape == (64, 64)
        assert np.allclose(pair.lr, mosaic[y0:y1, x0:x1]) and np.allclose(pair.hr, pair.lr, atol=1e-5)
    assert_splits_apart(result)


def test_outside_overlap_and_pixel_size_change():
    mosaic = scene((256, 256), seed=2)
    sem = mosaic[:128, :128].copy()  # covers only the top-left quarter
    result = cut_pairs(mosaic, sem, np.eye(3), mosaic_px_nm=50.0, tile_px=32, test_fraction=0.0)
    assert result.pairs and all(p.box_px[2] <= 128 and p.box_px[3] <= 128 for p in result.pairs)
    assert result.skipped["outside_overlap"] == 64 - 16
    coarse = cut_pairs(mosaic, sem, np.eye(3), mosaic_px_nm=50.0, pixel_size_nm=100.0, tile_px=16, test_fraction=0)
    assert coarse.pixel_size_nm == 100.0
    # grid px i ↔ mosaic px (i + 0.5)·2 − 0.5: the first 16-px tile spans mosaic 0.5 … 32.5
    assert coarse.pairs[0].box_mosaic_px == pytest.approx((0.5, 0.5, 32.5, 32.5))


def test_tiles_start_where_the_overlap_does():
    # A 315 px square of overlap from (37, 50): on the grid's own origin it held one 128 px tile, from its
    # corner it holds four.
    mosaic = scene((512, 512), seed=7)
    sem = mosaic[50:365, 37:352].copy()
    to_sem = np.array([[1.0, 0, -37], [0, 1, -50], [0, 0, 1]])
    result = cut_pairs(mosaic, sem, to_sem, mosaic_px_nm=50.0, tile_px=128, test_fraction=0.0)
    assert sorted(p.box_px for p in result.pairs) == [(x, y, x + 128, y + 128) for x in (37, 165) for y in (50, 178)]
    for pair in result.pairs:
        x0, y0, x1, y1 = pair.box_px
        np.testing.assert_allclose(pair.hr, mosaic[y0:y1, x0:x1], atol=1e-5)


def test_the_lattice_fits_the_most_whole_tiles_and_blocks_start_with_it():
    usable = np.zeros((300, 300), bool)
    usable[10:290, 20:150] = True  # 280 × 130 px: 64 px tiles from (20, 10) fit 4 × 2
    assert lattice_offset(usable, tile_px=64, stride_px=64) == (20, 10)
    assert lattice_offset(np.zeros((50, 50), bool), tile_px=16, stride_px=16) == (0, 0)
    # on a part of a larger grid the offset is the whole grid's
    assert lattice_offset(usable[5:, 12:], tile_px=64, stride_px=64, part_origin=(12, 5), grid_shape=(300, 300)) == (20, 10)
    # a tile's block, from its box alone (as the export finds it): blocks of 2 tiles from the lattice's start
    assert block_of((20, 10, 84, 74), tile_px=64) == (0, 0)
    assert block_of((148, 138, 212, 202), tile_px=64) == (1, 1)
    assert block_of((52, 10, 116, 74), tile_px=64, stride_px=32) == (0, 0)  # lattice from 20 (52 mod 32)
    mosaic = scene((400, 400), seed=1)
    sem = mosaic[13:, 29:].copy()
    result = cut_pairs(mosaic, sem, np.array([[1.0, 0, -29], [0, 1, -13], [0, 0, 1]]), mosaic_px_nm=50.0, tile_px=64,
                       stride_px=32, test_fraction=0.4, block_tiles=2, seed=2)
    assert result.split("train") and result.split("test")
    assert all(p.block == block_of(p.box_px, tile_px=64, stride_px=32) for p in result.pairs)
    assert_splits_apart(result)


def test_the_test_fraction_is_of_the_blocks_that_hold_tiles():
    # a small overlap in a large mosaic: drawn over the whole grid, its few blocks were mostly train (a demo's
    # six pairs held none out at 0.25)
    mosaic = scene((1024, 1024), seed=8)
    sem = mosaic[100:292, 200:456].copy()  # 3 × 4 tiles of 64 px, in blocks of 2 × 2 tiles from the lattice's start
    to_sem = np.array([[1.0, 0, -200], [0, 1, -100], [0, 0, 1]])
    for fraction in (0.1, 0.25, 0.5, 0.8):
        for seed in range(3):
            result = cut_pairs(mosaic, sem, to_sem, mosaic_px_nm=50.0, tile_px=64, test_fraction=fraction, seed=seed)
            assert len(result.pairs) == 12  # stride = tile: no tile reaches into another block
            blocks = {p.block for p in result.pairs}
            held_out = {p.block for p in result.split("test")}
            assert len(held_out) == min(max(1, round(fraction * len(blocks))), len(blocks) - 1), (fraction, seed)
    # never every block: one tile alone stays train
    alone = cut_pairs(mosaic, mosaic[100:164, 200:264].copy(), to_sem, mosaic_px_nm=50.0, tile_px=64,
                      test_fraction=0.5)
    assert [p.split for p in alone.pairs] == ["train"]


def test_tiles_touching_frames_placed_unsurely_are_skipped():
    mosaic = scene((256, 256), seed=5)
    unsure = np.zeros(mosaic.shape, bool)
    unsure[100, 200] = True  # one pixel of an unsure frame's footprint
    everything = cut_pairs(mosaic, mosaic, np.eye(3), mosaic_px_nm=50.0, tile_px=64, test_fraction=0.0)
    result = cut_pairs(mosaic, mosaic, np.eye(3), mosaic_px_nm=50.0, tile_px=64, test_fraction=0.0,
                       mosaic_unsure=unsure)
    assert result.skipped["uncertain_placement"] == 1 and len(result.pairs) == len(everything.pairs) - 1
    assert not any(p.box_px[0] <= 200 < p.box_px[2] and p.box_px[1] <= 100 < p.box_px[3] for p in result.pairs)
    # on a coarser grid the footprint follows the resampling
    coarse = cut_pairs(mosaic, mosaic, np.eye(3), mosaic_px_nm=50.0, pixel_size_nm=100.0, tile_px=32,
                       test_fraction=0.0, mosaic_unsure=unsure)
    assert coarse.skipped["uncertain_placement"] == 1


@pytest.mark.parametrize("pixel_size_nm", [None, 100.0, 125.0, 50.0 * 20 / 13, 35.0])
def test_a_part_holding_the_sem_footprint_gives_the_pairs_of_the_whole_mosaic(pixel_size_nm):
    # The SEM image: 2× finer pixels of x ∈ [40, 240), y ∈ [30, 230) of a 400×480 mosaic of 50 nm pixels.
    # Cut from the part footprint_box reads (what the pairs job decodes of a large mosaic), the pairs are
    # those of the whole mosaic, on its own grid and on grids of 2, 2.5, 20/13 and 0.7 mosaic px: the
    # same boxes, splits and skipped counts, and the same pixels.
    mosaic = scene((400, 480), seed=6) + np.float32(0.1)  # no 0: where no frame is, the mosaic is 0
    sem = np.kron(mosaic[30:230, 40:240], np.ones((2, 2), np.float32))
    mosaic_to_sem = np.array([[2.0, 0, 0.5 - 80], [0, 2.0, 0.5 - 60], [0, 0, 1]])
    unsure = np.zeros(mosaic.shape, bool)
    unsure[120, 100] = True
    f = (pixel_size_nm or 50.0) / 50.0
    options = dict(mosaic_px_nm=50.0, pixel_size_nm=pixel_size_nm, tile_px=16 if f > 1 else 32,
                   stride_px=8 if f > 1 else 16, test_fraction=0.3, block_tiles=2, seed=1)
    whole = cut_pairs(mosaic, sem, mosaic_to_sem, mosaic_valid=mosaic > 0, mosaic_unsure=unsure, **options)
    box = footprint_box(mosaic_to_sem, sem.shape, mosaic.shape, grid_to_mosaic=f)
    if pixel_size_nm is None:
        assert box == (38, 28, 242, 232)  # the footprint (39.5 … 239.5) and a pixel around
    x0, y0, x1, y1 = box
    part = mosaic[y0:y1, x0:x1]
    cut = cut_pairs(part, sem, mosaic_to_sem, mosaic_valid=part > 0, mosaic_unsure=unsure[y0:y1, x0:x1],
                    origin_px=(x0, y0), mosaic_shape=mosaic.shape, **options)
    assert whole.pairs and (pixel_size_nm or (whole.split("test") and whole.skipped["uncertain_placement"]))
    assert cut.skipped == whole.skipped
    assert [(p.box_px, p.split, p.block) for p in cut.pairs] == [(p.box_px, p.split, p.block) for p in whole.pairs]
    for a, b in zip(cut.pairs, whole.pairs, strict=True):
        # float32 round-off of a resize at another offset: within two 16-bit grey levels (1.5e-5 each)
        np.testing.assert_allclose(a.lr, b.lr, atol=3e-5)
        np.testing.assert_allclose(a.hr, b.hr, atol=3e-5)
    assert footprint_box(mosaic_to_sem @ np.array([[1.0, 0, 900], [0, 1, 0], [0, 0, 1]]), sem.shape, mosaic.shape) is None


def test_grid_period_is_the_fewest_mosaic_pixels_that_are_whole_grid_pixels():
    assert [grid_period_px(f) for f in (1.0, 2.0, 2.5, 50 / 32.5, 0.7)] == [1, 2, 5, 20, 7]
    assert grid_period_px(48.7 / 32.5) == 487 and grid_period_px(np.pi) is None


def test_a_part_starts_on_a_grid_pixel_and_lies_inside_the_mosaic():
    m = scene((128, 128))
    with pytest.raises(ValueError, match="start on a grid pixel"):
        cut_pairs(m[:64, :64], m, np.eye(3), mosaic_px_nm=50.0, pixel_size_nm=100.0, tile_px=16,
                  origin_px=(11, 10), mosaic_shape=(128, 128))
    with pytest.raises(ValueError, match="does not fit"):
        cut_pairs(m[:64, :64], m, np.eye(3), mosaic_px_nm=50.0, tile_px=16, origin_px=(80, 0), mosaic_shape=(128, 128))


def test_export_zip_manifest(tmp_path):
    mosaic = scene((256, 256), seed=4)
    result = cut_pairs(mosaic, mosaic, np.eye(3), mosaic_px_nm=50.0, tile_px=64, test_fraction=0.5, block_tiles=1,
                       registration={"method": "auto"})
    path = export_zip(result, tmp_path / "pairs.zip")
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        assert manifest["pair_pixel_size_nm"] == 50.0 and len(manifest["pairs"]) == len(result.pairs)
        first = manifest["pairs"][0]
        import cv2

        lr = cv2.imdecode(np.frombuffer(zf.read(first["lr_path"]), np.uint8), cv2.IMREAD_UNCHANGED)
        assert lr.dtype == np.uint16 and lr.shape == (64, 64)
        assert {p["split"] for p in manifest["pairs"]} <= {"train", "test"}
    with pytest.raises(ValueError, match="empty"):
        export_zip(cut_pairs(np.zeros((64, 64), np.float32), np.zeros((64, 64), np.float32), np.eye(3),
                             mosaic_px_nm=1.0, tile_px=32), tmp_path / "empty.zip")


def test_bad_arguments():
    m = scene((64, 64))
    with pytest.raises(ValueError, match="tile_px"):
        cut_pairs(m, m, np.eye(3), mosaic_px_nm=1.0, tile_px=4)
    with pytest.raises(ValueError, match="test_fraction"):
        cut_pairs(m, m, np.eye(3), mosaic_px_nm=1.0, tile_px=16, test_fraction=1.0)
    with pytest.raises(ValueError, match="mosaic_px_nm"):
        cut_pairs(m, m, np.eye(3), mosaic_px_nm=0.0, tile_px=16)


def test_skipped_tiles_read_as_words():
    skipped = {"outside_overlap": 35, "uncertain_placement": 1, "low_structure": 0, "straddles_split": 2}
    assert skipped_in_words(skipped) == ("35 tiles outside the registered overlap, 1 over frames placed with low "
                                         "confidence, 2 straddling the train/test blocks")
    assert skipped_in_words({"low_structure": 1}) == "1 tile with too little structure"
    assert skipped_in_words({"outside_overlap": 0}) == "" and skipped_in_words({}) == ""
