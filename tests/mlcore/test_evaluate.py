import numpy as np

from mlcore.data import PairSet
from mlcore.evaluate import evaluate
from mlcore.infer import load_model


def test_baselines_only_report(pairs):
    report = evaluate(None, pairs, psf_sigma_px=2.0, keep_maps=True)
    assert [r.method for r in report.rows] == ["input", "unsharp", "richardson_lucy"]
    assert report.pairs == 6 and len(report.difference_maps["input"]) == 6
    for row in report.rows:
        assert 5 < row.psnr < 40 and -1 <= row.ssim <= 1 and 0 < row.cx <= 1
        assert row.psnr_shift >= row.psnr - 1.0  # a shift search never does much worse
    assert "richardson_lucy" in report.table()


def test_model_row_beats_input_on_training_pairs(trained):
    result, ds, _ = trained
    model = load_model(result.checkpoint)
    raw = PairSet(tuple(ds.norm_a.from_unit(a) for a, _ in ds.eval_pairs()),
                  tuple(ds.norm_b.from_unit(b) for _, b in ds.eval_pairs()),
                  tuple(str(i) for i in range(len(ds))))
    report = evaluate(model, raw, tile=48)
    assert report.row("model").psnr > report.row("input").psnr
    assert np.isfinite(report.row("model").ssim_shift)
