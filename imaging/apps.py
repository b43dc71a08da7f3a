from django.apps import AppConfig


class ImagingConfig(AppConfig):
    """The lab catalogue (samples, scans, frames, mosaics, SEM images, registrations, pairs)."""

    name = "imaging"
    verbose_name = "Imaging"
