import numpy as np
import pytest
import torch

from mlcore.data import Normalization
from mlcore.errors import CheckpointError, InputImageError
from mlcore.infer import (
    LiveTranslator,
    load_model,
    reflect_index,
    translate_mosaic,
    translate_region,
    translate_whole,
)
from tests.mlcore.tiny_model import tiny_model


@pytest.fixture
def model():
    return tiny_model()


@pytest.fixture
def mosaic():
    return (np.random.default_rng(1).random((150, 203)) * 65535).astype(np.uint16)


def test_reflect_index_matches_numpy_reflect():
    a = np.arange(7)
    idx = reflect_index(np.arange(-5, 12), 7)
    assert np.array_equal(a[idx], np.pad(a, 5, mode="reflect"))


@pytest.mark.parametrize("tile, risk", [(32, False), (64, True), (512, True)])
def test_tiled_equals_whole_image(model, mosaic, tile, risk):
    whole = translate_whole(model, mosaic, risk=risk)
    tiled = translate_mosaic(model, mosaic, tile=tile, batch_size=3, risk=risk, as_uint16=False)
    assert np.abs(tiled.sem_like - whole.sem_like).max() < 1e-4
    if risk:
        assert np.abs(tiled.risk - whole.risk).max() < 1e-4
        assert tiled.risk.shape == mosaic.shape and tiled.risk.min() >= 0


def test_halo_is_needed(model, mosaic):
    whole = translate_whole(model, mosaic)
    model.halo = 0  # guard: without the derived halo, tiles do differ
    tiled = translate_mosaic(model, mosaic, tile=32, risk=False, as_uint16=False)
    assert np.abs(tiled.sem_like - whole.sem_like).max() > 1e-3


def test_region_equals_the_same_pixels_of_the_whole(model, mosaic):
    full = translate_mosaic(model, mosaic, tile=64)
    part = translate_region(model, mosaic, rows=(37, 101), cols=(50, 190), tile=32)
    assert part.sem_like.dtype == np.uint16
    # Equal up to float summation order (oneDNN blocks differently per tile size): ±1 count.
    diff = part.sem_like.astype(np.int64) - full.sem_like[37:101, 50:190]
    assert np.abs(diff).max() <= 1 and np.mean(diff != 0) < 0.05
    assert np.abs(part.risk - full.risk[37:101, 50:190]).max() < 1e-4


def test_live_translation_grows_and_ends_equal(model):
    canvas = (np.random.default_rng(2).random((320, 96)) * 65535).astype(np.uint16)
    full = translate_mosaic(model, canvas, tile=32, risk=False)
    live = LiveTranslator(model, canvas.shape, tile=32, risk=False)
    written = []
    for r0 in range(0, 320, 64):  # the scan stitches a band at a time
        live.add_region(rows=(r0, r0 + 64), cols=(0, 96))
        boxes = live.translate_ready(canvas)
        for a0, a1, b0, b1 in boxes:
            assert np.array_equal(live.out[a0:a1, b0:b1], full.sem_like[a0:a1, b0:b1])
        written.append(len(boxes))
    assert written[0] == 0 and 0 < written[2] and sum(written[:-1]) < 30  # grows with the scan
    result = live.finish(canvas)
    assert live.complete and np.array_equal(result.sem_like, full.sem_like)


def test_small_mosaic_is_padded_not_refused(model):
    small = (np.random.default_rng(3).random((21, 30)) * 65535).astype(np.uint16)
    out = translate_mosaic(model, small, tile=512, as_uint16=False)
    assert out.sem_like.shape == (21, 30) and out.tiles == 1
    assert np.abs(out.sem_like - translate_whole(model, small).sem_like).max() < 1e-4


def test_bad_inputs_give_clear_errors(model, mosaic, tmp_path):
    with pytest.raises(InputImageError, match="1-channel"):
        translate_mosaic(model, np.zeros((64, 64, 3), np.uint16))
    nan = mosaic.astype(np.float32)
    nan[70, 9] = np.nan
    with pytest.raises(InputImageError, match=r"NaN.*\(70, 9\)"):
        translate_mosaic(model, nan)
    with pytest.raises(InputImageError, match="at least"):
        translate_mosaic(model, np.zeros((4, 64), np.uint16))
    with pytest.raises(ValueError, match="tile"):
        translate_mosaic(model, mosaic, tile=30)
    with pytest.raises(ValueError, match="region"):
        translate_region(model, mosaic, rows=(0, 500), cols=(0, 10))
    junk = tmp_path / "model.pt"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="not an mlcore checkpoint"):
        load_model(junk)
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an mlcore checkpoint"):
        load_model(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "missing.pt")


def test_uint16_output_uses_sem_normalisation(model, mosaic):
    model.norm_b = Normalization(1000, 3000)
    out = translate_mosaic(model, mosaic, tile=64, risk=False)
    assert out.sem_like.dtype == np.uint16
    assert 1000 <= out.sem_like.min() and out.sem_like.max() <= 3000


def test_bf16_option_runs_close_to_fp32(model, mosaic):
    a = translate_mosaic(model, mosaic[:64, :64], tile=64, risk=False, as_uint16=False)
    b = translate_mosaic(model, mosaic[:64, :64], tile=64, risk=False, as_uint16=False,
                         bf16=True)
    assert np.abs(a.sem_like - b.sem_like).max() < 0.05  # equal where bf16 is unsupported


def test_nothing_is_translated_where_no_frame_covers_the_mosaic(model, mosaic):
    # the generator paints texture over the mosaic's empty corners too: a translation of nothing
    covered = mosaic.copy()
    covered[covered == 0] = 1
    covered[:60, :80] = 0             # no frame there
    covered[100, 150] = 0             # a dark pixel inside the scan, rounded to 0: covered all the same
    tiled = translate_mosaic(model, covered, tile=32, batch_size=3, risk=True, as_uint16=False)
    whole = translate_whole(model, covered, risk=True)
    assert (tiled.sem_like[:58, :78] == 0).all() and (tiled.risk[:58, :78] == 0).all()
    assert (tiled.risk[62:, 82:] > 0).mean() > 0.99 and tiled.risk[100, 150] > 0  # translated where covered
    assert np.abs(tiled.sem_like - whole.sem_like).max() < 1e-4 and np.abs(tiled.risk - whole.risk).max() < 1e-4
