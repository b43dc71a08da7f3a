"""imaging.registration_features: the feature images the registration stages correlate."""

import numpy as np

from imaging.registration_features import band_features, gradient_magnitude


def _two_squares() -> np.ndarray:
    """A bright square (contrast 0.8) and a faint one (0.04) on a grey background, under shading."""
    image = np.full((160, 160), 0.2, np.float32)
    image[30:70, 30:70] += 0.8
    image[90:130, 90:130] += 0.04
    shading = (0.6 + 0.4 * np.arange(160) / 159).astype(np.float32)  # brighter to the right
    return image * shading


def test_bands_weigh_a_faint_edge_like_a_bright_one():
    """In gradient magnitude the bright square's edges are ~20× the faint one's, so a correlation
    is ruled by the bright one alone; the locally normalised gradient band evens them out."""
    image = _two_squares()
    gradient = gradient_magnitude(image, sigma=1.5)
    bands = band_features(image)
    assert bands.shape == (160, 160, 3) and bands.dtype == np.float32
    assert np.allclose(bands.reshape(-1, 3).std(axis=0), 1.0, atol=1e-3)
    bright, faint = (slice(28, 72), 30), (slice(88, 132), 90)  # a left edge of each square
    assert gradient[bright].max() > 15 * gradient[faint].max()
    assert bands[..., 0][bright].max() < 2 * bands[..., 0][faint].max()


def test_bands_are_blind_to_the_sign_of_the_contrast():
    """Optical and SEM images may show the same structure with opposite contrast."""
    image = _two_squares()
    assert np.allclose(band_features(image), band_features(1.2 - image), rtol=1e-3, atol=0.01)
