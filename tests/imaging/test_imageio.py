"""imaging.imageio: conversions between the 8/16-bit files and float [0, 1] arrays."""

import numpy as np

from imaging.imageio import to_float32, to_uint16


def test_sixteen_and_eight_bit_map_to_the_unit_range_and_back():
    ramp16 = np.arange(0, 65536, 257, dtype=np.uint16).reshape(16, 16)
    assert np.array_equal(to_uint16(to_float32(ramp16)), ramp16)
    ramp8 = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert to_float32(ramp8)[-1, -1] == 1.0 and np.array_equal(to_uint16(ramp8), ramp16)
    assert to_float32(np.array([True, False])).tolist() == [1.0, 0.0]


def test_floats_are_clipped_rounded_and_cleaned_the_same_in_pieces_as_whole():
    """A mosaic larger than one conversion chunk (4 Mpx) is converted piece by piece: the same
    numbers as the one-line formula, NaN → 0, ±inf → 1 / 0, the input left as it was."""
    image = np.random.default_rng(1).random((3000, 1700)).astype(np.float32) * 1.2 - 0.1
    image[5, 5], image[6, 6], image[7, 7] = np.nan, np.inf, -np.inf
    before = image.copy()
    expected = np.round(np.clip(np.nan_to_num(image, nan=0, posinf=1, neginf=0), 0, 1) * np.float32(65535))
    converted = to_uint16(image)
    assert converted.dtype == np.uint16 and np.array_equal(converted, expected.astype(np.uint16))
    assert np.array_equal(image, before, equal_nan=True)
    assert (converted[5, 5], converted[6, 6], converted[7, 7]) == (0, 65535, 0)
    assert np.array_equal(to_uint16(image.astype(np.float64)), converted)
    assert to_uint16(np.float32(0.5)) == 32768 and to_uint16(np.zeros((0, 5))).shape == (0, 5)
    assert to_uint16(np.full((2, 3, 4), 0.25)).tolist() == np.full((2, 3, 4), 16384).tolist()
