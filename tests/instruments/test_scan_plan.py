import math

import pytest

from instruments.scan_plan import InstrumentLimits, PlanError, area_for_grid, validate_plan
from instruments.trajectory import serpentine_grid

GOOD = dict(origin_x_nm=5000, origin_y_nm=5000, size_x_nm=30000, size_y_nm=20000, overlap=0.3, exposure_ms=20,
            contact_setpoint_nm=50)


def test_grid_shape_matches_the_engines_serpentine_grid():
    plan = validate_plan(GOOD)
    grid = serpentine_grid(origin_nm=(5000, 5000), area_nm=(30000, 20000), fov_diameter_nm=14000, overlap=0.3)
    assert plan.frames_total == len(grid)
    assert plan.rows == max(p.row for p in grid) + 1 and plan.cols == max(p.col for p in grid) + 1
    assert plan.step_nm == pytest.approx(14000 / math.sqrt(2) * 0.7)


def test_a_given_step_sets_the_overlap():
    plan = validate_plan({**GOOD, "step_nm": 9899.49 * 0.5})
    assert plan.overlap == pytest.approx(0.5, abs=1e-4)


@pytest.mark.parametrize("field, value", [
    ("size_x_nm", -1), ("overlap", 1.0), ("overlap", -0.1), ("step_nm", 20000), ("exposure_ms", 0),
    ("contact_setpoint_nm", -5), ("origin_x_nm", 200000), ("size_y_nm", float("nan")), ("exposure_ms", "fast"),
    ("z_planes", 0), ("z_planes", 2.5),
])
def test_out_of_range_values_name_their_field(field, value):
    with pytest.raises(PlanError) as err:
        validate_plan({**GOOD, field: value})
    assert err.value.field == field


@pytest.mark.parametrize("step_nm", [20000, 12000])
def test_a_step_wider_than_the_usable_square_names_the_square_as_the_limit(step_nm):
    # the sphere's 14000 nm circle is not the limit (a 12000 nm step leaves gaps as well): its 9899 nm square is
    with pytest.raises(PlanError) as err:
        validate_plan({**GOOD, "step_nm": step_nm})
    assert err.value.message == (f"{step_nm} nm is larger than the usable square of the field of view (9899 nm wide, "
                                 "inside the 14000 nm circle): frames would leave gaps.")


def test_a_billion_frames_is_refused():
    with pytest.raises(PlanError) as err:
        validate_plan({**GOOD, "size_x_nm": 95000, "size_y_nm": 95000, "overlap": 0.9},
                      InstrumentLimits(max_frames=1000))
    assert "frames" in err.value.message


def test_missing_value_is_named():
    values = dict(GOOD)
    del values["exposure_ms"]
    with pytest.raises(PlanError) as err:
        validate_plan(values)
    assert err.value.field == "exposure_ms"


def test_a_z_stack_needs_a_step():
    with pytest.raises(PlanError) as err:
        validate_plan({**GOOD, "z_planes": 5, "z_step_nm": 0})
    assert err.value.field == "z_step_nm"
    assert validate_plan({**GOOD, "z_planes": 5, "z_step_nm": 200}).z_planes == 5


def test_a_z_stack_may_span_a_deep_chip_but_not_past_the_focus_travel():
    # 51 planes 1.5 µm apart span 75 µm of focus travel: a 1.9 µm chip's 38 µm either way of the autofocus's plane
    assert validate_plan({**GOOD, "z_planes": 51, "z_step_nm": 1500}).z_step_nm == 1500
    with pytest.raises(PlanError) as err:
        validate_plan({**GOOD, "z_planes": 51, "z_step_nm": 2500}, InstrumentLimits())
    assert (err.value.field, err.value.message) == ("z_step_nm", "the Z-stack must fit the focus travel of 100000 nm.")


@pytest.mark.parametrize("fov_nm", [14000, 14250, 9000])
@pytest.mark.parametrize("overlap", [0.0, 0.3, 0.4, 0.9])
def test_the_area_for_a_grid_gives_that_grid(fov_nm, overlap):
    for frames_across in range(1, 6):
        size = area_for_grid(frames_across, fov_diameter_nm=fov_nm, overlap=overlap)
        plan = validate_plan({**GOOD, "size_x_nm": size, "size_y_nm": size, "overlap": overlap},
                             InstrumentLimits(fov_diameter_nm=fov_nm))
        assert (plan.rows, plan.cols) == (frames_across, frames_across) and size % 100 == 0
