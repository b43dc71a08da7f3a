from django.apps import AppConfig


class SsumwebConfig(AppConfig):
    """Cross-cutting pieces every room uses: projects and roles, events, jobs, file serving."""

    name = "ssumweb"
    verbose_name = "Lab"

    def ready(self):
        from . import checks  # noqa: F401  (registers system checks)
