import numpy as np
import pytest
import tifffile
import torch

from mlcore.config import DataConfig
from mlcore.data import Normalization, PairDataset, PairSet, fit_normalization, load_pair_folder, synthetic_pairs
from mlcore.errors import InputImageError


def test_normalisation_percentiles_and_round_trip():
    img = np.linspace(0, 10_000, 10_001).astype(np.uint16)
    norm = fit_normalization([img], percentiles=(1, 99))
    assert norm.low == pytest.approx(100) and norm.high == pytest.approx(9900)
    unit = norm.to_unit(np.array([0, 100, 5000, 9900, 65535], np.uint16))
    assert unit.dtype == np.float32 and unit.tolist() == pytest.approx([0, 0, 0.5, 1, 1])
    assert norm.from_unit(np.float32(0.5)) == pytest.approx(5000)
    assert Normalization.from_dict(norm.to_dict()) == norm
    with pytest.raises(InputImageError, match="NaN"):
        fit_normalization([np.array([1.0, np.nan])])


def test_pair_folder_layouts(tmp_path):
    pairs = synthetic_pairs(2, size=16, seed=0)
    (tmp_path / "a" / "lr").mkdir(parents=True)
    (tmp_path / "a" / "hr").mkdir()
    for name, lr, hr in zip(pairs.names, pairs.lr, pairs.hr, strict=False):
        tifffile.imwrite(tmp_path / "a" / "lr" / f"{name}.tif", lr)
        tifffile.imwrite(tmp_path / "a" / "hr" / f"{name}.tif", hr)
    (tmp_path / "b").mkdir()
    import cv2
    cv2.imwrite(str(tmp_path / "b" / "x_lr.png"), pairs.lr[0])
    cv2.imwrite(str(tmp_path / "b" / "x_hr.png"), pairs.hr[0])
    (tmp_path / "b" / "pairs.json").write_text('{"pixel_size_nm": 25.0}')
    (tmp_path / "c").mkdir()
    np.savez(tmp_path / "c" / "set.npz", lr=np.stack(pairs.lr), hr=np.stack(pairs.hr))
    for sub, n in (("a", 2), ("b", 1), ("c", 2)):
        got = load_pair_folder(tmp_path / sub)
        assert len(got.lr) == n and got.lr[0].dtype == np.uint16
        assert np.array_equal(got.lr[0], pairs.lr[0]) and np.array_equal(got.hr[0], pairs.hr[0])
    assert load_pair_folder(tmp_path / "b").pixel_size_nm == 25.0
    (tmp_path / "d").mkdir()
    with pytest.raises(InputImageError, match="no LR/HR pairs"):
        load_pair_folder(tmp_path / "d")


def test_batches_are_deterministic_and_resized(pairs):
    data = DataConfig(crop=16, source_crop=32)  # 48 px pairs become 24 px, then 16 px crops
    ds = PairDataset(pairs, data=data, seed=3)
    assert ds.lr[0].shape == (24, 24)
    a = ds.batch(5, batch_size=3)
    b = ds.batch(5, batch_size=3)
    assert a["a"].shape == (3, 1, 16, 16) and a["a"].dtype == torch.float32
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["a"].min() >= -1 and a["a"].max() <= 1
    assert not torch.equal(ds.batch(6, batch_size=3)["a"], a["a"])


def test_ranks_draw_disjoint_pairs(pairs):
    ds = PairDataset(pairs, data=DataConfig(crop=48, source_crop=48, unaligned=False), seed=0)
    r0 = ds.batch(0, batch_size=3, rank=0, world_size=2)["b_pair"]
    r1 = ds.batch(0, batch_size=3, rank=1, world_size=2)["b_pair"]
    seen = {round(float(x.sum()), 3) for x in torch.cat([r0, r1])}
    assert len(seen) == 6  # a DistributedSampler epoch: each pair once across the ranks


def test_transform_is_applied_identically_to_both(pairs):
    calls = []

    def flip(lr, hr, rng):
        calls.append(1)
        return lr[:, ::-1], hr[:, ::-1]

    data = DataConfig(crop=48, source_crop=48, unaligned=False)
    plain = PairDataset(pairs, data=data).batch(0, batch_size=1)
    flipped = PairDataset(pairs, data=data, transform=flip).batch(0, batch_size=1)
    assert calls
    assert torch.equal(flipped["a"], plain["a"].flip(-1))
    assert torch.equal(flipped["b_pair"], plain["b_pair"].flip(-1))


def test_bad_pairs():
    with pytest.raises(InputImageError, match="channel"):
        PairSet((np.zeros((8, 8)),), (np.zeros((8, 8, 3)),), ("x",))
    nan = np.full((48, 48), np.nan, np.float32)
    with pytest.raises(InputImageError, match="NaN"):
        PairDataset(PairSet((nan,), (nan,), ("x",)), data=DataConfig(crop=32, source_crop=32),
                    norm_a=Normalization(0, 1), norm_b=Normalization(0, 1))
    small = synthetic_pairs(1, size=16)
    with pytest.raises(InputImageError, match="smaller than"):
        PairDataset(small, data=DataConfig(crop=32, source_crop=32))


def test_simulator_dataset_loads_with_its_split(tmp_path):
    sim = pytest.importorskip("instruments.sim.dataset")
    sim.write_dataset(tmp_path, preset="tiny")
    train = load_pair_folder(tmp_path, split="train")
    test = load_pair_folder(tmp_path, split="test")
    assert len(train.lr) >= 1 and len(test.lr) >= 1 and train.pixel_size_nm > 0
    ds = PairDataset(train, data=DataConfig(crop=64, source_crop=64))
    assert ds.batch(0, batch_size=2)["a"].shape == (2, 1, 64, 64)
