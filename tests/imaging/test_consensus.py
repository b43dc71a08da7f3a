"""Choosing which measured offsets to believe: settling links that miss the placement."""

import numpy as np

from imaging.consensus import settled
from imaging.pairwise import PairOffset
from imaging.placement import Link, solve_positions


def test_settled_refines_a_link_on_a_neighbouring_optimum_from_the_placement():
    # 3×3 frames linked to every neighbour (diagonals too), exact links except 3-4, which sits
    # on an optimum 0.9 px off in y (under max_residual_px: the solve bends rather than drops
    # it). Refined again from the placement's prediction, as a refinement starting in the right
    # basin would be, it lands on the truth and the solve is redone with it.
    rng = np.random.default_rng(2)
    nominal = np.array([(200.0 * c, 200.0 * r) for r in range(3) for c in range(3)])
    truth = nominal + rng.uniform(-2, 2, nominal.shape)
    alias = np.array([0.0, 0.9])
    pairs = [(a, b) for a in range(9) for b in range(a + 1, 9)
             if max(abs(b // 3 - a // 3), abs(b % 3 - a % 3)) == 1]
    info = ((400.0, 0.0), (0.0, 400.0))
    links = [Link(i, j, tuple(nominal[j] - nominal[i]), tuple(truth[j] - truth[i] + (alias if (i, j) == (3, 4) else 0)),
                  0.95, info) for i, j in pairs]
    bad = pairs.index((3, 4))
    placement = solve_positions(nominal, links)
    assert placement.residual_px[bad] > 0.3 and bad not in placement.dropped

    def refine(i, j, start):
        # The optimum nearest the start: the truth, or its alias 0.9 px away in y.
        best = min((truth[j] - truth[i], truth[j] - truth[i] + alias), key=lambda c: np.hypot(*(c - start)))
        return PairOffset(tuple(best), 0.95, 1000, "", info)

    links, placement = settled(nominal, links, placement, refine, min_score=0.6, max_residual_px=1.0)
    np.testing.assert_allclose(links[bad].offset_px, truth[4] - truth[3])
    positions = placement.positions_px - placement.positions_px[0]
    np.testing.assert_allclose(positions, truth - truth[0], atol=1e-3)
