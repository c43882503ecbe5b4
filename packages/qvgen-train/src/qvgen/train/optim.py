"""AdamW over explicit parameter groups (docs/method.md §8.1) and the warm-up + cosine schedule (§8.2)."""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any, Literal

import torch
from torch import nn

from qvgen.auxiliary import lowrank_parameters
from qvgen.quant import quant_parameter_groups
from qvgen.train.config import OptimConfig

GROUP_NAMES = ("weights", "weight_qparams", "act_clip", "phi", "other")
"""Optimizer groups, in order; each carries its `name` and its own learning rate."""


def param_groups(
    model: nn.Module, cfg: OptimConfig, *, keep_empty: Collection[str] = ()
) -> list[dict[str, Any]]:
    """Split the trainable parameters of `model` into the five named groups (empty ones are dropped,
    except those named in `keep_empty`: a run with Φ always has a `phi` group, so a checkpoint written
    after Φ's removal, whose `phi` group is empty, has the same groups as the optimizer that resumes it).

    Quantized-linear parameters come from `qvgen.quant.quant_parameter_groups`, Φ from
    `qvgen.auxiliary.lowrank_parameters`; every other parameter with `requires_grad` is `other`.
    """
    quant = quant_parameter_groups(model)
    members: dict[str, list[nn.Parameter]] = {
        "weights": list(quant.weights),
        "weight_qparams": list(quant.weight_qparams),
        "act_clip": list(quant.act_clip),
        "phi": list(lowrank_parameters(model)),
    }
    taken: dict[int, str] = {}
    for name, params in members.items():
        for p in params:
            if id(p) in taken:
                raise ValueError(f"a parameter is in both the {taken[id(p)]!r} and {name!r} optimizer groups")
            taken[id(p)] = name
    members["other"] = [p for p in model.parameters() if id(p) not in taken]
    lrs = cfg.lr.model_dump()
    groups = []
    for name in GROUP_NAMES:
        params = [p for p in members[name] if p.requires_grad]
        if params or name in keep_empty:
            groups.append({"name": name, "params": params, "lr": lrs[name], "weight_decay": cfg.weight_decay})
    if not any(g["params"] for g in groups):
        raise ValueError("the model has no trainable parameters; nothing to optimize")
    return groups


def build_optimizer(
    model: nn.Module, cfg: OptimConfig, *, keep_empty: Collection[str] = ()
) -> torch.optim.AdamW:
    """AdamW(β, ε, weight decay from `cfg`) over `param_groups(model, cfg, keep_empty=...)`."""
    return torch.optim.AdamW(
        param_groups(model, cfg, keep_empty=keep_empty),
        betas=cfg.betas,
        eps=cfg.eps,
        weight_decay=cfg.weight_decay,
    )


def warmup_steps(cfg: OptimConfig, max_steps: int) -> int:
    """round(warmup_fraction · max_steps): 267 for 2667 steps, 200 for 2000."""
    return round(cfg.warmup_fraction * max_steps)


def lr_multiplier(
    step: int, *, warmup: int, total: int, schedule: Literal["cosine", "constant"] = "cosine"
) -> float:
    """Factor applied to every group's base lr at optimizer step `step` (0-based).

    1. step < warmup: linear ramp step / warmup (0 at step 0).
    2. `constant`: 1 after warm-up.
    3. `cosine`: ½(1 + cos(π·p)) with p = (step − warmup) / (total − warmup), reaching 0 at `total`.
    """
    if step < warmup:
        return step / warmup
    match schedule:
        case "constant":
            return 1.0
        case "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        case _:
            raise ValueError(f"lr_multiplier: schedule {schedule!r} is not 'cosine' or 'constant'")


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, max_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """`LambdaLR` over `lr_multiplier`; step it once per optimizer step."""
    warmup = warmup_steps(cfg, max_steps)

    def factor(step: int) -> float:
        return lr_multiplier(step, warmup=warmup, total=max_steps, schedule=cfg.schedule)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
