"""The schedule against docs/method.md §6.2 (Wan 1.3B: r0 = 32, T = 444, 2667 steps, warm-up 0)."""

import math

import pytest
import torch

from qvgen.auxiliary import AuxConfig, DecaySchedule, fill_gamma_, gamma_values, rank_at

WAN = DecaySchedule(initial_rank=32, period=444)

# (step, phase, rank, alpha, boundary): docs/method.md §6.2 table, phase starts/ends and α at s = 0, 1, 222, 443.
WAN_TIMELINE = [
    (0, 0, 32, 1.0, False),
    (1, 0, 32, 0.99999, False),
    (222, 0, 32, 0.5, False),
    (443, 0, 32, 1.25e-5, False),
    (444, 1, 16, 1.0, True),
    (445, 1, 16, 0.99999, False),
    (666, 1, 16, 0.5, False),
    (887, 1, 16, 1.25e-5, False),
    (888, 2, 8, 1.0, True),
    (1331, 2, 8, 1.25e-5, False),
    (1332, 3, 4, 1.0, True),
    (1554, 3, 4, 0.5, False),
    (1775, 3, 4, 1.25e-5, False),
    (1776, 4, 2, 1.0, True),
    (1998, 4, 2, 0.5, False),
    (2219, 4, 2, 1.25e-5, False),
    (2220, 5, 1, 1.0, True),
    (2442, 5, 1, 0.5, False),
    (2663, 5, 1, 1.25e-5, False),
    (2664, 6, 0, 0.0, True),
    (2665, 6, 0, 0.0, False),
    (2666, 6, 0, 0.0, False),
]


@pytest.mark.parametrize(("step", "phase", "rank", "alpha", "boundary"), WAN_TIMELINE)
def test_rank_at_matches_the_wan_timeline_of_method_6_2(step, phase, rank, alpha, boundary):
    state = rank_at(step, WAN)
    assert (state.step, state.phase, state.rank, state.boundary) == (step, phase, rank, boundary)
    assert state.alpha == pytest.approx(alpha, rel=1e-2, abs=1e-6)
    assert state.removed == (rank == 0)


def test_rank_at_alpha_at_s_0_1_222_443_is_the_reference_value():
    alphas = [rank_at(s, WAN).alpha for s in (0, 1, 222, 443)]
    assert alphas[0] == 1.0
    assert alphas[1] == pytest.approx(0.99999, abs=5e-6)
    assert alphas[2] == pytest.approx(0.5, abs=1e-12)
    assert alphas[3] == pytest.approx(1.25e-5, rel=1e-2)


# phase -> (components with γ = 1, components with γ = α, first component with γ = 0), docs/method.md §6.2.
WAN_GAMMA = {0: (range(16), range(16, 32), 32), 1: (range(8), range(8, 16), 16), 2: (range(4), range(4, 8), 8),
             3: (range(2), range(2, 4), 4), 4: (range(1), range(1, 2), 2), 5: (range(0), range(0, 1), 1)}  # fmt: skip


@pytest.mark.parametrize("phase", sorted(WAN_GAMMA))
@pytest.mark.parametrize("s", [0, 222, 443])
def test_gamma_matches_the_wan_timeline_at_boundaries_and_mid_period(phase, s):
    state = rank_at(444 * phase + s, WAN)
    gamma = gamma_values(state, 32)
    ones, decaying, first_zero = WAN_GAMMA[phase]
    assert torch.equal(gamma[list(ones)], torch.ones(len(ones)))
    assert torch.equal(gamma[list(decaying)], torch.full((len(decaying),), state.alpha, dtype=torch.float32))
    assert torch.equal(gamma[first_zero:], torch.zeros(32 - first_zero))


def test_gamma_is_all_zero_once_phi_is_removed():
    assert torch.equal(gamma_values(rank_at(2664, WAN), 32), torch.zeros(32))


def test_rank_at_halves_rank_at_each_period_boundary_for_cogvideox():
    cog = DecaySchedule(initial_rank=32, period=333)
    starts = [s for s in range(2000) if rank_at(s, cog).boundary]
    assert starts == [333, 666, 999, 1332, 1665, 1998]
    assert [rank_at(s, cog).rank for s in [0, *starts]] == [32, 16, 8, 4, 2, 1, 0]


def test_rank_at_linear_fade_is_one_minus_s_over_t():
    sched = DecaySchedule(initial_rank=4, period=10, fade="linear")
    assert [rank_at(s, sched).alpha for s in range(10)] == pytest.approx([1 - s / 10 for s in range(10)])
    assert rank_at(10, sched).alpha == 1.0


def test_rank_at_keeps_full_rank_and_alpha_one_during_warm_up():
    sched = DecaySchedule(initial_rank=8, period=5, warm_up=3)
    for step in range(3):
        state = rank_at(step, sched)
        assert (state.phase, state.rank, state.alpha, state.boundary) == (-1, 8, 1.0, False)
    assert (rank_at(3, sched).phase, rank_at(3, sched).boundary) == (0, False)
    assert rank_at(8, sched).boundary and rank_at(8, sched).rank == 4


def test_rank_at_handles_a_rank_that_is_not_a_power_of_two():
    sched = DecaySchedule(initial_rank=24, period=2)
    assert [rank_at(2 * k, sched).rank for k in range(6)] == [24, 12, 6, 3, 1, 0]
    gamma = gamma_values(rank_at(7, sched), 24)  # rank 3, kept 1, decaying 2
    alpha = rank_at(7, sched).alpha
    assert gamma[:4].tolist() == pytest.approx([1.0, alpha, alpha, 0.0])


def test_rank_at_is_a_pure_function_of_the_step():
    # a resumed run asks for its step out of order, from a schedule reloaded from its config file
    steps = list(range(0, 2700, 37))
    walked = [rank_at(s, WAN) for s in steps]
    reloaded = DecaySchedule.model_validate_json(WAN.model_dump_json())
    assert [rank_at(s, reloaded) for s in reversed(steps)] == walked[::-1]
    assert len({state.rank for state in walked}) == 7  # the steps cross every boundary: 32 … 1, 0
    assert math.isclose(rank_at(444 + 17, WAN).alpha, rank_at(17, WAN).alpha)


def test_rank_at_rejects_a_negative_step():
    with pytest.raises(ValueError, match="step must be >= 0"):
        rank_at(-1, WAN)


def test_fill_gamma_writes_in_place():
    gamma = torch.full((8,), 7.0)
    out = fill_gamma_(gamma, rank_at(2, DecaySchedule(initial_rank=8, period=4)))
    assert out is gamma
    assert gamma.tolist() == [1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5]


def test_rank_at_accepts_the_whole_aux_config():
    assert rank_at(900, AuxConfig(decay=WAN)) == rank_at(900, WAN)
