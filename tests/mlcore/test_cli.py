import os

import numpy as np
import tifffile
import torch

from mlcore.cli import main
from mlcore.data import synthetic_pairs


def test_train_translate_evaluate_on_files(tmp_path, capsys):
    pairs = synthetic_pairs(3, size=32, seed=0)
    data = tmp_path / "pairs"
    (data / "lr").mkdir(parents=True)
    (data / "hr").mkdir()
    for name, lr, hr in zip(pairs.names, pairs.lr, pairs.hr, strict=False):
        tifffile.imwrite(data / "lr" / f"{name}.tif", lr)
        tifffile.imwrite(data / "hr" / f"{name}.tif", hr)
    run = tmp_path / "run"
    config = '{"train": {"constant_steps": 2, "decay_steps": 1, "device": "cpu"}}'
    assert main(["train", "--data", str(data), "--out", str(run), "--preset", "tiny",
                 "--config", config]) == 0
    assert (run / "model.pt").is_file()
    mosaic = tmp_path / "mosaic.tif"
    tifffile.imwrite(mosaic, (np.random.default_rng(0).random((70, 90)) * 65535).astype(np.uint16))
    assert main(["translate", "--model", str(run / "model.pt"), "--input", str(mosaic),
                 "--output", str(tmp_path / "sem.tif"), "--risk", str(tmp_path / "risk.tif"),
                 "--tile", "32"]) == 0
    sem = tifffile.imread(tmp_path / "sem.tif")
    assert sem.shape == (70, 90) and sem.dtype == np.uint16
    umask = os.umask(0o022)
    os.umask(umask)
    assert (tmp_path / "sem.tif").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    capsys.readouterr()
    assert main(["translate", "--model", str(run / "model.pt"), "--input", str(mosaic),
                 "--output", str(blocker / "sem.tif")]) == 2
    assert "cannot create the output folder" in capsys.readouterr().err
    assert tifffile.imread(tmp_path / "risk.tif").dtype == np.float32
    assert main(["evaluate", "--model", str(run / "model.pt"), "--data", str(data)]) == 0
    assert "richardson_lucy" in capsys.readouterr().out


def test_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "model.pt"
    bad.write_text("nope")
    code = main(["translate", "--model", str(bad), "--input", "x.tif", "--output", "y.tif"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and "not an mlcore checkpoint" in err
    assert "\n" not in err



def test_device_errors_are_one_line(tmp_path, capsys):
    args = ["translate", "--model", str(tmp_path / "model.pt"), "--input", "x.tif", "--output", "y.tif"]
    assert main([*args, "--device", "gpu0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: device='gpu0' is not a device: use cpu, cuda, cuda:N or auto"
    if not torch.cuda.is_available():
        assert main([*args, "--device", "cuda"]) == 2
        assert "CUDA is not available here" in capsys.readouterr().err
