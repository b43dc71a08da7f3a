"""The simulator's exception family and the one helper that checks a parameter's range.

Bad input raises :class:`SimParameterError`, a ``ValueError`` whose message names the
parameter, the value it got and the range it accepts, so a lab member knows what to change.
"""

from __future__ import annotations

import math

from instruments.errors import InstrumentError


class SimulationError(InstrumentError):
    """Anything the microscope simulator refuses to do (part of the instrument family)."""


class SimParameterError(ValueError, SimulationError):
    """A physically impossible or out-of-range parameter."""


def check_range(
    name: str,
    value: float,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    unit: str = "",
) -> float:
    """Return ``value`` as float if it lies in the range, else raise :class:`SimParameterError`.

    ``low_open``/``high_open`` exclude the bound itself (``0 < x`` rather than ``0 <= x``).
    """
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SimParameterError(f"{name} must be a number, got {value!r}") from None
    lo_txt = "-inf" if low is None else f"{low:g}"
    hi_txt = "inf" if high is None else f"{high:g}"
    rng = f"{'(' if low_open or low is None else '['}{lo_txt}, {hi_txt}{')' if high_open or high is None else ']'}"
    suffix = f" {unit}" if unit else ""
    bad = not math.isfinite(number)
    if low is not None and (number < low or (low_open and number == low)):
        bad = True
    if high is not None and (number > high or (high_open and number == high)):
        bad = True
    if bad:
        raise SimParameterError(f"{name}={value!r} is outside the allowed range {rng}{suffix}")
    return number
