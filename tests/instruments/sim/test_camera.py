"""The PCO.edge pixel chain: photon statistics, clipping, ROI checks."""

import numpy as np
import pytest

from instruments.sim.camera import CameraModel, expose
from instruments.sim.chip import BlockLayout
from instruments.sim.world import SimWorld, StageErrors

from .targets import CHIP, FLAT_TARGET_LAYERS


@pytest.mark.parametrize("mean_e", [10.0, 200.0, 5_000.0])
def test_flat_field_variance_is_mean_plus_read_noise_squared(mean_e):
    cam = CameraModel()
    rate = np.full((256, 256), mean_e / 0.01, np.float32)
    frame = expose(rate, camera=cam, exposure_s=0.01, rng=np.random.default_rng(1), noise_seed=3)
    electrons = (frame.astype(np.float64) - cam.offset_adu) * cam.conversion_e_per_adu
    mean_total = mean_e + cam.dark_current_e_per_s * 0.01
    # ADU rounding adds conversion²/12 ≈ 0.02 e², far below the 5 % tolerance.
    assert electrons.mean() == pytest.approx(mean_total, rel=0.01, abs=0.1)
    assert electrons.var() == pytest.approx(mean_total + cam.read_noise_e ** 2, rel=0.05)


def test_frame_noise_through_the_world_follows_the_same_law():
    # A blank flat sample: every pixel's residual, scaled by sqrt(mean + read²), has unit variance.
    world = SimWorld(seed=2, layout=BlockLayout((), CHIP, FLAT_TARGET_LAYERS), stage_errors=StageErrors.none())
    roi = (1280 - 64, 1080 - 64, 128, 128)
    frame = world.render_frame(exposure_s=0.01, roi=roi)
    cam = world.camera
    mean_e = world.expected_electrons_per_s(roi) * 0.01 + cam.dark_current_e_per_s * 0.01
    electrons = (frame.astype(np.float64) - cam.offset_adu) * cam.conversion_e_per_adu
    z = (electrons - mean_e) / np.sqrt(mean_e + cam.read_noise_e ** 2)
    assert z.var() == pytest.approx(1.0, rel=0.05)
    assert abs(z.mean()) < 0.03


def test_saturation_clips_to_the_full_well_and_16_bits():
    cam = CameraModel()
    frame = expose(np.full((32, 32), 1e9, np.float32), camera=cam, exposure_s=0.1, rng=np.random.default_rng(0))
    assert frame.dtype == np.uint16
    assert frame.max() == round(cam.full_well_e / cam.conversion_e_per_adu + cam.offset_adu)
    binned = expose(np.full((32, 32), 1e9, np.float32), camera=cam, exposure_s=0.1, binning=4,
                    rng=np.random.default_rng(0))
    assert binned.max() == 65535


@pytest.mark.parametrize("roi, name", [((0, 0, 4000, 512), "roi width"), ((2400, 0, 512, 512), "roi x"),
                                       ((0, 0, 512, 3000), "roi height"), ((-1, 0, 64, 64), "roi x")])
def test_roi_outside_the_sensor_raises(roi, name):
    with pytest.raises(ValueError, match=name):
        CameraModel().check_roi(roi)


def test_bad_camera_parameters_raise():
    with pytest.raises(ValueError, match="quantum_efficiency"):
        CameraModel(quantum_efficiency=1.5)
    with pytest.raises(ValueError, match="exposure_s"):
        expose(np.ones((4, 4), np.float32), camera=CameraModel(), exposure_s=-1, rng=np.random.default_rng(0))
