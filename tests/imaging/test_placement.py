"""Global placement: exact links are honoured, a bad link is dropped without bending the rest."""

import dataclasses
import math

import numpy as np
import pytest

from imaging import parallel
from imaging.placement import (
    MRF_FLOOR,
    MRF_SHARPNESS,
    Link,
    _joined_blocks,
    _log_probability,
    _MessageKernel,
    _mrf_edges,
    disagreement,
    fit_stage_model,
    mrf_displacements,
    peak_shoulder,
    solve_positions,
    vote_offsets,
)


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


def _with_wrong_link(seed, bad, by):
    """A 3×3 grid's exact links with link ``bad`` measured ``by`` (x, y) px off."""
    nominal, truth = _grid(seed)
    links = _grid_links(truth, nominal)
    links[bad] = Link(links[bad].i, links[bad].j, links[bad].nominal_offset_px,
                      tuple(np.asarray(links[bad].offset_px) + by), 0.97, links[bad].information)
    return nominal, truth, links


def test_one_wrong_link_is_dropped_and_does_not_bend_the_mosaic():
    nominal, truth, links = _with_wrong_link(1, bad=5, by=(7.0, -6.0))
    placement = solve_positions(nominal, links)
    assert placement.dropped == {5: "inconsistent"}
    assert _aligned_error(placement.positions_px, truth).max() < 1e-3


def test_a_frame_held_only_along_parallel_lines_stays_at_the_prior_across_them():
    # Frame 2 is linked to 0 and 1 by lenses of horizontal-ish lines: each pins x only, along
    # directions 1° apart, and they disagree by 7 px. Two such nearly parallel constraints meet
    # hundreds of px away; the placement must leave y to the prior (the joint inference's
    # whole-pixel guess), not to the links' disagreement.
    truth = np.array([[0.0, 0.0], [0.0, 90.0], [90.0, 40.0]])
    nominal = truth + [[0.0, 0.0], [2.0, -3.0], [4.0, 5.0]]
    full = ((400.0, 0.0), (0.0, 400.0))

    def along_x(angle_deg):
        u = np.array([math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))])
        return tuple(map(tuple, (200.0 * np.outer(u, u)).tolist()))

    links = [Link(0, 1, tuple(nominal[1] - nominal[0]), tuple(truth[1] - truth[0]), 0.95, full),
             Link(0, 2, tuple(nominal[2] - nominal[0]), tuple(truth[2] - truth[0] + (3.5, 0.0)), 0.95, along_x(8.0)),
             Link(1, 2, tuple(nominal[2] - nominal[1]), tuple(truth[2] - truth[1] - (3.5, 0.0)), 0.95, along_x(9.0))]
    guess = truth + [[0.0, 0.0], [0.0, 0.0], [1.0, -2.0]]
    placement = solve_positions(nominal, links, prior_xy_px=guess, prior_weight=0.1, max_residual_px=10.0)
    assert _aligned_error(placement.positions_px, truth, [0, 1]).max() < 1e-2
    assert np.hypot(*(placement.positions_px[2] - placement.positions_px[0] - guess[2])) < 4.0


def test_a_link_is_judged_only_along_the_directions_it_pins():
    # Link 0-1 is a lens of horizontal lines: it pins y only, and its x is wherever the
    # refinement stopped along them (3 px off). Link 1-4 is 4 px wrong in y. Measured in all
    # directions, 0-1 missed most and went, its y with it, leaving 1-4 to put frame 1 4 px off.
    nominal, truth = _grid(3)
    links = _grid_links(truth, nominal)
    tilt = math.radians(0.2)  # a hair off horizontal, as measured lines are
    across = np.array([-math.sin(tilt), math.cos(tilt)])
    lines = tuple(map(tuple, (1e4 * np.outer(across, across)).tolist()))
    k01 = next(k for k, link in enumerate(links) if (link.i, link.j) == (0, 1))
    k14 = next(k for k, link in enumerate(links) if (link.i, link.j) == (1, 4))
    links[k01] = Link(0, 1, links[k01].nominal_offset_px, tuple(truth[1] - truth[0] + (3.0, 0.0)), 0.99, lines)
    links[k14] = Link(1, 4, links[k14].nominal_offset_px, tuple(truth[4] - truth[1] + (0.0, 4.0)), 0.9,
                      ((400.0, 0.0), (0.0, 100.0)))
    placement = solve_positions(nominal, links)
    assert placement.dropped == {k14: "inconsistent"}
    assert _aligned_error(placement.positions_px, truth).max() < 1e-2


