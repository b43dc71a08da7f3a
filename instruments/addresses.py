"""Parse instrument addresses from settings or the Instrument record.

Forms accepted (one per device role)::

    piezo    gcs+tcp://127.0.0.1:50000            PI E-727 over TCP (pipython PISocket)
             gcs+serial:///dev/ttyUSB0?baud=115200 PI E-727 over RS-232/USB-VCP (PISerial)
    focus    esp301+socket://127.0.0.1:5001       Newport ESP301 through pyserial's socket://
             esp301+serial:///dev/ttyUSB1?baud=921600
    camera   sim | pco | pco?interface=USB%203.0&serial=1234
    feedback piezo?channel=4&nm_per_unit=100      deflection on the piezo controller's analog input

A malformed address raises ``AddressError`` (a ``ValueError``) naming the problem, so a
Django system check can call ``parse_address`` and report it before anything connects.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

from instruments.errors import AddressError

__all__ = ["InstrumentAddress", "parse_address", "ROLES"]

# role -> {scheme: transports allowed}; a transport of "" means a bare word ("sim", "pco").
ROLES: dict[str, dict[str, tuple[str, ...]]] = {
    "piezo": {"gcs": ("tcp", "serial")},
    "focus": {"esp301": ("socket", "serial")},
    "camera": {"sim": ("",), "pco": ("",)},
    "feedback": {"piezo": ("",)},
}

_DEFAULT_BAUD = {"gcs": 115200, "esp301": 921600}
_OPTIONS = {
    "gcs": {"baud"},
    "esp301": {"baud", "axis"},
    "pco": {"interface", "serial", "name"},
    "sim": set(),
    "piezo": {"channel", "nm_per_unit"},
}


@dataclass(frozen=True)
class InstrumentAddress:
    """A parsed instrument address.

    Attributes
    ----------
    driver : str        ``"gcs"``, ``"esp301"``, ``"sim"``, ``"pco"`` or ``"piezo"`` (feedback).
    transport : str     ``"tcp"``, ``"socket"``, ``"serial"`` or ``""`` for bare words.
    host, port : TCP endpoint for ``tcp``/``socket`` transports, else ``""``/``0``.
    path : str          device path for ``serial`` (``/dev/ttyUSB0``), else ``""``.
    options : tuple     sorted ``(key, value)`` pairs from the query string.
    text : str          the address as written.
    """

    driver: str
    transport: str
    host: str
    port: int
    path: str
    options: tuple[tuple[str, str], ...]
    text: str

    def option(self, key: str, default: str | None = None) -> str | None:
        return dict(self.options).get(key, default)

    @property
    def baud(self) -> int:
        return int(self.option("baud", str(_DEFAULT_BAUD.get(self.driver, 9600))))

    def serial_url(self) -> str:
        """The URL ``serial.serial_for_url`` opens: ``socket://host:port`` or the device path."""
        if self.transport == "socket":
            return f"socket://{self.host}:{self.port}"
        if self.transport == "serial":
            return self.path
        raise AddressError(f"{self.text!r} is not a serial-style address")


def parse_address(text: str, *, role: str) -> InstrumentAddress:
    """Parse ``text`` as the address of the device playing ``role``.

    Parameters
    ----------
    text : str
        The address, e.g. ``"gcs+tcp://127.0.0.1:50000"``.
    role : str
        One of ``"piezo"``, ``"focus"``, ``"camera"``, ``"feedback"``.

    Raises
    ------
    AddressError
        If the address is empty, names a driver the role cannot use, lacks a host/port or
        path, has a port outside 1–65535, or carries an unknown or invalid option.
    """
    if role not in ROLES:
        raise AddressError(f"role must be one of {sorted(ROLES)}, got {role!r}")
    if not isinstance(text, str) or not text.strip():
        raise AddressError(f"{role} address is empty; expected e.g. {_example(role)!r}")
    text = text.strip()
    allowed = ROLES[role]
    parts = urlsplit(text)
    if "://" in text:
        driver, _, transport = parts.scheme.partition("+")
    else:
        driver, transport = text.split("?", 1)[0], ""
    if driver not in allowed:
        raise AddressError(f"{role} address {text!r}: unknown driver {driver!r}; "
                           f"use one of {sorted(allowed)}, e.g. {_example(role)!r}")
    if transport not in allowed[driver]:
        shown = [t for t in allowed[driver] if t] or ["(none)"]
        raise AddressError(f"{role} address {text!r}: transport {transport or '(none)'!r} is not "
                           f"supported by {driver!r}; use {shown}")
    try:
        options = tuple(sorted(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))))
    except ValueError as exc:
        raise AddressError(f"{role} address {text!r}: malformed options ({exc})") from None
    for key, value in options:
        if key not in _OPTIONS[driver]:
            raise AddressError(f"{role} address {text!r}: unknown option {key!r}; "
                               f"allowed: {sorted(_OPTIONS[driver]) or 'none'}")
        if key in ("baud", "channel", "axis") and not (value.isdigit() and int(value) > 0):
            raise AddressError(f"{role} address {text!r}: option {key} must be a positive integer, got {value!r}")
        if key == "nm_per_unit":
            try:
                if float(value) <= 0:
                    raise ValueError
            except ValueError:
                raise AddressError(f"{role} address {text!r}: nm_per_unit must be a positive number, "
                                   f"got {value!r}") from None
    host, port, path = "", 0, ""
    if transport in ("tcp", "socket"):
        host = parts.hostname or ""
        try:
            port = parts.port or 0
        except ValueError:
            raise AddressError(f"{role} address {text!r}: port must be an integer in 1–65535") from None
        if not host or not 1 <= port <= 65535:
            raise AddressError(f"{role} address {text!r}: needs host and port in 1–65535, "
                               f"e.g. {_example(role)!r}")
        if parts.path not in ("", "/"):
            raise AddressError(f"{role} address {text!r}: unexpected path {parts.path!r} after host:port")
    elif transport == "serial":
        if parts.netloc:
            raise AddressError(f"{role} address {text!r}: serial addresses use three slashes, "
                               f"e.g. {driver}+serial:///dev/ttyUSB0")
        path = unquote(parts.path)
        if not path or path == "/":
            raise AddressError(f"{role} address {text!r}: missing serial device path")
    return InstrumentAddress(driver=driver, transport=transport, host=host, port=port, path=path,
                             options=options, text=text)


def _example(role: str) -> str:
    return {
        "piezo": "gcs+tcp://127.0.0.1:50000",
        "focus": "esp301+socket://127.0.0.1:5001",
        "camera": "sim",
        "feedback": "piezo?channel=4",
    }[role]
