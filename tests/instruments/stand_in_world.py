"""A small stand-in with the SimWorld API, for the instrument tests only (deterministic, cheap).

Sample: a seeded random texture, 100 nm per camera pixel. Contact when piezo Z passes
``contact_z_nm()``; deflection = overtravel. The virtual image is sharp when the focus
stage (nm, SimWorld's coordinates) is at ``virtual_image_focus_nm()``; blur grows with the distance.
"""

import numpy as np
from scipy import ndimage


class StandInWorld:
    pixel_size_nm = 100.0

    def __init__(self, *, seed=0, chip_size_nm=(200_000, 200_000), contact_nm=6_000.0,
                 focus_nm=50_001_500.0):
        rng = np.random.default_rng(seed)
        self.texture = ndimage.gaussian_filter(rng.random((1024, 1024)), 1.5).astype(np.float32)
        self.texture = (self.texture - self.texture.min()) / np.ptp(self.texture)
        self.piezo = (0.0, 0.0, 0.0)
        self.focus = 50_000_000.0
        self.contact_offset_nm = 0.0
        self._contact = contact_nm
        self._focus = focus_nm
        self.renders = []

    def set_piezo_nm(self, x, y, z):
        self.piezo = (x, y, z)

    def piezo_true_nm(self):
        return self.piezo

    def set_focus_nm(self, z):
        self.focus = z

    def contact_z_nm(self):
        return self._contact + self.contact_offset_nm

    def deflection_nm(self):
        return max(0.0, self.piezo[2] - self.contact_z_nm())

    def virtual_image_focus_nm(self):
        return self._focus

    def render_frame(self, *, exposure_s, roi=None, binning=1):
        _x, _y, width, height = roi if roi is not None else (0, 0, 512, 512)
        rows, cols = height // binning, width // binning
        r0 = int(round(self.piezo[1] / self.pixel_size_nm)) % 512
        c0 = int(round(self.piezo[0] / self.pixel_size_nm)) % 512
        patch = self.texture[r0:r0 + rows, c0:c0 + cols]
        sigma = abs(self.focus - self._focus) / 400.0
        if sigma > 0.05:
            patch = ndimage.gaussian_filter(patch, sigma)
        signal = 1_000 + patch * 30_000 * min(exposure_s / 0.01, 2.0)
        self.renders.append((self.piezo, self.focus))
        return signal.astype(np.uint16)
