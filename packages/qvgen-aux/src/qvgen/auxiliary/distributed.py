"""Φ under data parallelism when it is kept out of the wrapper (FSDP's ignored modules).

Sharding wrappers (FSDP1/FSDP2, ZeRO) keep their own flat or sharded copies of the parameters they manage,
so a re-SVD written into a module's tensors can be silently undone (docs/method.md §6.3, B4), and shapes cannot
change. Φ is small (≈3 % of the weights), so it is cheapest kept replicated and outside the wrapper:
FSDP gets `ignored_modules=LOWRANK_MODULES` (accelerate's `FullyShardedDataParallelPlugin` accepts the
regex), the optimizer holds the plain L, R, `apply_` shrinks them directly, and `all_reduce_grads_`
averages their gradients after `backward()`. Under DDP the alternative is to re-wrap after `apply_`
returns True; both are tested on two CPU processes.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.distributed as dist

from qvgen.auxiliary.lowrank import LowRankBranch

__all__ = ["LOWRANK_MODULES", "all_reduce_grads_"]

LOWRANK_MODULES = r".*\.lowrank"
"""Regex (full match on module names) selecting every Φ, e.g. for FSDP's `ignored_modules`."""


@torch.no_grad()
def all_reduce_grads_(branches: Mapping[str, LowRankBranch], group: dist.ProcessGroup | None = None) -> None:
    """Average the gradients of every L, R over the process group in one collective (no-op if single)."""
    if not branches or not (dist.is_available() and dist.is_initialized()):
        return
    world = dist.get_world_size(group)
    if world == 1:
        return
    grads = []
    for branch in branches.values():
        for p in (branch.L, branch.R):
            if p.grad is None:
                raise RuntimeError(
                    f"all_reduce_grads_: a Φ parameter of shape {tuple(p.shape)} has no gradient; call it "
                    "after backward() and only while every Φ takes part in the forward"
                )
            grads.append(p.grad)
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, group=group)
    flat /= world
    torch._foreach_copy_(
        grads, [part.view_as(g) for g, part in zip(grads, flat.split([g.numel() for g in grads]))]
    )
