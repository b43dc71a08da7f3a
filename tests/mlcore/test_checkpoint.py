import pytest
import torch

from mlcore.checkpoint import ImagePool, latest_checkpoint, load_checkpoint, prune_checkpoints, save_checkpoint
from mlcore.errors import CheckpointError


def test_atomic_save_and_latest(tmp_path):
    for step in (3, 12, 7):
        save_checkpoint({"step": step}, tmp_path / f"step_{step:09d}.pt")
    (tmp_path / "step_000000099.pt.abc.tmp").write_bytes(b"half a file")  # crashed writer
    assert latest_checkpoint(tmp_path).name == "step_000000012.pt"
    assert load_checkpoint(latest_checkpoint(tmp_path))["step"] == 12
    prune_checkpoints(tmp_path, keep=1)
    assert [p.name for p in tmp_path.glob("step_*.pt")] == ["step_000000012.pt"]
    assert latest_checkpoint(tmp_path / "none") is None


def test_version_mismatch(tmp_path):
    torch.save({"format": "ssumweb.mlcore.checkpoint", "version": 99}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(tmp_path / "x.pt")


def test_pool_fills_then_swaps_and_restores():
    pool = ImagePool(2, seed=0)
    first = pool.query(torch.arange(2.0).view(2, 1, 1, 1))
    assert first.flatten().tolist() == [0, 1]
    state = pool.state_dict()
    twin = ImagePool(0, seed=5)
    twin.load_state_dict(state)
    batch = torch.arange(10.0, 20.0).view(10, 1, 1, 1)
    a, b = pool.query(batch), twin.query(batch)
    assert torch.equal(a, b)
    assert not torch.equal(a, batch)  # some came from the history
    assert ImagePool(0, seed=0).query(batch) is batch