def test_a_link_that_measures_nothing_does_not_shield_a_wrong_one():
    # A blank-ish overlap kept with no information misses by 20 px; it cannot be an outlier (it
    # weighs nothing) and must not stop the search for the one that is.
    nominal, truth, links = _with_wrong_link(4, bad=5, by=(3.0, -2.0))
    links.append(Link(0, 4, tuple(nominal[4] - nominal[0]), tuple(truth[4] - truth[0] + (20.0, 0.0)), 0.7,
                      ((0.0, 0.0), (0.0, 0.0))))
    placement = solve_positions(nominal, links)
    assert placement.dropped == {5: "inconsistent"}
    assert _aligned_error(placement.positions_px, truth).max() < 1e-3


def test_directions_a_link_barely_measures_carry_no_weight():
    from imaging.placement import MIN_INFORMATION, link_weight

    weak = Link(0, 1, (90.0, 0.0), (90.0, 0.0), 0.95, ((0.5 * MIN_INFORMATION, 0.0), (0.0, 400.0)))
    w = link_weight(weak, floor_px=0.05)
    assert w[0, 0] == 0.0 and w[0, 1] == 0.0
    assert w[1, 1] == pytest.approx(400.0 / (1 + 0.05**2 * 400.0))


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


def test_vote_picks_true_peaks_over_aliases_when_the_stage_errs_by_more_than_a_period():
    # 3×3 grid, step 200 px, stage errors up to 25 px per axis (more than the 15 px period of the
    # pattern). Horizontal links see a grating: aliases every 15 px in x, one scoring *higher*
    # than the truth; vertical and diagonal links see unique structure. Only agreement around
    # loops can tell which horizontal peak is true.
    rng = np.random.default_rng(4)
    nominal = np.array([(200.0 * c, 200.0 * r) for r in range(3) for c in range(3)])
    truth = np.round(nominal + rng.uniform(-25, 25, nominal.shape))
    links = []
    for a in range(9):
        for b in range(a + 1, 9):
            dr, dc = b // 3 - a // 3, b % 3 - a % 3
            if max(abs(dr), abs(dc)) != 1:
                continue
            true = truth[b] - truth[a]
            peaks = [(*true, 0.95)]
            if dr == 0:  # grating: aliases one and two periods away, the first one scoring higher
                peaks = [(true[0] + 15, true[1], 0.96), (*true, 0.95), (true[0] - 15, true[1], 0.95),
                         (true[0] + 30, true[1], 0.94)]
            best = max(peaks, key=lambda p: p[2])
            links.append(Link(a, b, tuple(nominal[b] - nominal[a]), best[:2], best[2], alternatives=tuple(peaks)))
    chosen, positions, group = vote_offsets(9, links)
    assert len(set(group.tolist())) == 1
    for k, link in enumerate(links):
        np.testing.assert_allclose(chosen[k], truth[link.j] - truth[link.i], err_msg=f"link {link.i}-{link.j}")
    np.testing.assert_allclose(positions - positions[0], truth - truth[0])


def test_vote_leaves_frames_without_links_in_their_own_group():
    links = [Link(0, 1, (100.0, 0.0), (97.0, 2.0), 0.9)]
    chosen, positions, group = vote_offsets(3, links)
    assert group[0] == group[1] != group[2]
    np.testing.assert_allclose(chosen[0], (97.0, 2.0))
    np.testing.assert_allclose(positions[1] - positions[0], (97.0, 2.0))


def _surface(offsets_scores, nominal, radius=45, background=0.2):
    """NCC surface over nominal ± radius with a Gaussian bump (σ 1.5 px) at each (x, y, ncc)."""
    base = (int(round(nominal[0])), int(round(nominal[1])))
    grid = np.arange(-radius, radius + 1)
    surface = np.full((grid.size, grid.size), background, np.float32)
    for x, y, score in offsets_scores:
        bump = np.exp(-0.5 * (((grid[None, :] + base[0] - x) ** 2) + ((grid[:, None] + base[1] - y) ** 2)) / 1.5**2)
        surface = np.maximum(surface, background + (score - background) * bump)
    return surface, base


