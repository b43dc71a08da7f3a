"""Fixtures for the instrument-control tests: a bench rig (fakes + real drivers) on a stand-in world."""

import pytest

from instruments.bench_rig import FOCUS_ORIGIN_NM, start_bench_rig
from instruments.plans import ScanSpec
from tests.instruments.stand_in_world import StandInWorld

# simulated hardware time runs 20× faster than the wall clock in tests
CLOCK_RATE = 20.0


@pytest.fixture
def stand_in_world():
    return StandInWorld(seed=0)


@pytest.fixture
def bench_rig(stand_in_world):
    rig = start_bench_rig(world=stand_in_world, clock_rate=CLOCK_RATE)
    yield rig
    rig.close()


def small_spec(**overrides) -> ScanSpec:
    """2 × 2 grid of 128 × 128 frames around (30 µm, 30 µm)."""
    kwargs = dict(origin_nm=(30_000, 30_000), area_nm=(14_000, 14_000), fov_diameter_nm=14_000, overlap=0.2,
                  roi=(0, 0, 128, 128), exposure_s=0.01, settle_s=0.0, focus_start_nm=FOCUS_ORIGIN_NM,
                  focus_range_nm=4_000, focus_mode="last")
    kwargs.update(overrides)
    return ScanSpec(**kwargs)
