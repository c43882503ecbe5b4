"""Boundary events of the rank decay: re-SVD and shrink, optimizer-state carry-over, removal at rank 0."""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping

import torch
import torch.distributed as dist
from torch import Tensor, nn

from qvgen.auxiliary.lowrank import LowRankBranch, resvd_factors
from qvgen.auxiliary.schedule import RankState, fill_gamma_

__all__ = ["apply_"]

Slicer = Callable[[Tensor], Tensor]


def apply_(
    branches: MutableMapping[str, LowRankBranch],
    state: RankState,
    optimizer: torch.optim.Optimizer | None = None,
) -> bool:
    """Bring Φ to `state` (call once per step, before the forward). Returns True if parameters changed.

    Every step: one in-place write of the shared γ (no loop over modules). When the rank drops:
    - `resvd` mode: per branch, the kept columns L[:, :r], R[:r] are re-decomposed by SVD in float32 on the
      master Parameters themselves (what the optimizer holds, so no fp32 copy can undo it — B4), and L, R
      are replaced by new Parameters of width r. Under torch.distributed the result is broadcast from rank
      0. The optimizer's param_groups are pointed at the new Parameters and their Adam state is reset or
      sliced (`AuxConfig.optimizer_state`).
    - `columns` mode: nothing but γ changes (the reference behaviour).
    - rank 0 (both modes): each Φ is unplugged from its QuantLinear, its Parameters leave the optimizer
      with their state, and `branches` is emptied.
    A True return means Parameter objects were replaced or removed: re-wrap DDP/FSDP (or rebuild the
    optimizer if none was passed). Jumping several phases at once (resume) is allowed; growing is not.
    """
    if not branches:
        if state.rank != 0:
            raise ValueError(f"apply_: Φ was already removed but step {state.step} has rank {state.rank}")
        return False
    group = next(iter(branches.values())).group
    if state.rank == group.rank:
        fill_gamma_(group.values, state)
        return False
    if state.rank > group.rank:
        raise ValueError(
            f"apply_: Φ is at rank {group.rank} and cannot grow to rank {state.rank} (step {state.step}); "
            "to resume, build the model, attach_, apply_ the resume step, then load the checkpoint"
        )
    changed = False
    if state.rank == 0:
        replaced: dict[int, tuple[nn.Parameter | None, Slicer | None]] = {}
        for name, branch in branches.items():
            if branch.owner is None:
                raise ValueError(
                    f"apply_: branch {name!r} was not plugged in by attach_ and cannot be removed"
                )
            branch.owner.register_module("lowrank", None)
            replaced[id(branch.L)] = (None, None)
            replaced[id(branch.R)] = (None, None)
        branches.clear()
        changed = True
    elif group.mode == "resvd":
        # every new factor pair first, then the swap: a failed SVD leaves Φ and the optimizer untouched
        factors = {}
        for name, branch in branches.items():
            if branch.width > state.rank:
                try:
                    factors[name] = _resvd(branch, state.rank)
                except RuntimeError as e:
                    raise RuntimeError(
                        f"apply_: re-SVD of branch {name!r} to rank {state.rank} at step {state.step}: {e}"
                    ) from e
        replaced = {}
        for name, (L, R) in factors.items():
            replaced.update(_swap_factors_(branches[name], L, R))
        changed = bool(replaced)
    else:
        replaced = {}
    if optimizer is not None and replaced:
        _update_optimizer_(optimizer, replaced, keep_state=group.optimizer_state == "slice")
    group.rank = state.rank
    fill_gamma_(group.values, state)
    return changed


@torch.no_grad()
def _resvd(branch: LowRankBranch, rank: int) -> tuple[Tensor, Tensor]:
    """The balanced SVD factors of L[:, :rank] @ R[:rank] (kept half, γ = 1 there), identical on every rank."""
    L, R = resvd_factors(branch.L[:, :rank], branch.R[:rank], like=branch.L[:, :rank].float())
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast(L, src=0)  # every rank holds the identical factors, whatever its SVD backend
        dist.broadcast(R, src=0)
    return L, R


def _swap_factors_(
    branch: LowRankBranch, L: Tensor, R: Tensor
) -> dict[int, tuple[nn.Parameter | None, Slicer | None]]:
    """Replace the branch's L, R by new Parameters holding the given factors; map old ids to them."""
    old_L, old_R = branch.L, branch.R
    rank = L.shape[1]
    branch.L = nn.Parameter(L.to(old_L.dtype), requires_grad=old_L.requires_grad)
    branch.R = nn.Parameter(R.to(old_R.dtype), requires_grad=old_R.requires_grad)
    return {
        id(old_L): (branch.L, lambda t: t[:, :rank].clone()),
        id(old_R): (branch.R, lambda t: t[:rank].clone()),
    }


def _update_optimizer_(
    optimizer: torch.optim.Optimizer,
    replaced: Mapping[int, tuple[nn.Parameter | None, Slicer | None]],
    *,
    keep_state: bool,
) -> None:
    """Point param_groups at the new Parameters (or drop removed ones) and move or drop their state.

    keep_state=False (`reset`): the new Parameters start with empty state, like freshly added ones.
    keep_state=True (`slice`): every state tensor shaped like the old Parameter is sliced like it; scalars
    (Adam's step) are kept.
    """
    state = optimizer.state
    for group in optimizer.param_groups:
        params: list[nn.Parameter] = []
        for p in group["params"]:
            if id(p) not in replaced:
                params.append(p)
                continue
            new, slicer = replaced[id(p)]
            old_state = state.pop(p, None)
            if new is None:
                continue
            params.append(new)
            if keep_state and old_state and slicer is not None:
                state[new] = {
                    k: slicer(v) if isinstance(v, Tensor) and v.shape == p.shape else v
                    for k, v in old_state.items()
                }
        group["params"] = params
