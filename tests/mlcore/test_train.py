import numpy as np
import pytest
import torch

from mlcore.checkpoint import latest_checkpoint, load_checkpoint
from mlcore.infer import load_model, translate_mosaic
from mlcore.metrics import psnr
from mlcore.train import Trainer


def _mean(history, key, part):
    return float(np.mean([p.losses[key] for p in part(history)]))


def test_tiny_training_lowers_losses(trained):
    _, _, history = trained
    first, last = (lambda h: h[:10]), (lambda h: h[-10:])
    for key in ("g_total", "cycle", "paired_l1"):
        assert _mean(history, key, last) < 0.7 * _mean(history, key, first), key
    assert history[-1].step == 120 and history[-1].eta_s == pytest.approx(0.0)
    assert any(p.samples is not None for p in history)  # one sample set per epoch
    assert set(history[-1].losses) >= {"g_gan", "cycle", "identity", "contextual", "d_a", "d_b"}


def test_tiny_model_beats_the_input_on_its_training_tiles(trained):
    result, ds, _ = trained
    model = load_model(result.checkpoint)  # rebuilt from the checkpoint alone
    gains = []
    for lr, hr in ds.eval_pairs():
        sem = translate_mosaic(model, ds.norm_a.from_unit(lr), tile=48, risk=False,
                               as_uint16=False).sem_like
        gains.append(psnr(sem, hr) - psnr(lr, hr))
    assert np.mean(gains) > 0.5, gains  # dB over the input baseline


def _params(trainer):
    return {f"{k}.{n}": p.detach().clone() for k, net in trainer.nets.items()
            for n, p in net.state_dict().items()}


def test_resume_equals_straight_run(tiny_cfg, dataset, tmp_path):
    cfg = tiny_cfg.replace(generator__dropout=0.3, train__pool_size=3, train__checkpoint_every=3,
                           train__constant_steps=4, train__decay_steps=4)
    straight = Trainer(cfg, dataset, out_dir=tmp_path / "a")
    straight.fit(max_steps=6)
    first = Trainer(cfg, dataset, out_dir=tmp_path / "b")
    first.fit(max_steps=3)
    resumed = Trainer(cfg, dataset, out_dir=tmp_path / "b")  # a fresh process would do this
    resumed.fit(max_steps=3)
    assert resumed.step == straight.step == 6
    a, b = _params(straight), _params(resumed)
    for name in a:
        assert torch.allclose(a[name].float(), b[name].float(), atol=1e-6, rtol=0), name
    assert resumed.sched_g.get_last_lr() == straight.sched_g.get_last_lr()


def test_checkpoint_is_self_describing(trained):
    result, _, _ = trained
    state = load_checkpoint(result.checkpoint)
    assert {"config", "nets", "optimizers", "schedulers", "per_rank", "step", "normalization",
            "halo", "receptive_field"} <= set(state)
    assert set(state["nets"]) == {"g_ab", "g_ba", "d_a", "d_b"}
    assert state["per_rank"][0]["pools"]["a"]["images"].shape[0] == 10  # pool filled to size


def test_cancel_is_honoured_within_one_step(tiny_cfg, dataset, tmp_path):
    calls = []

    def should_cancel():
        calls.append(1)
        return len(calls) > 2

    result = Trainer(tiny_cfg, dataset, out_dir=tmp_path,
                     should_cancel=should_cancel).fit()
    assert result.status == "cancelled" and result.step == 2
    assert latest_checkpoint(tmp_path / "checkpoints") == result.checkpoint
    again = Trainer(tiny_cfg, dataset, out_dir=tmp_path).fit(max_steps=1)  # resumes after kill
    assert again.step == 3


def test_channel_mismatch_is_refused(tiny_cfg, dataset, tmp_path):
    cfg = tiny_cfg.replace(generator__in_channels=3, generator__out_channels=3,
                           discriminator__in_channels=3)
    with pytest.raises(ValueError, match="channel"):
        Trainer(cfg, dataset, out_dir=tmp_path)
