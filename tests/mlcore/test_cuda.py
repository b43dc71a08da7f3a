"""The CUDA paths, run only where there is a GPU (CI has none): AMP training and its resume, a
GPU-trained model used on the CPU, tiled and bf16 inference on the GPU, and the process groups
DDP training uses there.

This file needs none of the suite's fixtures, so it also runs where Django is not installed:
    python -m pytest --noconftest tests/mlcore/test_cuda.py
"""

import gc
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mlcore.checkpoint import load_checkpoint
from mlcore.config import preset
from mlcore.data import PairDataset, synthetic_pairs
from mlcore.infer import load_model, translate_mosaic, translate_whole
from mlcore.metrics import psnr
from mlcore.train import Trainer
from tests.mlcore.tiny_model import tiny_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def _deterministic_cudnn():
    # Resume must replay the same kernels; autotuned or atomics-based ones may differ per run.
    before = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before


def _cuda_cfg(**overrides):
    return preset("tiny").replace(train__device="cuda", train__amp=True, **overrides)


def _dataset(cfg, n=6, size=48):
    return PairDataset(synthetic_pairs(n, size=size, seed=0), data=cfg.data, seed=0)


def _mean(history, key, part):
    return float(np.mean([p.losses[key] for p in part]))


def test_amp_training_learns_and_its_model_runs_on_the_cpu(tmp_path):
    # 120 steps as on the CPU (tests/mlcore/conftest.py): GPU runs are not bit-reproducible
    # (atomics in some backward kernels), so no lucky seed can carry a shorter run.
    cfg = _cuda_cfg(train__lr=2e-3, loss__paired_l1=10.0, train__constant_steps=120,
                    train__decay_steps=0, data__unaligned=False, train__checkpoint_every=1000)
    ds = _dataset(cfg)
    history = []
    trainer = Trainer(cfg, ds, out_dir=tmp_path, progress=history.append)
    assert trainer.use_amp and all(p.is_cuda for p in trainer.nets["g_ab"].parameters())
    result = trainer.fit()
    assert all(np.isfinite(v) for p in history for v in p.losses.values())
    for key in ("g_total", "cycle", "paired_l1"):
        first, last = _mean(history, key, history[:10]), _mean(history, key, history[-10:])
        assert last < 0.7 * first, (key, first, last)
    state = load_checkpoint(result.checkpoint)  # onto the CPU
    assert state["scaler"]["scale"] > 0 and "cuda" in state["per_rank"][0]["rng"]
    model = load_model(result.checkpoint)  # a GPU-trained model on a machine without one
    on_gpu = load_model(result.checkpoint, device="auto")
    assert model.device.type == "cpu" and on_gpu.device.type == "cuda"
    gains = []
    for lr, hr in ds.eval_pairs():
        x = ds.norm_a.from_unit(lr)
        sem = translate_mosaic(model, x, tile=48, risk=False, as_uint16=False).sem_like
        there = translate_mosaic(on_gpu, x, tile=48, risk=False, as_uint16=False).sem_like
        assert np.abs(sem - there).max() < 1e-4
        gains.append(psnr(sem, hr) - psnr(lr, hr))
    print(f"PSNR over the input: {np.round(gains, 2)} dB")
    assert np.mean(gains) > 0.5, gains  # dB over the input baseline


def _params(trainer):
    return {f"{k}.{n}": p.detach().float().cpu() for k, net in trainer.nets.items()
            for n, p in net.state_dict().items()}


def test_amp_resume_equals_straight_run(tmp_path):
    cfg = _cuda_cfg(generator__dropout=0.3, train__pool_size=3, train__checkpoint_every=3,
                    train__constant_steps=4, train__decay_steps=4)
    ds = _dataset(cfg)
    straight = Trainer(cfg, ds, out_dir=tmp_path / "a")
    straight.fit(max_steps=6)
    Trainer(cfg, ds, out_dir=tmp_path / "b").fit(max_steps=3)
    resumed = Trainer(cfg, ds, out_dir=tmp_path / "b")  # as a fresh process would
    resumed.fit(max_steps=3)
    assert resumed.step == straight.step == 6
    assert resumed.scaler.get_scale() == straight.scaler.get_scale()
    a, b = _params(straight), _params(resumed)
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    print(f"max |resumed - straight| {worst:.1e}")
    assert worst < 1e-5, worst