def test_mrf_finds_true_displacements_when_single_links_prefer_aliases_or_lie():
    # 3×3 grid, step 200 px, stage errors up to 20 px per axis. Horizontal links see a grating
    # whose alias one 15 px period away scores higher than the truth; one link (a defocused
    # overlap) scores its true offset barely above background and a wrong one high. Only the
    # links jointly, around loops of frames, point to the true displacements.
    links, truth, nominal = _aliased_grid(3, np.random.default_rng(6), lying=(4, 7))
    displacement, confidence = mrf_displacements(9, links, radius_px=30, sigma_px=10.0)
    np.testing.assert_array_equal(displacement - displacement[0], (truth - nominal) - (truth - nominal)[0])
    assert confidence.min() > 0.5


@pytest.mark.parametrize("shift", [(0, 0), (2, -1)])
def test_mrf_holds_frames_where_told_and_places_the_others_against_them(shift):
    # The 3×3 aliased grid above, its first row held where the whole inference puts it (or 2 px aside, all
    # three): the other frames come out where the links put them against the held ones; those as given, sure.
    links, _, _ = _aliased_grid(3, np.random.default_rng(6), lying=(4, 7))
    whole, _ = mrf_displacements(9, links, radius_px=30, sigma_px=10.0)
    held = {f: whole[f] + shift for f in (0, 1, 2)}
    displacement, confidence = mrf_displacements(9, links, radius_px=30, sigma_px=10.0, held=held)
    np.testing.assert_array_equal(displacement, whole + shift)
    assert (confidence[:3] == 1.0).all() and confidence.min() > 0.5


@pytest.mark.parametrize("box", [((40, 70), (35, 80)), ((0, 20), (100, 121)), ((5, 121), (0, 121)), ((60, 61), (60, 61))])
def test_message_kernel_equals_the_whole_potentials_convolution(box):
    # ψ = floor + a lift on the link's surface box; the kernel transforms only the box, at its
    # own shorter length, and adds the floor's share floor · Σh: the message must equal the direct
    # sum m(a) = Σ_b h(b) ψ(a − b + 2r) over the whole ψ, wherever the box sits.
    rng = np.random.default_rng(3)
    r, floor = 30, 1e-3
    side = 2 * r + 1
    (r0, r1), (c0, c1) = box
    psi = np.full((4 * r + 1, 4 * r + 1), floor)
    psi[r0:r1, c0:c1] += rng.random((r1 - r0, c1 - c0))
    belief = rng.random((side, side))
    belief /= belief.sum()
    direct = np.zeros((side, side))
    for br in range(side):
        for bc in range(side):
            direct += belief[br, bc] * psi[side - 1 - br: 2 * side - 1 - br, side - 1 - bc: 2 * side - 1 - bc]
    for kernel_psi, h in ((psi, belief), (psi[::-1, ::-1], belief)):
        found = _MessageKernel(kernel_psi - floor, side).apply(h, floor * h.sum())
        expected = direct if kernel_psi is psi else _direct_flipped(psi, h, side)
        np.testing.assert_allclose(found, expected, rtol=2e-5, atol=1e-9)


