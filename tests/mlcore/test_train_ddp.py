"""DDP smoke test: 2 CPU processes on gloo, networks stay in sync."""

import gc
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _train_and_compare(rank, world, out_dir):
    from mlcore.config import preset
    from mlcore.data import PairDataset, synthetic_pairs
    from mlcore.train import Trainer

    cfg = preset("tiny").replace(train__checkpoint_every=3, data__crop=32)
    ds = PairDataset(synthetic_pairs(4, size=32, seed=0), data=cfg.data, seed=0)
    trainer = Trainer(cfg, ds, out_dir=out_dir)
    assert trainer.world_size == 2
    trainer.fit(max_steps=3)
    diffs = {}
    for kind, tensors in (("params", lambda net: net.parameters()),
                          ("norm_stats", lambda net: (b for n, b in net.named_buffers()
                                                      if n.endswith(("running_mean", "running_var"))))):
        flat = torch.cat([t.detach().flatten() for net in trainer.nets.values() for t in tensors(net)])
        gathered = [torch.empty_like(flat) for _ in range(world)]
        dist.all_gather(gathered, flat)
        diffs[kind] = float((gathered[0] - gathered[1]).abs().max())
    torch.save({**diffs, "moved": trainer.step}, os.path.join(out_dir, f"rank{rank}.pt"))


def _worker(rank, world, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        # The trainer (and its DDP reducers, which hold the process group) is gone before the
        # group is destroyed, as mlcore.cli does it.
        _train_and_compare(rank, world, out_dir)
        gc.collect()
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not built")
def test_two_cpu_processes_stay_in_sync(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        res = torch.load(tmp_path / f"rank{rank}.pt")
        assert res["moved"] == 3
        assert res["params"] == 0.0
        assert res["norm_stats"] < 1e-6  # each rank's own, averaged at the checkpoint
    from mlcore.checkpoint import load_checkpoint
    state = load_checkpoint(tmp_path / "checkpoints" / "step_000000003.pt")
    assert state["world_size"] == 2 and len(state["per_rank"]) == 2
