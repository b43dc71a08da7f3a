"""Global placement: exact links are honoured, a bad link is dropped without bending the rest."""

import numpy as np

from imaging.placement import Link, fit_stage_model, solve_positions


def _grid_links(truth, nominal, *, score=0.95):
    links = []
    for r in range(3):
        for c in range(3):
            k = 3 * r + c
            for nb in ([k + 1] if c < 2 else []) + ([k + 3] if r < 2 else []):
                links.append(Link(k, nb, tuple(nominal[nb] - nominal[k]), tuple(truth[nb] - truth[k]), score,
                                  ((400.0, 0.0), (0.0, 400.0))))
    return links


def _grid(seed=0):
    rng = np.random.default_rng(seed)
    nominal = np.array([(90.0 * c, 90.0 * r) for r in range(3) for c in range(3)])
    return nominal, nominal + rng.uniform(-9, 9, nominal.shape)


def _aligned_error(found, truth, keep=slice(None)):
    d = found - truth
    d -= d[keep].mean(0)
    return np.hypot(*d[keep].T)


def test_exact_links_give_exact_positions():
    nominal, truth = _grid()
    placement = solve_positions(nominal, _grid_links(truth, nominal))
    assert _aligned_error(placement.positions_px, truth).max() < 1e-3
    assert placement.dropped == {} and placement.placed_by_stage == ()


def test_one_wrong_link_is_dropped_and_does_not_bend_the_mosaic():
    nominal, truth = _grid(1)
    links = _grid_links(truth, nominal)
    bad = 5
    links[bad] = Link(links[bad].i, links[bad].j, links[bad].nominal_offset_px,
                      tuple(np.asarray(links[bad].offset_px) + (7.0, -6.0)), 0.97, links[bad].information)
    placement = solve_positions(nominal, links)
    assert placement.dropped == {bad: "inconsistent"}
    assert _aligned_error(placement.positions_px, truth).max() < 1e-3


def test_low_score_links_are_ignored_and_lonely_frames_follow_the_stage():
    nominal, truth = _grid(2)
    links = [link if 4 not in (link.i, link.j) else Link(link.i, link.j, link.nominal_offset_px,
                                                          (0.0, 0.0), 0.1) for link in _grid_links(truth, nominal)]
    placement = solve_positions(nominal, links)
    assert placement.placed_by_stage == (4,)
    assert set(placement.dropped.values()) == {"low_score"}
    keep = np.arange(9) != 4
    assert _aligned_error(placement.positions_px, truth, keep).max() < 1e-3
    # The stage-placed frame lands within the stage error of where it belongs.
    d = placement.positions_px - truth
    d -= d[keep].mean(0)
    assert np.hypot(*d[4]) < 15


def test_stage_consensus_ignores_aliases_that_agree_on_an_implausible_stage():
    # 4 true vertical links (stage = identity + 1 px noise) vs 6 aliases one 18 px period short,
    # which agree with each other on a 0.92 step: the consensus must keep the real stage.
    rng = np.random.default_rng(3)
    links = [Link(0, 1, (217.0, 0.0), (217.2, -1.3), 0.95), Link(1, 2, (217.0, 0.0), (217.5, -1.4), 0.95)]
    links += [Link(k, k + 3, (0.0, 217.0), tuple(np.array([1.4, 216.8]) + rng.normal(0, 0.2, 2)), 0.9)
              for k in range(4)]
    links += [Link(k, k + 3, (0.0, 217.0), tuple(np.array([1.4, 198.8]) + rng.normal(0, 0.2, 2)), 0.9)
              for k in range(4, 10)]
    model = fit_stage_model(links)
    assert model is not None and abs(model.matrix[1, 1] - 1.0) < 0.01
    assert set(model.inliers) == set(range(6))
    assert max(model.inlier_spread_px) < 0.5
