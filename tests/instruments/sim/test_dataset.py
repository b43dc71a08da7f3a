"""The data-set writer and the in-memory helpers other rooms call."""

import cv2
import numpy as np
import pytest
import tifffile

from instruments.focus import sharpness
from instruments.sim.chip import Chip
from instruments.sim.dataset import DatasetManifest, simulate_pair, simulate_scan, simulate_sem, write_dataset


def test_tiny_preset_writes_a_complete_dataset(tmp_path):
    manifest = write_dataset(tmp_path, preset="tiny", seed=0)
    assert len(manifest.frames) == 9 and len(manifest.sem_images) == 1 and len(manifest.pairs) == 4
    assert {p.split for p in manifest.pairs} == {"train", "test"}
    frame = tifffile.imread(tmp_path / manifest.frames[0].path)
    assert frame.dtype == np.uint16 and frame.shape == manifest.frame_shape
    for pair in manifest.pairs:
        lr = cv2.imread(str(tmp_path / pair.lr_path), cv2.IMREAD_UNCHANGED)
        hr = cv2.imread(str(tmp_path / pair.hr_path), cv2.IMREAD_UNCHANGED)
        assert lr.dtype == np.uint16 and hr.dtype == np.uint8 and lr.shape == hr.shape == (128, 128)
    with tifffile.TiffFile(tmp_path / manifest.sem_images[0].path) as tif:
        assert tif.fei_metadata["Scan"]["PixelWidth"] == pytest.approx(manifest.sem_images[0].pixel_size_nm * 1e-9)
    assert DatasetManifest.load(tmp_path) == manifest
    assert not list(tmp_path.rglob(".tmp-*"))


def test_scan_truth_relates_nominal_true_and_frame_transforms():
    scan = simulate_scan(seed=1, grid=(2, 3), roi=(1280 - 96, 1080 - 96, 192, 192))
    assert scan.frames.shape == (6, 192, 192)
    assert [tuple(i) for i in scan.grid_index] == [(0, 0), (0, 1), (0, 2), (1, 2), (1, 1), (1, 0)]  # serpentine
    err = np.linalg.norm(scan.true_xy_nm - scan.nominal_xy_nm, axis=1)
    assert np.all(err > 0) and np.all(err < 200)
    # each frame's pixel → chip translation moves exactly with the true stage position
    shift = scan.frame_to_chip[:, :2, 2] - scan.frame_to_chip[0, :2, 2]
    assert np.allclose(shift, scan.true_xy_nm - scan.true_xy_nm[0], atol=0.5)  # 0.5 nm: gap-dependent M
    assert scan.pixel_size_nm == pytest.approx(32.5, rel=1e-3)
    assert scan.fov_mask.shape == (192, 192) and scan.fov_mask.mean() > 0.9


def test_neighbouring_frames_overlap_in_content():
    # the same chip point seen in two frames has (nearly) the same expected value
    scan = simulate_scan(seed=2, grid=(1, 2), roi=(1280 - 160, 1080 - 160, 320, 320), noise=False)
    a, b = scan.frames.astype(np.float64)
    chip_pt = scan.frame_to_chip[0] @ np.array([230.0, 160.0, 1.0])  # right of the first FOV's centre
    pix_b = np.linalg.solve(scan.frame_to_chip[1], chip_pt)
    va = a[160, 230]
    vb = b[int(round(pix_b[1])), int(round(pix_b[0]))]
    assert vb == pytest.approx(va, rel=0.25)  # vignetting differs by field position


def test_sem_and_pair_helpers():
    sem = simulate_sem(seed=0, shape=(128, 160), pixel_size_nm=25, rotation_deg=2.0)
    assert sem.image_area.shape == (128, 160) and sem.pixel_size_nm == 25
    assert np.degrees(np.arctan2(sem.sem_to_chip[1, 0], sem.sem_to_chip[0, 0])) == pytest.approx(2.0)
    pair = simulate_pair(Chip(seed=0), centre_xy_nm=(100_000, 100_000), size_px=96)
    assert pair.lr.shape == pair.hr.shape == (96, 96) and pair.lr.dtype == np.uint16


def test_unknown_preset_raises():
    with pytest.raises(ValueError, match="preset"):
        write_dataset("/nonexistent", preset="huge")


def test_z_stack_scan_fuses_planes_to_a_sharper_frame():
    single = simulate_scan(seed=1, grid=(1, 2), noise=False)
    stacked = simulate_scan(seed=1, grid=(1, 2), noise=False, stack_depths_nm=(0, 600, 1200, 1900))
    surface_only = simulate_scan(seed=1, grid=(1, 2), noise=False, stack_depths_nm=(0,))
    assert all(np.array_equal(a, b) for a, b in zip(single.frames, surface_only.frames, strict=True))
    # The second point's lower layers are defocused in the single plane and sharp in the stack.
    assert sharpness(stacked.frames[1]) > 1.05 * sharpness(single.frames[1])
    np.testing.assert_array_equal(stacked.frame_to_chip, single.frame_to_chip)


def test_a_z_stack_reaches_above_the_contact_surface_as_far_as_the_sphere_s_sag_at_the_field_s_rim():
    surface_only = simulate_scan(seed=1, grid=(1, 1), noise=False, stack_depths_nm=(0,))
    above = simulate_scan(seed=1, grid=(1, 1), noise=False, stack_depths_nm=(-400, 0))  # within the 890 nm sag
    beyond = simulate_scan(seed=1, grid=(1, 1), noise=False, stack_depths_nm=(-2000, 0))
    assert not np.array_equal(above.frames[0], surface_only.frames[0])
    np.testing.assert_array_equal(beyond.frames[0], surface_only.frames[0])