@pytest.mark.parametrize("corner", [(28, 31), (0, 0), (58, 55)])
def test_message_from_a_belief_on_a_few_states_is_the_same_convolution(corner):
    # a belief settled on a 3×4 patch of states (near the middle, or at the grid's edge where the
    # crop's convolution reaches past it) takes the direct path; a stray state below the
    # negligible mass is left out
    rng = np.random.default_rng(4)
    r, floor = 30, 1e-3
    side = 2 * r + 1
    psi = np.full((4 * r + 1, 4 * r + 1), floor)
    psi[40:70, 35:80] += rng.random((30, 45))
    belief = np.zeros((side, side))
    r0, c0 = min(corner[0], side - 3), min(corner[1], side - 4)
    belief[r0:r0 + 3, c0:c0 + 4] = rng.random((3, 4)) + 0.1
    belief /= belief.sum()
    belief[side - 1 - r0, side - 1 - c0] += 1e-14
    direct = np.zeros((side, side))
    for br, bc in zip(*np.nonzero(belief), strict=True):
        direct += belief[br, bc] * psi[side - 1 - br: 2 * side - 1 - br, side - 1 - bc: 2 * side - 1 - bc]
    kernel = _MessageKernel(psi - floor, side)
    found = kernel.apply(belief, floor * belief.sum())
    np.testing.assert_allclose(found, direct, rtol=1e-6, atol=1e-12)
    assert kernel.lift_at((50, 45)) == pytest.approx(psi[45, 50] - floor, rel=1e-6)
    assert kernel.lift_at((0, 0)) == 0.0


def test_mrf_passes_back_and_forth_where_the_links_order_has_not_settled():
    # 6×6 grid of the aliased gratings above (no lying link). Capped at six sweeps, the links'
    # order alone had not settled and left all 35 frames on aliases; back and forth by turns
    # finds every true displacement within the same cap.
    links, truth, nominal = _aliased_grid(6, np.random.default_rng(7))
    displacement, _ = mrf_displacements(36, links, radius_px=30, sigma_px=10.0, iterations=6)
    np.testing.assert_array_equal(displacement - displacement[0], (truth - nominal) - (truth - nominal)[0])


@pytest.mark.skipif(not parallel.forks(), reason="the back-and-forth run is forked to another core on Linux only")
def test_the_back_and_forth_run_forked_to_another_core_places_as_it_does_inline(monkeypatch):
    # the 6×6 aliased grid above, where only the back-and-forth run finds the truth
    links, _, _ = _aliased_grid(6, np.random.default_rng(7))
    answers = []
    answer = parallel.Forked.result
    monkeypatch.setattr(parallel.Forked, "result", lambda self, timeout_s: answers.append(answer(self, timeout_s)) or answers[-1])
    forked = mrf_displacements(36, links, radius_px=30, sigma_px=10.0, iterations=6)
    monkeypatch.setattr(parallel, "WORKERS", 1)  # no child: run here
    inline = mrf_displacements(36, links, radius_px=30, sigma_px=10.0, iterations=6)
    assert answers[0] is not None and answers[1] is None
    np.testing.assert_array_equal(forked[0], inline[0])
    np.testing.assert_array_equal(forked[1], inline[1])


def test_blocks_settled_apart_are_moved_together_where_that_is_more_probable():
    # 3×6 grid, one clean peak per link; the right three columns settled 3 px right and 2 px up
    # of the left ones, every link across the seam off its peak (as loopy belief propagation left
    # 15×15 scans). Moving the block onto the seam's links is more probable: it is moved, though
    # one of the three (8 → 9) lies, its only peak 12 px off. Once placed right, nothing moves.
    rng = np.random.default_rng(8)
    rows, cols = 3, 6
    nominal = np.array([(200.0 * c, 200.0 * r) for r in range(rows) for c in range(cols)])
    truth = nominal + rng.integers(-8, 9, nominal.shape)
    links = []
    for a in range(rows * cols):
        for b in (a + 1, a + cols):
            if b >= rows * cols or (b == a + 1 and b % cols == 0):
                continue
            nom, true = nominal[b] - nominal[a], truth[b] - truth[a]
            peak = (true[0] + 12, true[1], 0.9) if (a, b) == (8, 9) else (*true, 0.95)
            surface, base = _surface([peak], nom)
            links.append(Link(a, b, tuple(nom), peak[:2], peak[2], surface=surface, surface_base=base))
    edges = _mrf_edges(links, radius_px=30, sharpness=MRF_SHARPNESS, floor=MRF_FLOOR, tolerant=True)
    right = np.arange(rows * cols) % cols >= 3
    true_d = (truth - nominal).astype(int)
    apart = true_d + np.where(right[:, None], (3, -2), (0, 0))
    joined = _joined_blocks(apart, edges, sigma_px=10.0, radius_px=30, floor=MRF_FLOOR)
    np.testing.assert_array_equal(joined - joined[0], true_d - true_d[0])
    assert _joined_blocks(true_d, edges, sigma_px=10.0, radius_px=30, floor=MRF_FLOOR) is None


