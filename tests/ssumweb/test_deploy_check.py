import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_check_deploy_with_production_settings_reports_no_errors(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}  # set by the browser tests
    env = {**env, "DJANGO_SETTINGS_MODULE": "ssumweb.settings", "DEBUG": "false",
           "SECRET_KEY": "x" * 20 + "production-secret-key-for-the-check-only-0123456789",
           "ALLOWED_HOSTS": "ssum.example.org", "SSUMWEB_VAR_DIR": str(tmp_path), "SECURE_SSL_REDIRECT": "true",
           "SESSION_COOKIE_SECURE": "true", "CSRF_COOKIE_SECURE": "true", "SECURE_HSTS_SECONDS": "31536000"}
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "ERROR"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERRORS" not in result.stdout + result.stderr
