"""Boundary configs for Φ and its rank-decay schedule (docs/method.md §5–6)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from qvgen.core import Frozen

__all__ = ["AuxConfig", "DecaySchedule", "num_periods", "required_steps", "validate_against_steps"]


class DecaySchedule(Frozen):
    """The rank-decay schedule: everything `rank_at` needs, nothing else (docs/method.md §6.1)."""

    initial_rank: Annotated[int, Field(ge=1, le=4096)] = 32
    """r0, the rank Φ starts with; each layer clips it to min(out_features, in_features)."""
    period: Annotated[int, Field(ge=1)] = 444
    """T_α, steps per phase; the rank halves at every multiple of it (Wan 444, CogVideoX 333)."""
    warm_up: Annotated[int, Field(ge=0)] = 0
    """Steps before the first phase; Φ stays at rank r0 with γ = 1 during them."""
    fade: Literal["cosine", "linear"] = "cosine"
    """How α goes from 1 to 0 inside a period: ½(1 + cos(π s / T)) or 1 − s / T."""


class AuxConfig(Frozen):
    """Φ = L·diag(γ)·R on every quantized linear, and how it is decayed to nothing."""

    decay: DecaySchedule = DecaySchedule()
    """Rank and timing of the decay."""
    mode: Literal["resvd", "columns"] = "resvd"
    """`resvd`: at each boundary re-SVD the kept half in fp32 and shrink L, R physically (the paper's
    intent). `columns`: the reference run's behaviour (docs/method.md §6.3) — γ masks trailing columns in the
    initial SVD order, no re-SVD, L and R keep width r0 until Φ is removed."""
    init_iters: Annotated[int, Field(ge=1, le=50)] = 1
    """1: Φ = SVD_r(W − Q(W)). >1: alternate that SVD with a re-fit of the weight quantizer's scales to
    W − Φ, keeping Q applied to W as in the forward pass (docs/method.md B8, done consistently)."""
    optimizer_state: Literal["reset", "slice"] = "reset"
    """Adam moments of L, R at a shrink. `reset`: dropped (the re-SVD rotates the basis the moments were
    measured in). `slice`: the moments of the kept columns are carried over (exact in `columns` mode)."""


def num_periods(schedule: DecaySchedule) -> int:
    """Phases until Φ is gone: r0 → r0//2 → … → 1 → 0 takes floor(log2 r0) + 1 periods."""
    return schedule.initial_rank.bit_length()


def removal_step(schedule: DecaySchedule) -> int:
    """The step at which `rank_at` first returns rank 0 and Φ is deleted."""
    return schedule.warm_up + num_periods(schedule) * schedule.period


def required_steps(schedule: DecaySchedule) -> int:
    """The least `max_steps` whose last step (max_steps − 1) already runs without Φ."""
    return removal_step(schedule) + 1


def validate_against_steps(cfg: AuxConfig | DecaySchedule, max_steps: int) -> None:
    """Raise ValueError if Φ would still exist at the last of `max_steps` training steps."""
    schedule = cfg.decay if isinstance(cfg, AuxConfig) else cfg
    needed = required_steps(schedule)
    if max_steps >= needed:
        return
    n = num_periods(schedule)
    fitting = (max_steps - 1 - schedule.warm_up) // n
    hint = f" or aux.decay.period <= {fitting}" if fitting >= 1 else ""
    raise ValueError(
        f"aux.decay: Φ with initial_rank={schedule.initial_rank} needs {n} periods of period={schedule.period} "
        f"after warm_up={schedule.warm_up} and is only removed at step {removal_step(schedule)}, but "
        f"max_steps={max_steps} ends at step {max_steps - 1}; the trained model would keep Φ. "
        f"Set max_steps >= {needed}{hint}."
    )
