"""Small device protocols the scan engine talks to.

Every length is in nanometres, every time in seconds. A real driver (``instruments.drivers``)
and its simulated twin implement the same protocol, so the engine never knows which one
it drives. Methods block until the device has *accepted* the command; waiting for motion
to finish is a separate, explicit call so the engine controls timeouts.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["Piezo", "FocusStage", "Camera", "Feedback", "Light"]

XYZ = tuple[float, float, float]


@runtime_checkable
class Piezo(Protocol):
    """The sample's closed-loop XYZ scanner (PI P-733.3CL on an E-727)."""

    def travel_nm(self) -> tuple[tuple[float, float], tuple[float, float], tuple[float, float]]:
        """Closed-loop travel ``((x_min, x_max), (y_min, y_max), (z_min, z_max))`` in nm."""
        ...

    def move_nm(self, *, x: float | None = None, y: float | None = None, z: float | None = None,
                velocity_nm_s: float | None = None) -> None:
        """Command an absolute move of the named axes; raises ``LimitError`` outside travel.

        ``velocity_nm_s`` moves them at that speed (a contact approach); None at the travel speed."""
        ...

    def wait_on_target(self, *, timeout_s: float) -> None:
        """Block until every axis is on target; ``DeviceTimeout`` after ``timeout_s``."""
        ...

    def position_nm(self) -> XYZ:
        """Measured (sensor) position ``(x, y, z)`` in nm."""
        ...

    def on_target(self) -> bool:
        """True when every axis has reached its target."""
        ...

    def stop(self) -> None:
        """Stop all motion now (targets become the current positions)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class FocusStage(Protocol):
    """The vertical stage that carries the microscope to the virtual-image plane."""

    def travel_nm(self) -> tuple[float, float]:
        """Soft travel limits ``(z_min, z_max)`` in nm."""
        ...

    def move_to_nm(self, z_nm: float) -> None:
        """Command an absolute move; raises ``LimitError`` outside travel."""
        ...

    def wait_done(self, *, timeout_s: float) -> None:
        """Block until the motion is done; ``DeviceTimeout`` after ``timeout_s``."""
        ...

    def position_nm(self) -> float:
        """Measured position in nm."""
        ...

    def stop(self) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class Camera(Protocol):
    """A scientific camera delivering uint16 frames (rows × cols)."""

    @property
    def exposure_s(self) -> float: ...

    def configure(self, *, exposure_s: float, roi: tuple[int, int, int, int] | None = None,
                  binning: int = 1) -> None:
        """Set exposure and region of interest ``(x0, y0, x1, y1)`` in 0-based, end-exclusive pixels."""
        ...

    def trigger(self) -> None:
        """Start one exposure; returns at once."""
        ...

    def read(self, *, timeout_s: float) -> np.ndarray:
        """Wait for the triggered exposure and return it, ``(rows, cols) uint16``."""
        ...

    def latest_frame(self) -> np.ndarray | None:
        """The most recent frame acquired (any mode), or None."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Feedback(Protocol):
    """Cantilever deflection (contact force) in nm; positive = pushed by the sample."""

    def deflection_nm(self) -> float: ...


@runtime_checkable
class Light(Protocol):
    """Illumination, optional: intensity as a fraction of full power."""

    def set_intensity(self, fraction: float) -> None: ...

    def intensity(self) -> float: ...
