from django.apps import AppConfig


class FrontendConfig(AppConfig):
    """Server-rendered pages and the browser UI."""

    name = "frontend"
    verbose_name = "Frontend"
