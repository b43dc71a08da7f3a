"""The microscope in software: SSUM and SEM image formation from a synthetic IC sample.

Pure numpy/OpenCV/scipy; no Django. Entry points: :class:`~instruments.sim.world.SimWorld`
(one simulated bench for the device fakes), :mod:`instruments.sim.dataset` (synthetic data
sets and in-memory helpers), :mod:`instruments.sim.sem` (SEM images).
"""

from .exceptions import SimParameterError, SimulationError
from .world import SimWorld, StageErrors

__all__ = ["SimParameterError", "SimWorld", "SimulationError", "StageErrors"]
