import math

import pytest

from instruments.trajectory import serpentine_grid, step_from_fov, usable_side_nm, z_stack_offsets_nm


def test_step_from_fov_and_overlap():
    assert usable_side_nm(20_000) == pytest.approx(20_000 / math.sqrt(2))
    assert step_from_fov(fov_diameter_nm=20_000, overlap=0.25) == pytest.approx(0.75 * 20_000 / math.sqrt(2))
    with pytest.raises(ValueError, match="overlap"):
        step_from_fov(fov_diameter_nm=20_000, overlap=0.95)


def test_serpentine_order_and_coverage():
    side = usable_side_nm(10_000)
    step = step_from_fov(fov_diameter_nm=10_000, overlap=0.2)
    grid = serpentine_grid(origin_nm=(1_000, 2_000), area_nm=(side + 2 * step, side + step),
                           fov_diameter_nm=10_000, overlap=0.2)
    assert [(p.row, p.col) for p in grid] == [(0, 0), (0, 1), (0, 2), (1, 2), (1, 1), (1, 0)]
    assert [p.index for p in grid] == list(range(6))
    # neighbours one step apart; first frame's usable square starts at the origin
    assert grid[1].x_nm - grid[0].x_nm == pytest.approx(step)
    assert grid[3].y_nm - grid[2].y_nm == pytest.approx(step)
    assert grid[0].x_nm - side / 2 == pytest.approx(1_000)
    assert grid[0].y_nm - side / 2 == pytest.approx(2_000)


def test_small_area_is_one_frame_centred():
    (only,) = serpentine_grid(origin_nm=(0, 0), area_nm=(0, 0), fov_diameter_nm=10_000, overlap=0.1)
    assert (only.x_nm, only.y_nm) == (0, 0)


def test_z_stack_offsets_centred():
    assert z_stack_offsets_nm(planes=3, step_nm=500) == (-500, 0, 500)
    assert z_stack_offsets_nm(planes=1, step_nm=0) == (0,)
    with pytest.raises(ValueError, match="planes"):
        z_stack_offsets_nm(planes=0, step_nm=100)
