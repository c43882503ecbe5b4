"""The rank-decay schedule as a pure function of the training step (docs/method.md §6.1–6.2)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import assert_never

import torch
from torch import Tensor

from qvgen.auxiliary.config import AuxConfig, DecaySchedule

__all__ = ["RankState", "fill_gamma_", "gamma_values", "rank_at"]


@dataclass(frozen=True, slots=True)
class RankState:
    """Where the schedule stands at one step. Resuming needs only the step."""

    step: int
    phase: int
    """-1 during warm-up, then k = ⌊(step − warm_up) / T⌋."""
    rank: int
    """Active rank r of the phase (before per-layer clipping); 0 once Φ is removed."""
    alpha: float
    """α(s), the coefficient of the decaying components r//2 … r−1."""
    boundary: bool
    """True on the first step of phases 1, 2, …: the step where re-SVD / shrink / removal happens."""

    @property
    def removed(self) -> bool:
        return self.rank == 0


def rank_at(step: int, schedule: DecaySchedule | AuxConfig) -> RankState:
    """The active rank and α at `step`. With u = step − warm_up, (k, s) = divmod(u, T):

    1. u < 0 (warm-up): rank r0, α = 1, phase −1, no event.
    2. u ≥ 0: phase k, rank r_k = r0 // 2^k (r0 >> k), so 32, 16, 8, 4, 2, 1, then 0.
    3. α(s) = ½·(1 + cos(π·s/T)) for `cosine`, 1 − s/T for `linear` (docs/method.md §5.3); α(0) = 1.
    4. s = 0 and k ≥ 1 is a boundary: the rank halves there (re-SVD of the kept half), or Φ is removed
       when it reaches 0.
    5. rank 0 (k ≥ floor(log2 r0) + 1): Φ is gone, α = 0.

    γ follows from the state (see `gamma_values`): γ_i = 1 for i < r//2, α for r//2 ≤ i < r, 0 beyond.
    """
    if step < 0:
        raise ValueError(f"rank_at: step must be >= 0, got {step}")
    if isinstance(schedule, AuxConfig):
        schedule = schedule.decay
    r0, period = schedule.initial_rank, schedule.period
    u = step - schedule.warm_up
    if u < 0:  # case 1
        return RankState(step=step, phase=-1, rank=r0, alpha=1.0, boundary=False)
    k, s = divmod(u, period)  # case 2
    rank = r0 >> k if k < r0.bit_length() else 0
    boundary = s == 0 and k >= 1  # case 4
    if rank == 0:  # case 5
        return RankState(step=step, phase=k, rank=0, alpha=0.0, boundary=boundary)
    match schedule.fade:  # case 3
        case "cosine":
            alpha = 0.5 * (1.0 + math.cos(math.pi * s / period))
        case "linear":
            alpha = 1.0 - s / period
        case _:
            assert_never(schedule.fade)
    return RankState(step=step, phase=k, rank=rank, alpha=alpha, boundary=boundary)


def fill_gamma_(gamma: Tensor, state: RankState) -> Tensor:
    """Write γ for `state` into `gamma` in place on its own device (no host→device copy, method B5)."""
    with torch.no_grad():
        gamma.zero_()
        gamma[: state.rank].fill_(state.alpha)
        gamma[: state.rank // 2].fill_(1.0)
    return gamma


def gamma_values(state: RankState, width: int) -> Tensor:
    """γ for a branch of `width` components (float32, CPU); the reference for `fill_gamma_`."""
    return fill_gamma_(torch.empty(width), state)
