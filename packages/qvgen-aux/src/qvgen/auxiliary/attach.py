"""Attach Φ to every QuantLinear of a model, list its parameters, switch it off for previews."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from qvgen.auxiliary.config import AuxConfig
from qvgen.auxiliary.lowrank import LowRankBranch, PhiGroup, balanced_factors
from qvgen.quant import LSQPlusWeight, QuantLinear, quantized_layers, shrink_grid_search

__all__ = ["attach_", "lowrank_parameters", "phi_disabled"]


def attach_(model: nn.Module, cfg: AuxConfig) -> dict[str, LowRankBranch]:
    """Give every QuantLinear of `model` a Φ fitted to its weight quantization error; return them by name.

    Φ = SVD_r(W − Q(W)) in float32 with the balanced √Σ split, r = min(r0, out, in) (docs/method.md §5.2).
    With `cfg.init_iters > 1` the weight quantizer's scale/zero point and Φ are fitted alternately, each
    step lowering ‖W − Q(W) − Φ‖ for the Q(W) the forward pass really computes (B8). Run
    `qvgen.quant.initialize_(model)` first, and build the optimizer after this call.
    """
    layers = quantized_layers(model)
    if not layers:
        raise ValueError("attach_: the model has no QuantLinear; call `qvgen.quant.prepare_` first")
    r0 = cfg.decay.initial_rank
    group = PhiGroup(r0, cfg.mode, cfg.optimizer_state)
    branches: dict[str, LowRankBranch] = {}
    for name, layer in layers.items():
        if layer.lowrank is not None:
            raise ValueError(f"attach_: layer {name!r} already has a low-rank branch; attach_ once per model")
        try:
            L, R = _fit(layer, min(r0, layer.out_features, layer.in_features), cfg.init_iters)
        except RuntimeError as e:
            raise RuntimeError(f"attach_: layer {name!r}: {e}") from e
        branch = LowRankBranch(L.to(layer.weight.device), R.to(layer.weight.device), group)
        object.__setattr__(branch, "owner", layer)  # plain back-reference, not a submodule
        layer.lowrank = branch
        branches[name] = branch
    group.values = group.values.to(next(iter(branches.values())).L.device)
    return branches


def _fit(layer: QuantLinear, rank: int, iters: int) -> tuple[Tensor, Tensor]:
    """Φ factors for one layer; iters > 1 alternates with `_refit_weight_range_`."""
    W = layer.weight.detach().float()
    L, R = balanced_factors(W - layer.quantized_weight().float(), rank)
    for _ in range(iters - 1):
        _refit_weight_range_(layer, W - L @ R)
        L, R = balanced_factors(W - layer.quantized_weight().float(), rank)
    return L, R


@torch.no_grad()
def _refit_weight_range_(layer: QuantLinear, target: Tensor) -> None:
    """Per row, pick the quantizer range that makes Q(W) closest to `target` = W − Φ.

    Q is still applied to W itself (as in the forward pass), only its scale/zero point move. The
    candidates are the current range and quant's shrink grid (`qvgen.quant.shrink_grid_search`, with the
    LSQ+ config's own `grid`/`max_shrink`), so the error never grows. Quantizers without a learnable
    range (min-max RTN) are left alone.
    """
    quantizer = layer.weight_quantizer
    cfg = quantizer.cfg
    if not quantizer.scale.requires_grad or not isinstance(cfg, LSQPlusWeight):
        return
    W = layer.weight.detach().float()

    def error(scale: Tensor, zero: Tensor) -> Tensor:
        quantizer.scale.copy_(scale)
        quantizer.zero_point.copy_(zero)
        return (quantizer(W).float() - target).pow(2).sum(dim=1, keepdim=True)

    current = quantizer.scale.detach().clone(), quantizer.zero_point.detach().clone()
    best_scale, best_zero = shrink_grid_search(
        W,
        quantizer.bits,
        error,
        grid=cfg.grid,
        max_shrink=cfg.max_shrink,
        incumbent=(error(*current), *current),
    )
    quantizer.scale.copy_(best_scale)
    quantizer.zero_point.copy_(best_zero)


def lowrank_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every L and R currently attached under `model` (empty once Φ is removed); for optimizer groups."""
    return [p for m in model.modules() if isinstance(m, LowRankBranch) for p in m.parameters()]


@contextmanager
def phi_disabled(model: nn.Module) -> Iterator[None]:
    """Run `model` as a plain quantized model (Φ unplugged) inside the block; Φ comes back untouched."""
    unplugged = [
        (layer, layer.lowrank)
        for layer in model.modules()
        if isinstance(layer, QuantLinear) and isinstance(layer.lowrank, LowRankBranch)
    ]
    for layer, _ in unplugged:
        layer.lowrank = None
    try:
        yield
    finally:
        for layer, branch in unplugged:
            layer.lowrank = branch
