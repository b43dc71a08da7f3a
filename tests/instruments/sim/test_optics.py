"""Ball-lens relations, FOV and pixel size against the formulas in docs/physics.md."""

import math

import pytest

from instruments.sim.optics import SSUMOptics
from instruments.sim.world import FOCUS_REFERENCE_NM, SimWorld, StageErrors


def test_calibrated_magnification_and_effective_index():
    o = SSUMOptics()  # calibrated M = 4 at contact
    n = o.relative_index
    assert n == pytest.approx(2 * 4 / (4 + 1), rel=1e-12)  # n_eff = 2M/(M+1) = 1.6
    f = n * o.sphere_diameter_nm / (4 * (n - 1))
    assert o.focal_length_nm == pytest.approx(f, rel=1e-12)  # f = nD/(4(n-1)) = 38 µm
    assert o.magnification_at(0.0) == pytest.approx(4.0, rel=1e-9)
    # M(gap) = f/(f - R - gap): 100 nm of gap raises M by ≈1 %
    assert o.magnification_at(100.0) == pytest.approx(f / (f - 28_500 - 100), rel=1e-12)


@pytest.mark.parametrize("medium, expected, tol", [(1.0, 19.0, 0.01), (1.33, 2.5, 0.05)])
def test_paraxial_magnification_for_a_real_medium(medium, expected, tol):
    # optics.md: BTG in air M ≈ 19 at contact, in water M ≈ 2.5
    o = SSUMOptics(medium_index=medium)
    assert o.magnification_at(0.0) == pytest.approx(expected, rel=tol)


def test_fov_radius_and_pixel_size():
    o = SSUMOptics()
    assert o.fov_radius_nm() == pytest.approx(28_500 / 4, rel=1e-9)  # R / M
    assert o.fov_radius_sensor_px(6_500) == pytest.approx(28_500 * 50 / 6_500, rel=1e-12)  # R·M_obj/pitch
    assert o.sample_pixel_nm(6_500) == pytest.approx(32.5, rel=1e-9)  # pitch/(M_obj·M)


def test_fov_mask_area_matches_radius():
    world = SimWorld(seed=0, stage_errors=StageErrors.none())
    mask = world.fov_mask()
    expected = math.pi * world.fov_radius_px ** 2
    assert mask.sum() == pytest.approx(expected, rel=0.01)  # pixel-count area within 1 %


def test_virtual_image_depth_and_focus_prediction():
    o = SSUMOptics()
    # V(s) − s with s = R: (M − 1)·R = 85.5 µm below the sample at contact
    assert o.virtual_image_depth_nm(0.0) == pytest.approx(3 * 28_500, rel=1e-9)
    world = SimWorld(seed=0, stage_errors=StageErrors.none())
    world.set_piezo_nm(50_000, 50_000, world.contact_z_nm())
    assert world.gap_nm() == 0.0
    assert world.virtual_image_focus_nm() == pytest.approx(FOCUS_REFERENCE_NM, abs=1e-3)  # reference = contact image
    # a feature 1 µm deeper needs dV = V(R+1µm) − V(R) more travel, ≈ M² = 16 µm to first order
    dv = world.virtual_image_focus_nm() - world.virtual_image_focus_nm(feature_depth_nm=1_000)
    assert dv == pytest.approx(o.image_distance_nm(29_500) - o.image_distance_nm(28_500), rel=1e-12)
    assert 16_000 < dv < 18_000


def test_resolution_figures():
    o = SSUMOptics()
    assert o.centre_resolution_nm == pytest.approx(550 / 3.8, rel=1e-12)  # λ/(2 n_s)
    assert o.objective_resolution_nm == pytest.approx(0.61 * 550 / 0.55, rel=1e-12)  # 0.61 λ/NA
    assert o.resolution_nm(1.0) == pytest.approx(2.5 * 550 / 3.8, rel=1e-12)  # edge factor 2.5


@pytest.mark.parametrize("kwargs, name", [
    ({"sphere_diameter_nm": -57_000}, "sphere_diameter_nm"),
    ({"sphere_index": 1.3, "medium_index": 1.33}, "medium_index"),
    ({"sphere_index": 1.9, "medium_index": 1.9}, "medium_index"),
    ({"sphere_index": 2.4, "medium_index": 1.0}, "sphere_index/medium_index"),
    ({"objective_na": 1.2}, "objective_na"),
    ({"magnification": 0.5}, "magnification"),
])
def test_impossible_optics_raise_naming_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name.replace("/", "/") + r".*(range|must)"):
        SSUMOptics(**kwargs)


def test_gap_beyond_focal_length_raises():
    with pytest.raises(ValueError, match="gap_nm"):
        SSUMOptics().magnification_at(20_000)
