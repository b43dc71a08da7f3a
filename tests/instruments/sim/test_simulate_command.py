"""``manage.py simulate``: the thin shell around write_dataset."""

import json

import pytest
from django.core.management import CommandError, call_command


def test_simulate_tiny_writes_a_manifest(tmp_path, capsys):
    call_command("simulate", str(tmp_path), "--preset", "tiny", "--seed", "1")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["preset"] == "tiny" and manifest["seed"] == 1 and len(manifest["frames"]) == 9
    assert "wrote 9 frames" in capsys.readouterr().out


def test_simulate_reports_an_unusable_folder_as_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(CommandError):
        call_command("simulate", str(blocker / "out"))
