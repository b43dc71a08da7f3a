"""The procedural chip: determinism, laziness, exact rasterisation, bounds."""

import numpy as np
import pytest

from instruments.sim.chip import DEFAULT_LAYERS, Block, BlockLayout, Chip, rasterize, render_region


def _render(seed, origin=(60_000, 60_000)):
    return rasterize(Chip(seed=seed), origin_nm=origin, shape=(200, 200), pixel_size_nm=100)


def test_same_seed_same_layout_different_seed_different():
    a, b, c = _render(5), _render(5), _render(6)
    assert np.array_equal(a.height_nm, b.height_nm) and np.array_equal(a.reflectance, b.reflectance)
    assert np.mean(a.height_nm != c.height_nm) > 0.1  # > 10 % of pixels differ


def test_regions_render_without_the_rest_of_the_chip():
    chip = Chip(seed=1, size_nm=(5_000_000, 5_000_000))  # 5 mm: far too big to build whole
    blocks = chip.blocks_in(2_500_000, 2_500_000, 2_510_000, 2_510_000)
    assert 0 < len(blocks) < 200  # only the one or two cells touched
    m = rasterize(chip, origin_nm=(2_500_000, 2_500_000), shape=(64, 64), pixel_size_nm=150)
    assert m.height_nm.shape == (64, 64)


def test_chip_has_the_issue_features_and_topography():
    m = rasterize(Chip(seed=0), origin_nm=(0, 0), shape=(400, 400), pixel_size_nm=500)
    assert m.height_nm.min() == 0.0 and 1_000 < m.height_nm.max() <= 2_000  # 0–2 µm of topography
    chip = Chip(seed=0)
    blocks = chip.blocks_in(0, 0, 200_000, 200_000)
    widths = [np.diff(b.x_edges.reshape(-1, 2)).min() for b in blocks if b.x_edges.size > 4]
    assert min(widths) >= 80 and min(widths) <= 200  # line widths from 80 nm up
    assert {DEFAULT_LAYERS[b.layer].name for b in blocks} >= {"poly", "metal1", "metal2", "pad", "via"}


def test_rasterisation_is_exact_area_coverage():
    square = Block.rect(5, 1_013.0, 2_027.0, 1_113.0, 2_127.0)  # 100 nm square off the pixel grid
    layout = BlockLayout((square,), (0, 0, 10_000, 10_000))
    m = rasterize(layout, origin_nm=(900, 1_900), shape=(20, 20), pixel_size_nm=30)
    refl_al, refl_si = DEFAULT_LAYERS[5].material.reflectance, DEFAULT_LAYERS[0].material.reflectance
    covered = (m.reflectance - refl_si) / (refl_al - refl_si)
    assert covered.sum() * 30 ** 2 == pytest.approx(100 * 100, rel=1e-5)


def test_density_stand_in_keeps_the_metal_fraction():
    # labels become a density block when pixels are coarse; the mean reflectance barely moves
    chip = Chip(seed=0)
    fine = rasterize(chip, origin_nm=(0, 0), shape=(400, 400), pixel_size_nm=100).reflectance.mean()
    coarse = rasterize(chip, origin_nm=(0, 0), shape=(80, 80), pixel_size_nm=500).reflectance.mean()
    assert coarse == pytest.approx(fine, rel=0.01)


def test_bad_chip_and_region_raise():
    with pytest.raises(ValueError, match=r"chip_size_nm\[x\]"):
        Chip(size_nm=(100_000, 200_000))
    with pytest.raises(ValueError, match="region_nm"):
        render_region(Chip(), region_nm=(190_000, 0, 210_000, 10_000), pixel_size_nm=50)
    with pytest.raises(ValueError, match="pixel_size_nm"):
        render_region(Chip(), region_nm=(0, 0, 1_000, 1_000), pixel_size_nm=0)


def test_scaled_layers_flatten_the_chip():
    from instruments.sim.chip import scaled_layers

    m = rasterize(Chip(seed=0, layers=scaled_layers(0.1)), origin_nm=(0, 0), shape=(100, 100), pixel_size_nm=500)
    assert m.height_nm.max() <= 190.0 + 1e-3  # 10 % of the 1.9 µm pad height


def test_bare_silicon_is_substrate_with_seeded_dust():
    from instruments.sim.chip import PARTICLES_PER_MM2, bare_silicon

    bounds = (0.0, 0.0, 200_000.0, 200_000.0)
    wafer = bare_silicon(bounds, seed=4)
    expected = PARTICLES_PER_MM2 * 0.04  # 0.2 × 0.2 mm
    assert abs(len(wafer.blocks) - expected) < 4 * expected**0.5
    assert [(b.bbox) for b in wafer.blocks] == [(b.bbox) for b in bare_silicon(bounds, seed=4).blocks]
    assert all(300 <= b.bbox[2] - b.bbox[0] <= 1510 for b in wafer.blocks)
    clean = rasterize(bare_silicon(bounds, particles_per_mm2=0), origin_nm=(1000, 1000), shape=(64, 64),
                      pixel_size_nm=100)
    assert np.all(clean.reflectance == DEFAULT_LAYERS[0].material.reflectance) and np.all(clean.height_nm == 0)
    speck = wafer.blocks[0].bbox
    dusty = rasterize(wafer, origin_nm=(speck[0] - 1000, speck[1] - 1000), shape=(40, 40), pixel_size_nm=100)
    assert dusty.reflectance.min() < 0.1  # a particle is dark
