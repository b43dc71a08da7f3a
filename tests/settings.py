"""Test settings: the real settings, with a throwaway var folder and a fast password hasher."""
import os
import tempfile

os.environ.setdefault("SSUMWEB_VAR_DIR", tempfile.mkdtemp(prefix="ssumweb-test-"))
os.environ.setdefault("EMBEDDED_HARDWARE_WORKER", "false")

from ssumweb.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # noqa: F405

if DATABASES["default"]["ENGINE"].endswith("sqlite3"):  # noqa: F405
    # A file, not shared-cache memory: the worker's threads then wait on locks instead of failing.
    DATABASES["default"]["TEST"] = {"NAME": os.path.join(os.environ["SSUMWEB_VAR_DIR"], "test.sqlite3")}  # noqa: F405
