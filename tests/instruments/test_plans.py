import pytest

from instruments.plans import (
    Approach,
    BackOff,
    BeginPoint,
    Checkpoint,
    Configure,
    Focus,
    FocusOffset,
    Fuse,
    MoveXY,
    Read,
    Save,
    ScanSpec,
    Settle,
    Trigger,
    grid_points,
    raster_plan,
)

SPEC = ScanSpec(origin_nm=(0, 0), area_nm=(10_000, 0), fov_diameter_nm=10_000, overlap=0.2,
                contact_setpoint_nm=15, imaging_gap_nm=30, settle_s=0.002)


def names(msgs):
    return [type(m).__name__ for m in msgs]


def test_single_plane_point_messages():
    msgs = list(raster_plan(SPEC))
    assert isinstance(msgs[0], Configure)
    per_point = ["BeginPoint", "MoveXY", "Settle", "Approach", "BackOff", "Focus", "Trigger", "Read", "Save",
                 "Checkpoint"]
    n = len(grid_points(SPEC))
    assert n == 2
    assert names(msgs) == ["Configure"] + per_point * n
    point = grid_points(SPEC)[1]
    assert msgs[11:21] == [BeginPoint(point), MoveXY(point.x_nm, point.y_nm), Settle(0.002),
                           Approach(setpoint_nm=15, speed_nm_s=SPEC.approach_speed_nm_s), BackOff(gap_nm=30),
                           Focus(mode="auto", range_nm=SPEC.focus_range_nm, steps=SPEC.focus_steps, start_nm=0.0),
                           Trigger(), Read(plane=0), Save(point), Checkpoint(1)]


def test_z_stack_messages_then_fuse():
    spec = ScanSpec(origin_nm=(0, 0), area_nm=(0, 0), fov_diameter_nm=10_000, z_planes=3, z_step_nm=400)
    msgs = list(raster_plan(spec))
    assert names(msgs)[7:] == ["FocusOffset", "Trigger", "Read"] * 3 + ["Fuse", "Save", "Checkpoint"]
    assert [m.offset_nm for m in msgs if isinstance(m, FocusOffset)] == [-400, 0, 400]
    assert [m.plane for m in msgs if isinstance(m, Read)] == [0, 1, 2]
    assert sum(isinstance(m, Fuse) for m in msgs) == 1


def test_skip_leaves_out_saved_points():
    saves = [m.point.index for m in raster_plan(SPEC, skip={0}) if isinstance(m, Save)]
    assert saves == [1]


@pytest.mark.parametrize("kwargs, fragment", [
    ({"overlap": 1.0}, "overlap"), ({"exposure_s": 0}, "exposure_s"), ({"focus_steps": 2}, "focus_steps"),
    ({"z_planes": 0}, "z_planes"), ({"roi": (10, 0, 5, 5)}, "roi"), ({"focus_mode": "manual"}, "focus_mode"),
])
def test_bad_spec_raises(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        ScanSpec(origin_nm=(0, 0), area_nm=(0, 0), fov_diameter_nm=10_000, **kwargs)