def test_a_peak_one_pixel_wide_keeps_little_of_its_support_a_pixel_aside():
    # the stitcher infers tolerant from the start where the scan's links peak narrowly (< 0.75)
    bump, base = _surface([(100, 3, 0.95)], (100.0, 0.0))  # σ 1.5 px: already narrow in Fisher z
    grid = np.arange(-45, 46)
    blurred = (0.2 + 0.75 * np.exp(-0.5 * (grid[None, :] ** 2 + (grid[:, None] - 3) ** 2) / 12.0**2)).astype(np.float32)
    spike = np.full_like(bump, 0.2)
    spike[45 + 3, 45] = 0.99

    def shoulder(surface):
        return peak_shoulder(Link(0, 1, (100.0, 0.0), (100.0, 3.0), 0.95, surface=surface, surface_base=base))

    assert shoulder(blurred) > 0.75 > 0.03 > shoulder(bump) > 0.02 > 1e-3 > shoulder(spike)
    assert peak_shoulder(Link(0, 1, (100.0, 0.0), (100.0, 0.0), 0.0, reason="blank")) is None


def _aliased_grid(side, rng, lying=None):
    """Links of a side × side grid (step 200 px, stage errors ≤ 20 px) whose horizontal overlaps
    see a grating: an alias a 15 px period away scores higher than the truth; the link ``lying``
    (a, b) scores its truth barely above background and a wrong offset high."""
    nominal = np.array([(200.0 * c, 200.0 * r) for r in range(side) for c in range(side)])
    truth = nominal + rng.integers(-20, 21, nominal.shape)
    links = []
    for a in range(side * side):
        for b in range(a + 1, side * side):
            dr, dc = b // side - a // side, b % side - a % side
            if max(abs(dr), abs(dc)) != 1:
                continue
            true, nom = truth[b] - truth[a], nominal[b] - nominal[a]
            peaks = [(*true, 0.9)]
            if dr == 0:
                peaks = [(true[0] + 15, true[1], 0.93), (*true, 0.9), (true[0] - 15, true[1], 0.88)]
            if (a, b) == lying:
                peaks = [(*true, 0.3), (true[0] + 20, true[1] - 25, 0.85)]
            surface, base = _surface(peaks, nom)
            best = max(peaks, key=lambda p: p[2])
            links.append(Link(a, b, tuple(nom), best[:2], best[2], surface=surface, surface_base=base))
    return links, truth, nominal


def _direct_flipped(psi, h, side):
    """m(b) = Σ_a h(a) ψ(a − b + 2r): the message against the link's direction."""
    out = np.zeros((side, side))
    for ar in range(side):
        for ac in range(side):
            out += h[ar, ac] * psi[ar + side - 1 - np.arange(side)[:, None], ac + side - 1 - np.arange(side)[None, :]]
    return out


def test_mrf_tolerant_survives_one_pixel_peaks_that_miss_around_loops():
    # 2×2 loop; true offsets have sub-pixel parts and each link's NCC peak is one pixel wide at
    # its own rounding of the truth, so around the loop the integer peaks disagree by a pixel.
    # Taken at face value no assignment of whole-pixel displacements fits all four peaks.
    nominal = np.array([(300.0, 0.0), (0.0, 300.0)])
    position = np.array([(0.0, 0.0), (296.6, 3.4), (3.4, 296.6), (300.4, 300.4)])
    links = []
    for a, b in ((0, 1), (2, 3), (0, 2), (1, 3)):
        true = position[b] - position[a]
        nom = nominal[0] if b - a == 1 else nominal[1]
        base = (int(round(nom[0])), int(round(nom[1])))
        surface = np.full((91, 91), 0.2, np.float32)
        peak = (int(round(true[0])) - base[0] + 45, int(round(true[1])) - base[1] + 45)
        surface[peak[1], peak[0]] = 0.99
        links.append(Link(a, b, tuple(nom), true, 0.99, surface=surface, surface_base=base))
    _, strict = mrf_displacements(4, links, radius_px=30, sigma_px=10.0)
    displacement, confidence = mrf_displacements(4, links, radius_px=30, sigma_px=10.0, tolerant=True)
    prior_only = math.erf(2.5 / (10.0 * math.sqrt(2))) ** 2  # the stitcher retries tolerant below 4×
    assert np.median(strict) < 4 * prior_only < confidence.min()
    stage = np.array([(0.0, 0.0), (300.0, 0.0), (0.0, 300.0), (300.0, 300.0)])
    moved = (displacement - displacement[0]) - (position - stage)
    assert np.abs(moved).max() <= 1.0, displacement


