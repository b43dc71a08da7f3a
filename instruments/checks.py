"""System checks: a malformed instrument address is reported by `manage.py check`, not at first use."""
from django.conf import settings
from django.core import checks


@checks.register("instruments")
def check_instrument_addresses(app_configs, **kwargs):
    from .addresses import parse_address

    errors = []
    for setting, kind in (("INSTRUMENT_PIEZO", "piezo"), ("INSTRUMENT_FOCUS", "focus"), ("INSTRUMENT_CAMERA", "camera")):
        value = getattr(settings, setting, "sim")
        if value == "sim":  # the wire-level fakes on loopback, started by the worker itself
            continue
        try:
            parse_address(value, role=kind)
        except ValueError as exc:
            errors.append(checks.Error(f"{setting}={value!r} is not a valid {kind} address: {exc}",
                                       hint="See docs/instruments.md for the address forms.", id="instruments.E001"))
    return errors
