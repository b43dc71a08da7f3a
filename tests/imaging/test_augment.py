"""imaging.augment: exact flips/quarter turns, valid-region crops, identical pair transforms."""

import numpy as np
import pytest

from imaging.augment import Augmentation, apply_augmentation, augment_pair, flip, rotate, scale


def test_flips_and_quarter_turns_are_exact():
    image = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    assert np.array_equal(flip(image, horizontal=True), image[:, ::-1])
    assert np.array_equal(flip(image, vertical=True), image[::-1])
    assert np.array_equal(rotate(image, 90), np.rot90(image))
    assert np.array_equal(rotate(rotate(image, 90), -90), image)


@pytest.mark.parametrize("angle", [30, 45, 60, -30])
def test_crop_mode_leaves_no_empty_corners_and_reflect_fills_them(angle):
    image = np.ones((64, 64), np.float32)
    assert rotate(image, angle, mode="crop").min() > 0.99  # no black from outside the rotated frame
    assert rotate(image, angle, mode="reflect").min() > 0.99
    # a plain warp without either treatment would leave empty corners
    import cv2

    plain = cv2.warpAffine(image, cv2.getRotationMatrix2D((31.5, 31.5), angle, 1.0), (64, 64))
    assert plain.min() == 0.0


def test_rotation_direction_and_scale():
    image = np.zeros((65, 65), np.float32)
    image[32, 48] = 1.0  # a point right of centre
    turned = rotate(image, 90)
    assert np.unravel_index(turned.argmax(), turned.shape) == (16, 32)  # counter-clockwise → above centre
    zoomed = scale(image, 2.0)
    r, c = np.unravel_index(zoomed.argmax(), zoomed.shape)
    assert (r, c) == (32, 64)
    with pytest.raises(ValueError):
        scale(image, 10)


def test_pair_gets_identical_transform():
    rng_image = np.random.default_rng(1)
    lr = rng_image.random((32, 32)).astype(np.float32)
    hr = lr.copy()
    for seed in range(5):
        a, b, aug = augment_pair(lr, hr, np.random.default_rng(seed))
        assert np.array_equal(a, b)
        assert np.array_equal(a, apply_augmentation(lr, aug))
    a1, _, _ = augment_pair(lr, hr, np.random.default_rng(7))
    a2, _, _ = augment_pair(lr, hr, np.random.default_rng(7))
    assert np.array_equal(a1, a2)  # seeded
    assert isinstance(aug, Augmentation)
