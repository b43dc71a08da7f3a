"""imaging.registration_checks: a true placement passes, shifted or period-aliased ones do not."""

import numpy as np

from imaging.registration_checks import extrapolation, local_consistency, subregion_agreement
from tests.imaging.synthetic_ic import make_pair


def test_subregion_check_rejects_a_shifted_placement_and_accepts_the_true_one():
    """The independent check alone: the true transform passes, the same one shifted 40 px fails."""
    pair = make_pair(seed=51, mosaic_size=200, ratio=1.0, rotation_deg=2.0)
    mosaic = pair.mosaic.astype(np.float32) / (65535.0 if pair.mosaic.dtype == np.uint16 else 1.0)
    sem = pair.sem.astype(np.float32) / (65535.0 if pair.sem.dtype == np.uint16 else 1.0)
    right = subregion_agreement(sem, mosaic, pair.sem_to_mosaic)
    assert right.agree >= 3 and right.agree > right.disagree - 2, right
    assert right.whole_margin >= 0.03, right
    shifted = np.array([[1.0, 0, 40.0], [0, 1.0, -25.0], [0, 0, 1]]) @ pair.sem_to_mosaic
    wrong = subregion_agreement(sem, mosaic, shifted)
    assert wrong.agree <= 1 and wrong.disagree >= 6, wrong
    assert wrong.whole_margin < 0, wrong  # the true place correlates better than the claim


def test_subregion_check_calls_a_grating_ambiguous():
    """A placement one period off on a grating must not verify: windows match every period alike."""
    rng = np.random.default_rng(7)
    mosaic = np.full((160, 160), 0.2, np.float32)
    mosaic[:, 20:140][:, (np.arange(120) % 12) < 6] = 0.8  # vertical lines, period 12 px
    mosaic += rng.normal(0, 0.02, mosaic.shape).astype(np.float32)
    sem = mosaic[40:120, 40:120].copy()  # inside the grating: x is undetermined modulo 12 px
    truth = np.array([[1.0, 0, 40.0], [0, 1.0, 40.0], [0, 0, 1]])
    for claim in (truth, np.array([[1.0, 0, 12.0], [0, 1, 0], [0, 0, 1]]) @ truth):
        check = subregion_agreement(sem, mosaic, claim)
        assert check.whole_margin < 0.03 and check.agree == 0, check


def test_local_consistency_measures_a_transform_stuck_off_in_scale_and_rotation():
    """The true placement: windows found where it puts them. The same with 2 % scale and 0.8°
    about the SEM's centre (right as a whole, corners pixels off): the windows' fitted similarity
    says how far, and composing the claim with it lands back on the truth."""
    pair = make_pair(seed=52, mosaic_size=320, ratio=1.0, rotation_deg=1.0)
    mosaic = pair.mosaic.astype(np.float32) / (65535.0 if pair.mosaic.dtype == np.uint16 else 1.0)
    sem = pair.sem.astype(np.float32) / (65535.0 if pair.sem.dtype == np.uint16 else 1.0)
    right = local_consistency(sem, mosaic, pair.sem_to_mosaic)
    assert right.located >= 8 and right.correction_px < 0.5, right
    h, w = sem.shape
    a, scale = np.deg2rad(0.8), 1.02
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    off = np.eye(3)
    off[:2, :2] = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    off[:2, 2] = centre - off[:2, :2] @ centre
    stuck = pair.sem_to_mosaic @ off
    xs, ys = np.meshgrid(np.linspace(0, w - 1, 9), np.linspace(0, h - 1, 9))
    grid = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    truly_off = np.mean(np.hypot(*((stuck - pair.sem_to_mosaic) @ grid)[:2]))
    check = local_consistency(sem, mosaic, stuck)
    assert truly_off > 1.5 and check.located >= 8, (truly_off, check)
    assert abs(check.correction_px - truly_off) < 0.5, (check.correction_px, truly_off)
    corrected = stuck @ check.correction
    assert np.mean(np.hypot(*((corrected - pair.sem_to_mosaic) @ grid)[:2])) < 0.5


def test_local_consistency_locates_nothing_on_a_flat_image():
    flat = np.full((120, 120), 0.5, np.float32)
    check = local_consistency(flat[20:80, 20:80], flat, np.array([[1.0, 0, 20], [0, 1, 20], [0, 0, 1]]))
    assert check.located == 0 and check.correction is None and np.isnan(check.median_px)


def test_extrapolation_flags_detail_in_one_corner():
    """Detail spread over the SEM image: scale and rotation well anchored (~1.5); the same detail
    only in one corner: the footprint-wide error is a multiple of the error at the detail."""
    rng = np.random.default_rng(3)
    spread = np.zeros((160, 160), np.float32)
    for x, y in rng.uniform(10, 150, (40, 2)).astype(int):
        spread[y - 3 : y + 3, x - 3 : x + 3] = 1.0
    corner = np.zeros_like(spread)
    corner[:50, :50] = spread[:50, :50]
    assert 1.0 <= extrapolation(spread) < 2.0
    assert extrapolation(corner) > 2.5
