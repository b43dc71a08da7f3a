"""The mlcore exception family.

Every error raised on purpose by mlcore derives from :class:`MlcoreError`; the ones caused by
bad arguments or bad data also derive from ``ValueError`` so generic callers can catch those.
"""

from __future__ import annotations

__all__ = [
    "MlcoreError",
    "ConfigError",
    "CheckpointError",
    "InputImageError",
    "Cancelled",
]


class MlcoreError(Exception):
    """Base class of every error mlcore raises on purpose."""


class ConfigError(ValueError, MlcoreError):
    """A configuration field is out of range or names something unknown."""


class CheckpointError(ValueError, MlcoreError):
    """A file is not an mlcore checkpoint, or is one this code cannot rebuild."""


class InputImageError(ValueError, MlcoreError):
    """An image handed to training/inference has the wrong shape, channels or values (NaN)."""


class Cancelled(MlcoreError):
    """A long job (translation, evaluation) stopped because its cancel check asked it to."""
