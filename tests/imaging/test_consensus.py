"""Choosing which measured offsets to believe: settling links that miss the placement."""

import numpy as np

from imaging.consensus import in_raster_order, mrf_links, settled
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



def test_a_link_inferred_on_the_flank_of_its_peak_is_refined_again_from_the_peak():
    # A row of 8 frames where the stage put them. The last pair's overlap holds only parallel
    # lines: its NCC is a plateau along x (held across the lines, not along them), rising by a
    # hair to an optimum 1.7 px right of the stage's offset. The joint inference leaves that
    # frame where the stage put it; the refinement from there would move 1.7 px, further than a
    # refinement is trusted (1.5 px: register_pair's "unrefined"). From the surface's peak a
    # pixel over it climbs 0.7 px to the optimum, and the link is kept.
    n, step = 8, 200.0
    nominal = np.array([(step * k, 0.0) for k in range(n)])
    optimum = np.array([step + 1.7, 0.0])
    dy, dx = np.mgrid[-10:11, -10:11].astype(float)
    broad = (0.95 - 0.003 * (dx**2 + dy**2)).astype(np.float32)  # blurred frames: wide peaks
    plateau = np.where(np.abs(dx) <= 4, 0.95 - 1e-6 * (dx - 2.0) ** 2 - 0.003 * dy**2, 0.3).astype(np.float32)
    links = [Link(k, k + 1, (step, 0.0), (step, 0.0), 0.95, surface=broad, surface_base=(int(step), 0))
             for k in range(n - 2)]
    # as the search left it: on the plateau, refused for the same reason
    links.append(Link(n - 2, n - 1, (step, 0.0), (step, 0.0), 0.95, reason="unrefined", surface=plateau,
                      surface_base=(int(step), 0)))

    def register(i, j, start, radius):
        # refinement alone (radius 0), to the nearest optimum; refused, as register_pair refuses, a long way off
        start = np.asarray(start, float)
        found = optimum if j == n - 1 else np.array([step, 0.0])
        if np.any(np.abs(found - start) > 1.5):
            return PairOffset(tuple(start), 0.95, 1000, "unrefined", ((4.0, 0.0), (0.0, 4.0)))
        return PairOffset(tuple(found), 0.95, 1000, "", ((400.0, 0.0), (0.0, 400.0)))

    measured, inferred_px, _ = mrf_links(nominal, links, register)
    np.testing.assert_array_equal(inferred_px, nominal)  # the plateau's middle: where the stage put it
    assert measured[-1].reason == ""
    np.testing.assert_allclose(measured[-1].offset_px, optimum)


def test_links_go_to_the_joint_inference_in_raster_order_however_the_scan_was_taken():
    # a 2×2 serpentine scan: taken (0, 0), (0, 1), (1, 1), (1, 0); rows 100 px apart, y a little off
    nominal = np.array([[0.0, 0.0], [100.0, 0.4], [100.0, 100.0], [0.0, 99.7]])
    links = [Link(i, j, tuple(nominal[j] - nominal[i]), (0.0, 0.0), 1.0) for i, j in ((0, 1), (1, 2), (0, 2), (2, 3), (0, 3), (1, 3))]
    ordered = [(link.i, link.j) for link in in_raster_order(nominal, links, 100.0)]
    # raster ranks: frame 0 → 0, 1 → 1, 3 → 2, 2 → 3
    assert ordered == [(0, 1), (0, 3), (1, 3), (0, 2), (1, 2), (2, 3)]