def test_a_gpu_run_resumes_on_the_cpu_and_back(tmp_path):
    cfg = _cuda_cfg(train__pool_size=3, train__checkpoint_every=2, train__constant_steps=6,
                    train__decay_steps=0)
    ds = _dataset(cfg)
    Trainer(cfg, ds, out_dir=tmp_path).fit(max_steps=2)  # AMP: fp16 fakes in the pool
    on_cpu = Trainer(cfg.replace(train__device="cpu"), ds, out_dir=tmp_path)
    assert on_cpu.fit(max_steps=2).step == 4 and not on_cpu.use_amp
    back = Trainer(cfg, ds, out_dir=tmp_path)
    assert back.fit().step == 6 and back.use_amp


@pytest.fixture(scope="module")
def mosaic():
    return (np.random.default_rng(1).random((300, 407)) * 65535).astype(np.uint16)


@pytest.mark.parametrize("tile", [32, 128])
def test_tiled_equals_whole_on_the_gpu(mosaic, tile):
    model = tiny_model(device="cuda")
    whole = translate_whole(model, mosaic, risk=True)
    tiled = translate_mosaic(model, mosaic, tile=tile, batch_size=3, risk=True, as_uint16=False)
    errors = np.abs(tiled.sem_like - whole.sem_like).max(), np.abs(tiled.risk - whole.risk).max()
    print(f"tile {tile}: max |tiled - whole| {errors[0]:.1e}, risk {errors[1]:.1e}")
    assert max(errors) < 1e-4, errors


def test_gpu_translation_matches_the_cpu(mosaic):
    gpu = translate_mosaic(tiny_model(device="cuda"), mosaic, tile=128, risk=False,
                           as_uint16=False).sem_like
    cpu = translate_mosaic(tiny_model(device="cpu"), mosaic, tile=128, risk=False,
                           as_uint16=False).sem_like
    error = np.abs(gpu - cpu).max()
    print(f"max |GPU - CPU| {error:.1e}")
    assert error < 1e-4, error  # true fp32 on both, not cuDNN's default TF32


def test_bf16_on_the_gpu_runs_close_to_fp32(mosaic):
    model = tiny_model(device="cuda")
    a = translate_mosaic(model, mosaic, tile=128, risk=False, as_uint16=False).sem_like
    b = translate_mosaic(model, mosaic, tile=128, risk=False, as_uint16=False, bf16=True).sem_like
    assert torch.cuda.is_bf16_supported()
    error = np.abs(a - b)
    print(f"bf16 against fp32: max {error.max():.1e}, mean {error.mean():.1e}")
    assert error.max() > 0  # bf16 really ran
    assert error.mean() < 0.02 and error.max() < 0.15, (error.mean(), error.max())


def _ddp_worker(rank, world, backend, init_file, out_dir):
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    dist.init_process_group(backend, init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        cfg = _cuda_cfg(train__checkpoint_every=3, data__crop=32)
        trainer = Trainer(cfg, _dataset(cfg, n=4, size=32), out_dir=out_dir,
                          should_cancel=lambda: False)  # the cancel flag crosses the group
        sync_bn = sum(isinstance(m, torch.nn.SyncBatchNorm) for m in trainer.nets["g_ab"].modules())
        trainer.fit(max_steps=3)
        state = [t.detach().flatten() for net in trainer.nets.values()
                 for t in (*net.parameters(), *net.buffers()) if t.is_floating_point()]
        flat = torch.cat(state)
        gathered = [torch.empty_like(flat) for _ in range(world)]
        dist.all_gather(gathered, flat)
        torch.save({"diff": float((gathered[0] - gathered[-1]).abs().max()), "step": trainer.step,
                    "sync_bn": sync_bn, "device": str(flat.device)},
                   os.path.join(out_dir, f"rank{rank}.pt"))
        del trainer
        gc.collect()
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("backend, world", [
    ("nccl", 1),  # what torchrun uses on GPUs; NCCL refuses two ranks on one GPU
    ("gloo", 2),  # two ranks on the one GPU: SyncBatchNorm and DDP really synchronise
])
def test_ddp_on_the_gpu(tmp_path, backend, world):
    if not dist.is_available() or not getattr(dist, f"is_{backend}_available")():
        pytest.skip(f"{backend} not built")
    mp.spawn(_ddp_worker, args=(world, backend, str(tmp_path / "init"), str(tmp_path)),
             nprocs=world, join=True)
    for rank in range(world):
        res = torch.load(tmp_path / f"rank{rank}.pt")
        assert res["step"] == 3 and res["device"].startswith("cuda")
        assert res["sync_bn"] > 0  # every BatchNorm became a SyncBatchNorm
        assert res["diff"] < 1e-6  # weights and SyncBatchNorm's statistics alike
    state = load_checkpoint(tmp_path / "checkpoints" / "step_000000003.pt")
    assert state["world_size"] == world and len(state["per_rank"]) == world
