"""One exception family for the instrument core.

Every error a device, driver, plan or the engine raises on purpose is an
``InstrumentError``; the subclasses mix in the built-in they resemble so callers
that only know Python's exceptions still catch them (``except ValueError`` catches
an out-of-range move, ``except TimeoutError`` a camera that never delivered).
"""

from __future__ import annotations

__all__ = [
    "InstrumentError",
    "LimitError",
    "DeviceTimeout",
    "DeviceError",
    "ContactError",
    "DeviceUnavailable",
    "AddressError",
]


class InstrumentError(Exception):
    """Base of every error the instrument core raises deliberately."""


class LimitError(ValueError, InstrumentError):
    """A requested position or setting lies outside the device's range."""


class DeviceTimeout(TimeoutError, InstrumentError):
    """A device did not answer, settle or deliver a frame in time."""


class DeviceError(InstrumentError):
    """A device reported an error.

    Parameters
    ----------
    message : str
        What went wrong, in words a lab member understands.
    device : str
        Which device said so (``"piezo"``, ``"focus"``, ``"camera"``, ...).
    code : int or None
        The vendor's own error code (GCS error number, ESP301 ``TE?`` code, ...).
    """

    def __init__(self, message: str, *, device: str = "", code: int | None = None):
        super().__init__(message)
        self.device = device
        self.code = code

    def __str__(self) -> str:
        base = super().__str__()
        where = f"{self.device}: " if self.device else ""
        code = f" (code {self.code})" if self.code is not None else ""
        return f"{where}{base}{code}"


class ContactError(InstrumentError):
    """The cantilever never reached the contact set-point within the Z travel.

    The sphere has been kept off the sample; the scan should pause, not crash.
    """


class DeviceUnavailable(InstrumentError):
    """A driver's library, system dependency or the device itself is missing.

    ``str(exc)`` is one line saying exactly what is missing.
    """


class AddressError(ValueError, InstrumentError):
    """An instrument address string is malformed or names an unknown driver."""
