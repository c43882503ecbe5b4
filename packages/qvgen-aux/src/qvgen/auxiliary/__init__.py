"""QVGen's auxiliary low-rank modules Φ = L·diag(γ)·R and their rank-decay schedule (docs/method.md §5–6).

branches = attach_(model, cfg)                  # after qvgen.quant.initialize_(model)
for step in range(max_steps):
    apply_(branches, rank_at(step, cfg.decay), optimizer)   # before the forward
"""

from qvgen.auxiliary.attach import attach_, lowrank_parameters, phi_disabled
from qvgen.auxiliary.config import (
    AuxConfig,
    DecaySchedule,
    num_periods,
    required_steps,
    validate_against_steps,
)
from qvgen.auxiliary.decay import apply_
from qvgen.auxiliary.distributed import LOWRANK_MODULES, all_reduce_grads_
from qvgen.auxiliary.lowrank import LowRankBranch, PhiGroup, balanced_factors, resvd_factors
from qvgen.auxiliary.schedule import RankState, fill_gamma_, gamma_values, rank_at

__all__ = [
    "LOWRANK_MODULES",
    "AuxConfig",
    "DecaySchedule",
    "LowRankBranch",
    "PhiGroup",
    "RankState",
    "all_reduce_grads_",
    "apply_",
    "attach_",
    "balanced_factors",
    "fill_gamma_",
    "gamma_values",
    "lowrank_parameters",
    "num_periods",
    "phi_disabled",
    "rank_at",
    "required_steps",
    "resvd_factors",
    "validate_against_steps",
]
