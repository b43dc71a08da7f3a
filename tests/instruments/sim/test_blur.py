"""The variable-σ blur reproduces a Gaussian of the requested width at each level and between."""

import numpy as np
import pytest

from instruments.sim.blur import variable_gaussian_blur


@pytest.mark.parametrize("sigma", [0.4, 1.0, 2.2, 5.0, 13.0, 40.0])
def test_point_spread_width_mass_and_centre(sigma):
    img = np.zeros((256, 256), np.float32)
    img[128, 131] = 1.0
    sig = np.full(img.shape, sigma, np.float32)
    sig[0, 0] += 0.01  # force the varying-σ path
    out = variable_gaussian_blur(img, sig)
    yy, xx = np.mgrid[:256, :256]
    mass = out.sum()
    cx, cy = (out * xx).sum() / mass, (out * yy).sum() / mass
    sx = np.sqrt((out * (xx - cx) ** 2).sum() / mass)
    assert mass == pytest.approx(1.0, rel=0.01)
    assert (cx, cy) == pytest.approx((131, 128), abs=0.2)  # no drift between pyramid levels
    assert sx == pytest.approx(sigma, rel=0.03)  # σ within 3 %


def test_each_pixel_gets_its_own_sigma():
    rng = np.random.default_rng(0)
    img = rng.random((128, 128)).astype(np.float32)
    sig = np.where(np.arange(128)[None, :] < 64, 0.0, 6.0).astype(np.float32).repeat(128, 0)
    out = variable_gaussian_blur(img, sig)
    assert np.allclose(out[:, :50], img[:, :50])  # σ = 0: untouched
    assert out[:, 80:].std() < 0.2 * img[:, 80:].std()  # σ = 6: smoothed
