"""PCO.edge through ``pco`` (imported lazily), behind the ``Camera`` protocol.

``PcoCamera`` wraps anything with the ``pco.Camera`` method names: the real camera
(``PcoCamera.open()``) or ``instruments.simcam.SimCamera`` — one code path for both.
When the SDK, libusb or the camera is missing, ``open`` raises ``DeviceUnavailable`` whose
message is one line saying which.
"""

from __future__ import annotations

import numpy as np

from instruments.addresses import InstrumentAddress, parse_address
from instruments.errors import DeviceError, DeviceTimeout, DeviceUnavailable, LimitError

__all__ = ["PcoCamera", "open_pco"]

_LATEST = 0xFFFFFFFF


def open_pco(address: str | InstrumentAddress = "pco"):
    """Open the real ``pco.Camera`` named by ``address`` (``pco?interface=…&serial=…``)."""
    if isinstance(address, str):
        address = parse_address(address, role="camera")
    try:
        import pco
    except ImportError:
        raise DeviceUnavailable("PCO camera unavailable: the 'pco' package is not installed "
                                "(pip install pco==2.6.0)") from None
    kwargs = {}
    if address.option("interface"):
        kwargs["interface"] = address.option("interface")
    if address.option("serial"):
        kwargs["serial"] = int(address.option("serial"))
    if address.option("name"):
        kwargs["name"] = address.option("name")
    try:
        return pco.Camera(**kwargs)
    except OSError as exc:
        if "libusb" in str(exc):
            raise DeviceUnavailable("PCO camera unavailable: libusb-1.0 is not installed "
                                    "(apt-get install libusb-1.0-0)") from None
        raise DeviceUnavailable(f"PCO camera unavailable: the pco SDK libraries failed to load "
                                f"({str(exc).splitlines()[0]})") from None
    except Exception as exc:  # pco.camera_exception.CameraException and friends
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "No camera found" in text:
            raise DeviceUnavailable("PCO camera unavailable: no camera found (check power and cable, "
                                    "the udev rule, and that no other program holds it)") from None
        if "DLL" in text or "dll" in text:
            raise DeviceUnavailable(f"PCO camera unavailable: an SDK interface library is missing ({text})") from None
        raise DeviceUnavailable(f"PCO camera unavailable: {text}") from None


class PcoCamera:
    """Step-and-shoot camera: ``trigger`` starts a one-image recording, ``read`` waits for it.

    Parameters
    ----------
    camera : a ``pco.Camera`` or ``SimCamera``.
    """

    def __init__(self, camera):
        self.camera = camera
        self._latest: np.ndarray | None = None
        self._exposure_s = float(camera.exposure_time)

    @classmethod
    def open(cls, address: str | InstrumentAddress = "pco") -> PcoCamera:
        return cls(open_pco(address))

    @property
    def exposure_s(self) -> float:
        return self._exposure_s

    def configure(self, *, exposure_s: float, roi: tuple[int, int, int, int] | None = None,
                  binning: int = 1) -> None:
        """Exposure in s; ``roi`` ``(x0, y0, x1, y1)`` 0-based end-exclusive (full sensor if None)."""
        desc = self.camera.description
        width, height = desc["max width"], desc["max height"]
        if roi is None:
            roi = (0, 0, width, height)
        x0, y0, x1, y1 = roi
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise LimitError(f"camera roi {roi} must lie within the {width}×{height} sensor")
        if not desc["min exposure time"] <= exposure_s <= desc["max exposure time"]:
            raise LimitError(f"exposure_s must be within [{desc['min exposure time']}, "
                             f"{desc['max exposure time']}] s, got {exposure_s}")
        self._call(self.camera.stop, "stop")
        self._call(lambda: setattr(self.camera, "configuration", {
            "exposure time": float(exposure_s), "roi": (x0 + 1, y0 + 1, x1, y1),  # pco: 1-based inclusive
            "binning": (binning, binning, "sum"), "trigger": "auto sequence"}), "configure")
        self._exposure_s = float(exposure_s)

    def trigger(self) -> None:
        self._call(lambda: self.camera.record(number_of_images=1, mode="sequence non blocking"), "record")

    def read(self, *, timeout_s: float) -> np.ndarray:
        self._call(lambda: self.camera.wait_for_first_image(delay=True, timeout=timeout_s), "wait for image")
        frame, _meta = self._call(lambda: self.camera.image(0), "read image")
        self._call(self.camera.stop, "stop")
        frame = np.ascontiguousarray(frame, dtype=np.uint16)
        self._latest = frame
        return frame

    def latest_frame(self) -> np.ndarray | None:
        return self._latest

    def close(self) -> None:
        try:
            self.camera.stop()
        finally:
            self.camera.close()

    @staticmethod
    def _call(fn, what: str):
        try:
            return fn()
        except TimeoutError as exc:
            raise DeviceTimeout(f"camera: {what}: {exc}") from exc
        except (ValueError, OSError, KeyError) as exc:  # pco.CameraException is a ValueError
            raise DeviceError(f"{what}: {exc}", device="camera", code=getattr(exc, "error_code", None)) from exc
