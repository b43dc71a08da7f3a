"""Placement on a repeatable stage, on links whose NCC surfaces and refinements are made to order: the camera's
rotation and the scanner's scale per axis are found, a link that found another structure is dropped, and too few
agreeing links are not believed.
(The simulator's own scanner and chips: tests/imaging/test_stitching_sim.py.)"""
from types import SimpleNamespace

import numpy as np
import pytest

from imaging.placement import Link
from imaging.repeatable_stage import StageCalibration, repeatable_stage_placement

STEP = 217.0
GRID = 3
TURN_DEG = 0.35
SCALE = (1.0015, 0.9990)  # the scanner's x axis 0.15 % long against the pixel size, its y axis 0.1 % short


def _turned(offset, degrees=TURN_DEG):
    """Where the stage puts ``offset`` in the camera: scaled per axis, then turned."""
    a = np.deg2rad(degrees)
    return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) @ (np.asarray(offset, float) * SCALE)


def _scan(aliased=()):
    """Nominal positions (px) of a 3×3 raster and its side links; each link's NCC surface peaks at the offset the
    turned stage gives, or, for the links in ``aliased``, 9 px beside it (a period of a grating)."""
    nominal = np.array([(c * STEP, r * STEP) for r in range(GRID) for c in range(GRID)], float)
    pairs = [(k, k + 1) for k in range(GRID * GRID) if (k + 1) % GRID] + [(k, k + GRID) for k in range(GRID * (GRID - 1))]
    truth, links = {}, []
    for i, j in pairs:
        nominal_offset = nominal[j] - nominal[i]
        true = _turned(nominal_offset) + (9.0 * ((i, j) in aliased), 0.0)
        truth[(i, j)] = true
        base = np.round(nominal_offset).astype(int)  # the surface's centre; it covers ±20 px around it
        yy, xx = np.mgrid[0:41, 0:41]
        peak = 20 + true - base
        surface = 0.3 + 0.65 * np.exp(-((xx - peak[0]) ** 2 + (yy - peak[1]) ** 2) / 8.0)
        links.append(Link(i, j, tuple(nominal_offset), tuple(true), 0.95, information=((300.0, 0.0), (0.0, 300.0)),
                          surface=surface, surface_base=(int(base[0]), int(base[1])), lens_px=20000))
    return nominal, links, truth


def _register(truth):
    """A refinement that climbs to the link's own peak when started within 2 px of it, else ends where it started
    with a poor score (another structure)."""
    def register(i, j, start, radius):
        true = truth[(i, j)]
        if np.hypot(*(np.asarray(start) - true)) <= 2.0:
            return SimpleNamespace(offset_px=tuple(true), score=0.95, information=((300.0, 0.0), (0.0, 300.0)),
                                   reason="")
        return SimpleNamespace(offset_px=tuple(np.asarray(start, float)), score=0.3,
                               information=((1.0, 0.0), (0.0, 1.0)), reason="")
    return register


def _placed(aliased=()):
    nominal, links, truth = _scan(aliased)
    return nominal, repeatable_stage_placement(nominal, links, register=_register(truth), stage_sigma_px=0.06,
                                               min_score=0.6, max_residual_px=1.0)


def test_the_stages_calibration_is_measured_and_the_frames_placed_by_it():
    nominal, (links, placement, calibration) = _placed()
    assert calibration.rotation_deg == pytest.approx(TURN_DEG, abs=0.01)
    # a rotation alone would leave 0.3 px a step: the links pin each axis's scale too
    assert calibration.scale == pytest.approx(SCALE, abs=1e-4) and abs(calibration.skew_deg) < 0.01
    assert calibration.to_dict()["scale"] == pytest.approx(SCALE, abs=1e-4)
    assert calibration.believed and calibration.links_agreeing == calibration.links_measured == 12
    expected = np.array([_turned(p - nominal[4]) for p in nominal])  # about the scan's centre
    found = placement.positions_px - placement.positions_px[4]
    assert np.abs(found - expected).max() < 0.05


def test_a_link_that_found_another_structure_is_dropped_not_followed():
    # two links whose surfaces peak a grating period away: refined from the turned stage, they land on the
    # structure there with a poor score, and neither bends the rotation nor the placement
    nominal, (links, placement, calibration) = _placed(aliased={(0, 1), (4, 7)})
    assert calibration.rotation_deg == pytest.approx(TURN_DEG, abs=0.02)
    assert calibration.links_agreeing == 10 and calibration.believed
    expected = np.array([_turned(p - nominal[4]) for p in nominal])
    assert np.abs((placement.positions_px - placement.positions_px[4]) - expected).max() < 0.1


@pytest.mark.parametrize("agreeing, measured, believed", [(3, 20, False), (6, 20, True), (0, 0, False)])
def test_a_stage_is_believed_only_where_enough_overlaps_agree_with_it(agreeing, measured, believed):
    calibration = StageCalibration(rotation_deg=0.3, links_agreeing=agreeing, links_measured=measured,
                                   median_residual_px=float("nan"))
    assert calibration.believed is believed
    assert calibration.to_dict()["believed"] is believed and calibration.to_dict()["median_residual_px"] is None


def test_a_stage_map_the_links_cannot_pin_is_left_at_the_rotation():
    # two links, one along each axis, the vertical one 39 % short (another structure, found with a sound score):
    # no scanner is that far off, so the map stays the rotation it started from
    from imaging.repeatable_stage import fitted_stage
    turn = np.array([[np.cos(0.006), -np.sin(0.006)], [np.sin(0.006), np.cos(0.006)]])
    links = [Link(0, 1, (STEP, 0.0), tuple(turn @ (STEP, 0.0)), 0.9, information=((300.0, 0.0), (0.0, 300.0))),
             Link(0, 2, (0.0, STEP), tuple(turn @ (0.0, 0.61 * STEP)), 0.9, information=((300.0, 0.0), (0.0, 300.0)))]
    assert np.array_equal(fitted_stage(links, turn), turn)
    links[1] = Link(0, 2, (0.0, STEP), tuple(turn @ (0.0, 0.999 * STEP)), 0.9, information=((300.0, 0.0), (0.0, 300.0)))
    assert np.allclose(fitted_stage(links, turn), turn @ np.diag([1.0, 0.999]), atol=1e-6)


def test_a_single_row_of_frames_measures_the_rotation_from_its_one_direction():
    # a line scan's links all run along x: they tell the rotation and the x axis's scale, nothing tells the y
    # axis's (it stays as it was); one or two links are enough to believe the stage
    nominal, links, truth = _scan()
    row = [link for link in links if link.j < GRID]
    placed = repeatable_stage_placement(nominal[:GRID], row, register=_register(truth), stage_sigma_px=0.06,
                                        min_score=0.6, max_residual_px=1.0)
    _, placement, calibration = placed
    assert calibration.believed and calibration.links_agreeing == len(row) == 2
    assert calibration.rotation_deg == pytest.approx(TURN_DEG, abs=0.01)
    assert calibration.scale == pytest.approx((SCALE[0], 1.0), abs=1e-4)
    found = placement.positions_px - placement.positions_px[0]
    assert np.abs(found - [_turned(p - nominal[0]) for p in nominal[:GRID]]).max() < 0.1
