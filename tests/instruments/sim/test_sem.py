"""SEM formation: edge effect, flat level and SNR, depth of field, truth transform, TIFF export."""

import numpy as np
import pytest
import tifffile

from instruments.sim.chip import ALUMINIUM, SILICON, Block, BlockLayout, Layer
from instruments.sim.sem import SEMSettings, simulate_sem_image, write_sem_tiff

LAYERS = (Layer("substrate", 0.0, SILICON), Layer("metal", 500.0, ALUMINIUM), Layer("mesa", 1_000.0, ALUMINIUM),
          Layer("metal_on_mesa", 1_500.0, ALUMINIUM))
CHIP = (0.0, 0.0, 100_000.0, 100_000.0)
C = 50_000.0
PX = 20.0
QUIET = SEMSettings(data_bar=False, line_jitter_px=0.0, line_gain_noise=0.0)


def _pad_image(settings=QUIET, seed=0):
    pad = Block.rect(1, C - 2_000, C - 2_000, C + 2_000, C + 2_000)  # 4 µm Al pad, 500 nm tall
    layout = BlockLayout((pad,), CHIP, LAYERS)
    return simulate_sem_image(layout, centre_xy_nm=(C, C), shape=(300, 300), pixel_size_nm=PX, settings=settings,
                              seed=seed)


def test_edges_are_brighter_than_the_flat_top_of_the_same_material():
    img = _pad_image().image.astype(np.float64)
    # pad spans pixels 49.5 … 249.5; its outline band lies within 3 px inside the edge
    rows = slice(100, 200)
    left_band = img[rows, 50:53].mean()
    right_band = img[rows, 247:250].mean()
    top = img[120:180, 120:180].mean()
    assert left_band > 2.5 * top and right_band > 2.5 * top  # reference: outline ≈ 4.7× flat
    assert max(left_band, right_band) < 6.0 * top


def test_flat_level_and_snr_match_the_reference_review_images():
    img = _pad_image().image.astype(np.float64)
    flat_si = img[5:40, 5:40]  # substrate, far from the pad
    # reference (optics.md): flat mean ≈ 54 grey levels, SNR ≈ 5.5; allow 20 %
    assert flat_si.mean() == pytest.approx(54, rel=0.2)
    assert flat_si.mean() / flat_si.std() == pytest.approx(5.5, rel=0.2)


def _sharpness(img):
    img = img.astype(np.float64)
    return float(np.mean(np.abs(np.diff(img, axis=1))))


def test_a_feature_1um_higher_is_equally_sharp():
    starts = np.arange(C - 1_500, C + 1_500, 300)  # 150 nm lines every 300 nm
    lines_low = Block.from_edges(1, np.column_stack([starts, starts + 150]).ravel(), (C - 1_500, C + 1_500))
    low = BlockLayout((lines_low,), CHIP, LAYERS)
    mesa = Block.rect(2, C - 3_000, C - 3_000, C + 3_000, C + 3_000)
    lines_high = Block.from_edges(3, lines_low.x_edges, lines_low.y_edges)
    high = BlockLayout((mesa, lines_high), CHIP, LAYERS)
    kwargs = dict(centre_xy_nm=(C, C), shape=(128, 128), pixel_size_nm=PX, settings=QUIET, seed=4)
    a = simulate_sem_image(low, **kwargs).image[30:98, 30:98]
    b = simulate_sem_image(high, **kwargs).image[30:98, 30:98]
    assert _sharpness(b) == pytest.approx(_sharpness(a), rel=0.10)  # SEM depth of field: within 10 %


def test_sem_to_chip_is_the_true_transform():
    dot = Block.rect(1, 51_000, 49_500, 51_400, 49_900)  # 400 nm square centred at (51 200, 49 700) nm
    layout = BlockLayout((dot,), CHIP, LAYERS)
    sem = simulate_sem_image(layout, centre_xy_nm=(C, C), shape=(200, 240), pixel_size_nm=PX, rotation_deg=7.0,
                             settings=QUIET, seed=1)
    img = sem.image.astype(np.float64)
    img = np.where(img > 3 * np.median(img), img, 0)
    ys, xs = np.nonzero(img)
    found = np.array([(xs * img[ys, xs]).sum(), (ys * img[ys, xs]).sum()]) / img[ys, xs].sum()
    expected = np.linalg.inv(sem.sem_to_chip) @ np.array([51_200, 49_700, 1.0])
    assert np.hypot(*(found - expected[:2])) < 1.0  # within one pixel (20 nm)


def test_tiff_carries_fei_pixel_size_and_resolution_tags(tmp_path):
    sem = _pad_image(settings=SEMSettings())
    assert sem.data_bar_rows > 0
    assert np.all(sem.image[-sem.data_bar_rows:].max() == 255)  # text in the bar
    path = write_sem_tiff(tmp_path / "sem.tif", sem)
    with tifffile.TiffFile(path) as tif:
        meta = tif.fei_metadata
        page = tif.pages[0]
        assert meta["Scan"]["PixelWidth"] == pytest.approx(PX * 1e-9, rel=1e-6)
        assert meta["PrivateFei"]["DatabarHeight"] == sem.data_bar_rows
        num, den = page.tags["XResolution"].value
        assert 1e7 / (num / den) == pytest.approx(PX, rel=1e-6)  # pixels per cm → nm per pixel
        assert page.asarray().shape == sem.image.shape
    assert not list(tmp_path.glob(".tmp-*"))


def test_sem_field_outside_the_chip_raises():
    layout = BlockLayout((), CHIP, LAYERS)
    with pytest.raises(ValueError, match="inside the chip"):
        simulate_sem_image(layout, centre_xy_nm=(1_000, 1_000), shape=(256, 256), pixel_size_nm=20)
    with pytest.raises(ValueError, match="pixel_size_nm"):
        simulate_sem_image(layout, centre_xy_nm=(C, C), shape=(64, 64), pixel_size_nm=-1)
