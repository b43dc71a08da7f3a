"""System checks for the house: where media lives, and that the tasks backend can run jobs."""
import os

from django.conf import settings
from django.core import checks


@checks.register()
def check_media_root(app_configs, **kwargs):
    root = settings.MEDIA_ROOT
    try:
        os.makedirs(root, exist_ok=True)
    except OSError as exc:
        return [checks.Error(f"MEDIA_ROOT {root} cannot be created: {exc}", id="ssumweb.E001")]
    if not os.access(root, os.W_OK):
        return [checks.Error(f"MEDIA_ROOT {root} is not writable.", id="ssumweb.E002")]
    return []
