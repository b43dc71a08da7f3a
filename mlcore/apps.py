from django.apps import AppConfig


class MlcoreConfig(AppConfig):
    """The CycleGAN: training runs, trained models and translations of mosaics."""

    name = "mlcore"
    verbose_name = "Models"
