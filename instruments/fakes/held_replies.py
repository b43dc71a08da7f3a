"""A fault knob both controller fakes share: replies held back, as by a stalled link or host."""

from __future__ import annotations

import threading

__all__ = ["HeldReplies"]


class HeldReplies:
    """Wall-time delays for the next replies, set by a test and taken by the fake's server thread."""

    def __init__(self):
        self._lock = threading.Lock()
        self._delays: list[float] = []

    def delay_replies(self, seconds: float, *, count: int = 1) -> None:
        """Send each of the next ``count`` replies ``seconds`` of wall time late."""
        with self._lock:
            self._delays.extend([seconds] * count)

    def reply_delay_s(self) -> float:
        """How late to send the next reply (0 unless held back)."""
        with self._lock:
            return self._delays.pop(0) if self._delays else 0.0
