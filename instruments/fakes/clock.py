"""Simulated time shared by the fakes and the simulated camera.

``rate`` is how many simulated seconds pass per wall-clock second: 1.0 for the demo and the
benchmark (hardware takes its real time), larger in tests so a 10 ms settle costs 0.2 ms.
Replies never sleep on it; only things that really wait in the lab (an exposure) do.
"""

from __future__ import annotations

import time

__all__ = ["SimClock"]


class SimClock:
    def __init__(self, *, rate: float = 1.0):
        if not rate > 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        self.rate = float(rate)
        self._t0 = time.monotonic()

    def now(self) -> float:
        """Simulated seconds since the clock was made."""
        return (time.monotonic() - self._t0) * self.rate

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of simulated time."""
        if seconds > 0:
            time.sleep(seconds / self.rate)
