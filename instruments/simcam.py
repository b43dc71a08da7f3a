"""A simulated PCO camera with the ``pco.Camera`` method names (pco 2.6).

The same driver code (``instruments.drivers.pco_camera.PcoCamera``) runs on this and on a real
``pco.Camera``. Frames are rendered by the shared simulated world at the piezo's *true*
position; exposure takes simulated time (``SimClock``), so waits are real but scaled.

Fault knob: ``fail_next_recordings(n)`` makes the next ``n`` recordings deliver no image, so the
caller's ``wait_for_first_image(timeout=…)`` raises ``TimeoutError`` as the real one does.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from instruments.fakes.clock import SimClock

__all__ = ["SimCamera", "PCO_RECORDER_LATEST_IMAGE"]

PCO_RECORDER_LATEST_IMAGE = 0xFFFFFFFF
_MODES = ("sequence", "sequence non blocking", "ring buffer", "fifo")
_KEYS = ("exposure time", "delay time", "roi", "timestamp", "pixel rate", "trigger", "acquire", "binning",
         "metadata", "noise filter", "auto exposure", "pixel format")


class SimCamera:
    """Simulated pco.edge 5.5 (2560 × 2160, 16-bit).

    Parameters
    ----------
    world : object with ``render_frame(*, exposure_s, roi=(x, y, width, height), binning) -> uint16 (rows, cols)``.
    clock : SimClock shared with the fakes.
    min_frame_period_s : fastest frame period (100 fps full frame).
    """

    def __init__(self, world, *, clock: SimClock, min_frame_period_s: float = 0.01,
                 sensor_size: tuple[int, int] = (2560, 2160)):
        self.world = world
        self.clock = clock
        self.min_frame_period_s = min_frame_period_s
        self.width, self.height = sensor_size
        self._lock = threading.RLock()
        self._config = {
            "exposure time": 0.01, "delay time": 0.0, "roi": (1, 1, self.width, self.height),
            "timestamp": "off", "pixel rate": 286_000_000, "trigger": "auto sequence", "acquire": "auto",
            "binning": (1, 1, "sum"), "metadata": "off", "noise filter": "off",
            "auto exposure": ("balanced", 0.001, 0.1), "pixel format": "16",
        }
        self._recording = False
        self._mode = "sequence"
        self._n_images = 0
        self._t_record = 0.0
        self._frames: dict[int, np.ndarray] = {}
        self._dropped = 0
        self._last_read = -1
        self._closed = False
        self.frames_rendered = 0
        self.busy_s = 0.0  # simulated exposure + readout time of delivered frames
        # Wall time this process spent rendering frames with the physics simulator: a cost of the
        # simulator (a real camera renders nothing), reported apart from the pipeline's overhead.
        self.render_s = 0.0

    # --- fault knob ----------------------------------------------------------------------
    def fail_next_recordings(self, n: int = 1) -> None:
        with self._lock:
            self._dropped += n

    # --- pco.Camera surface ----------------------------------------------------------------
    @property
    def camera_name(self) -> str:
        return "pco.edge 5.5 (simulated)"

    @property
    def camera_serial(self) -> int:
        return 0

    @property
    def description(self) -> dict:
        return {"serial": 0, "type": 0x1300, "sensor type": 0x2002, "max width": self.width,
                "max height": self.height, "min exposure time": 1e-5, "max exposure time": 2.0,
                "min delay time": 0.0, "max delay time": 1.0, "roi steps": (1, 1), "bit resolution": 16,
                "pixelrates": [95_333_333, 286_000_000], "binning horz vec": [1, 2, 4],
                "binning vert vec": [1, 2, 4], "has ram": False, "roi is vert symmetric": False,
                "roi is horz symmetric": False}

    @property
    def exposure_time(self) -> float:
        return self._config["exposure time"]

    @exposure_time.setter
    def exposure_time(self, value: float) -> None:
        self.configuration = {"exposure time": value}

    @property
    def configuration(self) -> dict:
        return dict(self._config)

    @configuration.setter
    def configuration(self, arg: dict) -> None:
        with self._lock:
            if self._recording:
                raise ValueError("configuration cannot be changed while recording; call stop() first")
            for key in arg:
                if key not in _KEYS:
                    raise KeyError(f"{key!r} is not a configuration key; allowed: {_KEYS}")
            new = {**self._config, **arg}
            exposure = float(new["exposure time"])
            if not 1e-5 <= exposure <= 2.0:
                raise ValueError(f"exposure time must be within [1e-5, 2] s, got {exposure}")
            x0, y0, x1, y1 = new["roi"]
            if not (1 <= x0 <= x1 <= self.width and 1 <= y0 <= y1 <= self.height):
                raise ValueError(f"roi must be 1-based inclusive within the {self.width}×{self.height} sensor, "
                                 f"got {new['roi']}")
            bx, by, _ = new["binning"]
            if bx != by or bx not in (1, 2, 4):
                raise ValueError(f"binning must be (n, n, mode) with n in 1, 2, 4, got {new['binning']}")
            self._config = new

    @property
    def is_recording(self) -> bool:
        return self._recording

    @property
    def recorded_image_count(self) -> int:
        with self._lock:
            return self._available()

    def record(self, number_of_images: int = 1, mode: str = "sequence", file_path=None) -> None:
        if number_of_images < 1:
            raise ValueError("number_of_images must be >= 1")
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES} in the simulator, got {mode!r}")
        with self._lock:
            self._recording = True
            self._mode = mode
            self._n_images = number_of_images
            self._t_record = self.clock.now()
            self._frames.clear()
            self._last_read = -1
            self._deliver = True
            if self._dropped:
                self._dropped -= 1
                self._deliver = False
        if mode == "sequence":  # blocking, as in pco
            self.clock.sleep(self._frame_done_at(number_of_images - 1) - self.clock.now())
            with self._lock:
                self._recording = False

    def _period(self) -> float:
        return max(self._config["exposure time"], self.min_frame_period_s)

    def _frame_done_at(self, k: int) -> float:
        return self._t_record + self._config["exposure time"] + k * self._period()

    def _available(self) -> int:
        if not getattr(self, "_deliver", False):
            return 0
        elapsed = self.clock.now() - self._t_record - self._config["exposure time"]
        count = 0 if elapsed < 0 else int(elapsed // self._period()) + 1
        if self._mode in ("sequence", "sequence non blocking"):
            count = min(count, self._n_images)
        return count

    def _wait(self, needed: int, timeout: float | None) -> None:
        start = self.clock.now()
        while True:
            with self._lock:
                available = self._available()
                deliver = self._deliver
            if available >= needed:
                return
            now = self.clock.now()
            if timeout is not None and now - start >= timeout:
                raise TimeoutError(f"Timeout ({timeout} s) reached, no image acquired")
            if deliver:
                wait = self._frame_done_at(needed - 1) - now
            else:
                wait = timeout - (now - start) if timeout is not None else 0.05
            if timeout is not None:
                wait = min(wait, timeout - (now - start))
            self.clock.sleep(max(wait, 1e-4 * self.clock.rate))

    def wait_for_first_image(self, delay: bool = True, timeout: float | None = None) -> None:
        self._wait(1, timeout)

    def wait_for_new_image(self, delay: bool = True, timeout: float | None = None) -> None:
        self._wait(max(self._last_read + 2, 1), timeout)

    def image(self, image_index: int = 0, roi=None, data_format: str = "Mono16"):
        """Return ``(frame (rows, cols) uint16, meta)``; ``PCO_RECORDER_LATEST_IMAGE`` for the newest."""
        with self._lock:
            available = self._available()
            if available == 0:
                raise ValueError("Camera has not recorded yet (no image available)")
            index = available - 1 if image_index == PCO_RECORDER_LATEST_IMAGE else image_index
            if not 0 <= index < available:
                raise ValueError(f"image_index {image_index} not recorded yet ({available} available)")
            frame = self._frames.get(index)
            if frame is None:
                frame = self._render()
                if self._mode in ("ring buffer", "fifo"):
                    self._frames.clear()
                self._frames[index] = frame
            self._last_read = index
        if roi is not None:
            x0, y0, x1, y1 = roi
            frame = frame[y0 - 1:y1, x0 - 1:x1]
        meta = {"data format": data_format, "timestamp": {}, "recorder image number": index + 1, "metadata": {}}
        return frame.copy(), meta

    def images(self, roi=None, blocksize=None):
        with self._lock:
            n = self._available() if blocksize is None else min(blocksize, self._available())
        pairs = [self.image(i, roi=roi) for i in range(n)]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def _render(self) -> np.ndarray:
        x0, y0, x1, y1 = self._config["roi"]
        binning = self._config["binning"][0]
        exposure = self._config["exposure time"]
        # SimWorld takes (x, y, width, height) in 0-based unbinned sensor pixels
        started = time.perf_counter()
        frame = self.world.render_frame(exposure_s=exposure, roi=(x0 - 1, y0 - 1, x1 - x0 + 1, y1 - y0 + 1),
                                        binning=binning)
        self.render_s += time.perf_counter() - started
        self.frames_rendered += 1
        self.busy_s += self._period()
        return np.asarray(frame, dtype=np.uint16)

    def stop(self) -> None:
        with self._lock:
            self._recording = False

    def close(self) -> None:
        self.stop()
        self._closed = True

    def default_configuration(self) -> None:
        self.configuration = {"exposure time": 0.01, "roi": (1, 1, self.width, self.height),
                              "binning": (1, 1, "sum"), "trigger": "auto sequence"}

    def __enter__(self) -> SimCamera:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
