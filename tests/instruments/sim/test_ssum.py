"""SSUM frame formation: resolution across the field, defocus with depth, focus prediction.

All measurements use the noise-free electron rate (the frame's expectation) so they are exact
and deterministic; noise is pinned separately in test_camera.py.
"""

import cv2
import numpy as np
import pytest

from instruments.sim.chip import ALUMINIUM, Block, BlockLayout, Layer
from instruments.sim.optics import SSUMOptics

from .targets import CHIP, CHROME, FLAT_TARGET_LAYERS, GLASS, SENSOR_CENTRE, clean_rate, grating, michelson

OPTICS = SSUMOptics()
R_PX = OPTICS.fov_radius_sensor_px(6_500)
R_NM = OPTICS.fov_radius_nm()
SPHERE_PX_NM = OPTICS.sample_pixel_nm(6_500)
PLAIN_PX_NM = 6_500 / 50
CENTRE = (200_000.0, 200_000.0)
RESOLVED = 0.1  # Michelson contrast that counts as resolved (the criterion)


def _contrast(where: str, pitch: float) -> float:
    if where == "centre":
        layout = grating(CENTRE, pitch_nm=pitch)
        img = clean_rate(layout, centre_nm=CENTRE, camera_xy=SENSOR_CENTRE)
        return michelson(img, pixel_size_nm=SPHERE_PX_NM, pitch_nm=pitch)
    if where == "edge":  # 0.85 of the FOV radius, toward +x
        layout = grating((CENTRE[0] + 0.85 * R_NM, CENTRE[1]), pitch_nm=pitch)
        img = clean_rate(layout, centre_nm=CENTRE, camera_xy=(SENSOR_CENTRE[0] + 0.85 * R_PX, SENSOR_CENTRE[1]))
        return michelson(img, pixel_size_nm=SPHERE_PX_NM, pitch_nm=pitch)
    # plain objective image: 400 sensor px from the sphere, objective focused on the sample
    layout = grating((CENTRE[0] + 400 * PLAIN_PX_NM, CENTRE[1]), pitch_nm=pitch, length_nm=6_000)
    img = clean_rate(layout, centre_nm=CENTRE, camera_xy=(SENSOR_CENTRE[0] + 400, SENSOR_CENTRE[1]),
                     focal_plane_nm=0.0, half_px=16)
    return michelson(img, pixel_size_nm=PLAIN_PX_NM, pitch_nm=pitch)


def test_150nm_pitch_resolved_only_at_the_sphere_centre():
    assert _contrast("centre", 150) >= RESOLVED
    assert _contrast("edge", 150) < RESOLVED
    assert _contrast("plain", 150) < RESOLVED


@pytest.mark.parametrize("where", ["centre", "edge", "plain"])
def test_600nm_pitch_resolved_everywhere(where):
    assert _contrast(where, 600) >= RESOLVED


def _hf_energy(img: np.ndarray) -> float:
    """Mean squared high-pass (image − Gaussian σ=2 px), normalised by the mean level."""
    img = img.astype(np.float32) / float(img.mean())
    return float(np.mean((img - cv2.GaussianBlur(img, (0, 0), 2.0)) ** 2))


MESA = Layer("mesa", 1_000.0, ALUMINIUM)
DEEP_LAYERS = (Layer("glass", 0.0, GLASS), Layer("chrome", 0.0, CHROME), MESA)


def _deep_grating_rate(focal_plane_nm: float, *, contact_height_nm: float) -> np.ndarray:
    """A 300 nm grating on the substrate; the sphere rests on a 1 µm mesa 5 µm away."""
    mesa = Block.rect(2, CENTRE[0] + 4_000, CENTRE[1] - 3_000, CENTRE[0] + 6_000, CENTRE[1] + 3_000)
    layout = grating(CENTRE, pitch_nm=300, lines=9, length_nm=3_000, layers=DEEP_LAYERS, extra=(mesa,))
    return clean_rate(layout, centre_nm=CENTRE, camera_xy=SENSOR_CENTRE, half_px=40,
                      focal_plane_nm=focal_plane_nm, contact_height_nm=contact_height_nm)[20:60, 20:60]


def test_feature_1um_below_focus_is_defocused_and_refocused_by_the_predicted_stage_move():
    o = OPTICS
    in_plane = o.radius_nm - o.image_distance_nm(o.radius_nm)  # focus on the contact plane
    reference = _hf_energy(_deep_grating_rate(in_plane, contact_height_nm=0.0))  # grating in contact plane
    defocused = _hf_energy(_deep_grating_rate(in_plane, contact_height_nm=1_000.0))  # grating 1 µm deeper
    assert defocused < 0.2 * reference  # visibly defocused: < 20 % of the in-focus HF energy
    stage_move = o.image_distance_nm(o.radius_nm + 1_000) - o.image_distance_nm(o.radius_nm)
    refocused = _hf_energy(_deep_grating_rate(in_plane - stage_move, contact_height_nm=1_000.0))
    assert refocused == pytest.approx(reference, rel=0.15)  # sharp again within 15 %


@pytest.mark.parametrize("gap_nm", [0.0, 80.0])
def test_z_stack_is_sharpest_at_the_predicted_virtual_image_plane(gap_nm):
    o = OPTICS
    layout = grating(CENTRE, pitch_nm=250, lines=9)
    predicted = o.radius_nm - o.image_distance_nm(o.radius_nm + gap_nm)
    step = 1_000.0  # stage nm; about M²·60 nm of sample depth
    offsets = np.arange(-4, 5) * step
    sharpness = [_hf_energy(clean_rate(layout, centre_nm=CENTRE, camera_xy=SENSOR_CENTRE, half_px=32,
                                       gap_nm=gap_nm, focal_plane_nm=predicted + dz)) for dz in offsets]
    assert offsets[int(np.argmax(sharpness))] == 0.0  # best plane within half a step of the prediction
    assert sharpness[0] < 0.5 * max(sharpness) and sharpness[-1] < 0.5 * max(sharpness)


def test_magnification_maps_a_known_feature_to_the_predicted_pixel():
    # a 300 nm chrome square 2 µm right of the axis lands 2000/32.5 ≈ 61.5 px right of the sphere centre
    square = Block.rect(1, CENTRE[0] + 1_850, CENTRE[1] - 150, CENTRE[0] + 2_150, CENTRE[1] + 150)
    layout = BlockLayout((square,), CHIP, FLAT_TARGET_LAYERS)
    img = clean_rate(layout, centre_nm=CENTRE, camera_xy=SENSOR_CENTRE, half_px=96)
    img = img - np.median(img)
    ys, xs = np.nonzero(img > 0.5 * img.max())
    w = img[ys, xs]
    col = (xs * w).sum() / w.sum()
    row = (ys * w).sum() / w.sum()
    roi_x0 = round(SENSOR_CENTRE[0]) - 96
    roi_y0 = round(SENSOR_CENTRE[1]) - 96
    assert col + roi_x0 - SENSOR_CENTRE[0] == pytest.approx(2_000 / SPHERE_PX_NM, abs=0.5)  # within 0.5 px
    assert row + roi_y0 - SENSOR_CENTRE[1] == pytest.approx(0.0, abs=0.5)
