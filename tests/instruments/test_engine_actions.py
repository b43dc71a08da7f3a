"""The contact approach on the bench rig: the real pipython driver against the E-727 fake."""

import time

import pytest

from instruments.engine_actions import approach
from instruments.errors import ContactError

SETPOINT, SPEED, LOOKAHEAD, TOLERANCE = 20.0, 10_000.0, 100.0, 5.0


def _approach(rig, *, start_nm=None, check=lambda: None):
    return approach(rig.piezo, rig.feedback, setpoint_nm=SETPOINT, speed_nm_s=SPEED, start_nm=start_nm,
                    margin_nm=200.0, lookahead_nm=LOOKAHEAD, tolerance_nm=TOLERANCE, timeout_s=5.0, check=check)


def _z_targets_um(rig) -> list[float]:
    targets = []
    for line in rig.e727.state.commands:
        words = line.split()
        if words and words[0] == "MOV" and "3" in words[1::2]:
            targets.append(float(words[words.index("3", 1) + 1]))
    return targets


@pytest.mark.parametrize("start_nm", [None, 5_900.0, 6_800.0], ids=["first contact", "below", "sample rose"])
def test_approach_holds_the_setpoint_from_any_start(bench_rig, stand_in_world, start_nm):
    contact_z, deflection = _approach(bench_rig, start_nm=start_nm)
    assert SETPOINT <= deflection <= SETPOINT + TOLERANCE
    assert contact_z == pytest.approx(stand_in_world.contact_z_nm() + deflection, abs=1.0)
    assert stand_in_world.deflection_nm() == pytest.approx(deflection, abs=1e-3)  # TSP? reads to 1 µV


def test_a_stalled_host_never_pushes_further_than_the_lookahead(bench_rig, stand_in_world):
    stalls = iter([0.05] * 40)  # 50 ms per poll: at 20× clock the sample could travel 10 µm meanwhile

    def slow_check():
        time.sleep(next(stalls, 0.0))

    _approach(bench_rig, start_nm=5_900.0, check=slow_check)
    highest_nm = 1000 * max(_z_targets_um(bench_rig))
    assert highest_nm < stand_in_world.contact_z_nm() + SETPOINT + LOOKAHEAD


def test_no_contact_within_the_travel(bench_rig, stand_in_world):
    stand_in_world.contact_offset_nm = 50_000.0
    with pytest.raises(ContactError, match="no contact within the Z travel"):
        _approach(bench_rig, start_nm=9_000.0)


def test_bent_cantilever_even_fully_retracted(bench_rig, stand_in_world):
    stand_in_world.contact_offset_nm = -6_100.0   # contact 100 nm below the bottom of the travel
    with pytest.raises(ContactError, match="even with Z fully retracted"):
        _approach(bench_rig)
