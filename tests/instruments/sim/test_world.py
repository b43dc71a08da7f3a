"""SimWorld: the API the device fakes and the simulated camera call."""

import numpy as np
import pytest

from instruments.sim.world import FOCUS_REFERENCE_NM, SimWorld, StageErrors

ROI = (1280 - 64, 1080 - 64, 128, 128)


def _at_contact(world, x=30_000, y=40_000):
    world.set_piezo_nm(x, y, 0)
    world.set_piezo_nm(x, y, world.contact_z_nm())
    world.set_focus_nm(world.virtual_image_focus_nm())
    return world


def test_same_seed_same_frames_different_seed_different():
    a = _at_contact(SimWorld(seed=3)).render_frame(exposure_s=0.01, roi=ROI)
    b = _at_contact(SimWorld(seed=3)).render_frame(exposure_s=0.01, roi=ROI)
    c = _at_contact(SimWorld(seed=4)).render_frame(exposure_s=0.01, roi=ROI)
    assert a.dtype == np.uint16 and a.shape == (128, 128)
    assert np.array_equal(a, b)
    assert np.abs(a.astype(float) - c).mean() > 100  # a different chip (ADU)


def test_successive_frames_differ_only_by_noise():
    world = _at_contact(SimWorld(seed=1))
    f1, f2 = (world.render_frame(exposure_s=0.01, roi=ROI).astype(float) for _ in range(2))
    assert not np.array_equal(f1, f2)
    assert abs((f1 - f2).mean()) < 5  # same scene: mean difference within 5 ADU


def test_true_position_departs_from_the_command_by_small_errors():
    world = SimWorld(seed=0)
    errors = []
    for x in np.linspace(10_000, 90_000, 9):
        world.set_piezo_nm(x, 50_000, 0)
        tx, ty, _ = world.piezo_true_nm()
        errors.append(np.hypot(tx - x, ty - 50_000))
    assert 0 < max(errors) < 200  # nm: scale error + drift + noise, never more than 200 nm here
    exact = SimWorld(seed=0, stage_errors=StageErrors.none())
    exact.set_piezo_nm(12_345, 54_321, 0)
    assert exact.piezo_true_nm() == (12_345.0, 54_321.0, 0.0)


def test_contact_deflection_and_the_unreachable_contact_fault():
    world = SimWorld(seed=0, stage_errors=StageErrors.none())
    world.set_piezo_nm(50_000, 50_000, 0)
    contact = world.contact_z_nm()
    assert 0 < contact < 10_000
    assert world.deflection_nm() == 0.0 and world.gap_nm() == pytest.approx(contact)
    world.set_piezo_nm(50_000, 50_000, contact + 40)
    assert world.deflection_nm() == pytest.approx(40.0) and world.gap_nm() == 0.0
    faulty = SimWorld(seed=0, contact_offset_nm=20_000)
    faulty.set_piezo_nm(50_000, 50_000, 10_000)
    assert faulty.contact_z_nm() > 10_000 and faulty.deflection_nm() == 0.0


def test_gap_changes_magnification_and_focus():
    world = SimWorld(seed=0, stage_errors=StageErrors.none())
    world.set_piezo_nm(50_000, 50_000, 0)
    world.set_piezo_nm(50_000, 50_000, world.contact_z_nm() - 200)  # 200 nm gap
    assert world.gap_nm() == pytest.approx(200)
    assert world.pixel_size_nm < 32.5  # larger M at a gap
    assert world.virtual_image_focus_nm() < FOCUS_REFERENCE_NM - 3_000  # image lies ≈ M²·200 nm deeper


def test_frame_to_chip_follows_the_true_position_and_rotation():
    world = SimWorld(seed=0)
    world.set_piezo_nm(30_000, 30_000, 0)
    m1 = world.frame_to_chip(ROI)
    t1 = np.array(world.piezo_true_nm()[:2])
    world.set_piezo_nm(37_000, 30_000, 0)
    m2 = world.frame_to_chip(ROI)
    t2 = np.array(world.piezo_true_nm()[:2])
    axis_px = np.array([63.5, 63.5, 1.0])  # the sphere's axis in this ROI (pixel size varies with the gap)
    assert np.allclose((m2 @ axis_px)[:2] - (m1 @ axis_px)[:2], t2 - t1, atol=1e-6)  # moves with the true stage
    angle = np.degrees(np.arctan2(m1[1, 0], m1[0, 0]))
    assert angle == pytest.approx(world.stage_errors.rotation_deg, abs=1e-9)


def test_binning_and_default_roi():
    world = _at_contact(SimWorld(seed=0))
    assert world.render_frame(exposure_s=0.005).shape == (512, 512)  # default ROI around the sphere
    assert world.render_frame(exposure_s=0.002, roi=(1024, 824, 512, 512), binning=2).shape == (256, 256)
    assert world.fov_mask(binning=2).shape == (256, 256)


@pytest.mark.parametrize("call, name", [
    (lambda w: w.set_piezo_nm(-1, 0, 0), "piezo x"),
    (lambda w: w.set_piezo_nm(0, 100_001, 0), "piezo y"),
    (lambda w: w.set_piezo_nm(0, 0, 10_500), "piezo z"),
    (lambda w: w.set_focus_nm(-5), "focus z"),
    (lambda w: w.render_frame(exposure_s=0.01, roi=(0, 0, 3000, 100)), "roi width"),
])
def test_out_of_range_requests_raise_naming_the_parameter(call, name):
    with pytest.raises(ValueError, match=name):
        call(SimWorld(seed=0))


def test_mounting_bare_silicon_changes_what_the_sphere_touches_and_the_camera_sees():
    import cv2

    from instruments.sim.chip import bare_silicon

    world = SimWorld(seed=1)
    chip = world.layout
    world.set_piezo_nm(50_000, 50_000, 0.0)
    world.set_piezo_nm(50_000, 50_000, world.contact_z_nm())
    world.set_focus_nm(world.virtual_image_focus_nm())
    disc = world.fov_mask(fraction=0.5)

    def detail(rate):  # what is left of the image once its smooth shading is taken away
        return np.std((rate - cv2.GaussianBlur(rate, (0, 0), 4))[disc]) / rate[disc].mean()

    on_chip = (world.contact_height_nm(), world.expected_electrons_per_s().copy())
    world.mount(bare_silicon(chip.bounds_nm, particles_per_mm2=0))
    assert world.contact_height_nm() == 0.0 < on_chip[0]
    assert detail(world.expected_electrons_per_s()) < 0.01 * detail(on_chip[1])
    world.mount(chip)
    assert world.contact_height_nm() == on_chip[0]
    assert np.array_equal(world.expected_electrons_per_s(), on_chip[1])
