from django.apps import AppConfig


class InstrumentsConfig(AppConfig):
    """Device drivers, the simulator, the scan engine and the hardware worker."""

    name = "instruments"
    verbose_name = "Instruments"

    def ready(self):
        from . import checks  # noqa: F401  (registers the address checks)