def test_disagreement_is_how_much_better_an_overlap_correlates_elsewhere():
    # link 0→1 searched at offsets (95…105, −5…5): its true peak 0.9 at (100, 0), an alias 0.6 at (103, 0)
    surface = np.full((11, 11), 0.1)
    surface[5, 5], surface[5, 8] = 0.9, 0.6
    surface[0, :] = np.nan  # too little overlap at dy = −5
    links = [Link(0, 1, (100.0, 0.0), (100.0, 0.0), 0.9, surface=surface, surface_base=(100, 0)),
             Link(1, 2, (100.0, 0.0), (100.0, 0.0), 0.9, reason="blank", surface=surface, surface_base=(100, 0))]

    def placed(dx, dy):
        return np.array([[0.0, 0.0], [dx, dy], [200.0, 0.0]])

    np.testing.assert_allclose(disagreement(3, links, placed(100.4, 0.3)), [0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(disagreement(3, links, placed(102.9, 0.0)), [0.3, 0.3, 0])  # on the alias
    np.testing.assert_allclose(disagreement(3, links, placed(101.0, 1.0)), [0, 0, 0], atol=1e-12)  # within a pixel
    np.testing.assert_allclose(disagreement(3, links, placed(100.0, -5.0)), [0.8, 0.8, 0])
    np.testing.assert_allclose(disagreement(3, links, placed(130.0, 0.0)), [1.9, 1.9, 0])  # outside the window
    np.testing.assert_allclose(disagreement(3, links, placed(100.0, -6.4)), [1.9, 1.9, 0])  # only the NaN row near



def test_a_link_over_a_small_lens_counts_less_than_one_over_a_big_lens():
    # 2×2 grid. The side links share a big lens (30 % overlap), where the truth beats a grating's
    # alias (the right column 18 px left) by a little; the diagonal links share only a corner of
    # their circles, whose noisier NCC prefers the alias by more. Weighted alike, the two corners
    # outvote the four sides; weighted by their lenses, they do not.
    nominal = np.array([(200.0 * c, 200.0 * r) for r in range(2) for c in range(2)])
    truth = nominal + np.array([(0, 0), (6, -3), (-4, 5), (3, 4)])
    right = np.array([False, True, False, True])
    links = []
    for a, b in ((0, 1), (2, 3), (0, 2), (1, 3), (0, 3), (1, 2)):
        nom, true = nominal[b] - nominal[a], truth[b] - truth[a]
        alias = (true[0] + (-18 if right[b] else 18), true[1])
        if nom[0] and nom[1]:  # diagonal neighbours
            peaks, lens = [(*true, 0.55), (*alias, 0.8)], 1_000
        else:
            peaks, lens = [(*true, 0.9)] + ([(*alias, 0.86)] if right[a] != right[b] else []), 8_000
        surface, base = _surface(peaks, nom)
        links.append(Link(a, b, tuple(nom), peaks[0][:2], peaks[0][2], surface=surface, surface_base=base,
                          lens_px=lens))
    true_d = (truth - nominal).astype(int)
    alias_d = true_d - np.where(right[:, None], (18, 0), (0, 0))

    def log_p(links, d):
        edges = _mrf_edges(links, radius_px=30, sharpness=MRF_SHARPNESS, floor=MRF_FLOOR, tolerant=False)
        return _log_probability(d, edges, sigma_px=10.0, radius_px=30, floor=MRF_FLOOR)

    assert log_p(links, true_d) > log_p(links, alias_d) + 1
    unknown = [dataclasses.replace(link, lens_px=0) for link in links]  # as before lenses were known
    assert log_p(unknown, alias_d) > log_p(unknown, true_d) + 1
