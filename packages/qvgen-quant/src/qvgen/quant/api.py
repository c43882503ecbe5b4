"""Entry points: `prepare_` (module swap through torchao's `quantize_`), `initialize_`, parameter groups."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torchao.core.config import AOBaseConfig
from torchao.quantization import quantize_, register_quantize_module_handler
from tqdm.auto import tqdm

from qvgen.quant.config import QuantConfig
from qvgen.quant.fake_quant import ActivationQuantizer
from qvgen.quant.linear import QuantLinear
from qvgen.quant.roles import LayerRole, matches_any, resolve_role
from qvgen.quant.timestep import attach_timestep_context_

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class QVGenFakeQuantConfig(AOBaseConfig):
    """torchao `quantize_` config: swap each selected `nn.Linear` for a `QuantLinear` of one role."""

    quant: QuantConfig
    role: LayerRole = LayerRole.other


@register_quantize_module_handler(QVGenFakeQuantConfig)
def _fake_quant_transform(module: nn.Module, config: QVGenFakeQuantConfig) -> nn.Module:
    if not isinstance(module, nn.Linear):
        raise TypeError(f"QVGenFakeQuantConfig applies to nn.Linear, got {type(module).__name__}")
    return QuantLinear.from_linear(module, config.quant, config.role)


def _is_swappable_linear(module: nn.Module) -> bool:
    # nn.MultiheadAttention reads out_proj.weight directly (NonDynamicallyQuantizableLinear): leave it.
    return isinstance(module, nn.Linear) and not isinstance(
        module, nn.modules.linear.NonDynamicallyQuantizableLinear
    )


def plan_quantization(
    model: nn.Module,
    cfg: QuantConfig,
    *,
    layer_roles: Mapping[str, LayerRole] = {},
    keep_high_precision: Sequence[str] = (),
) -> dict[str, LayerRole]:
    """Module name -> role of every Linear `prepare_` would swap (high-precision globs and skipped roles out)."""
    roles = {}
    for glob, role in layer_roles.items():
        try:
            roles[glob] = LayerRole(role)
        except ValueError as e:
            raise ValueError(f"layer_roles[{glob!r}] = {role!r} is not a LayerRole") from e
    keep = (*cfg.keep_high_precision, *keep_high_precision)
    plan: dict[str, LayerRole] = {}
    for name, module in model.named_modules():
        if not _is_swappable_linear(module) or matches_any(name, keep):
            continue
        role = resolve_role(name, roles)
        if not cfg.is_skipped(role):
            plan[name] = role
    return plan


def prepare_(
    model: nn.Module,
    cfg: QuantConfig,
    *,
    layer_roles: Mapping[str, LayerRole] = {},
    keep_high_precision: Sequence[str] = (),
    num_train_timesteps: int = 1000,
) -> dict[str, QuantLinear]:
    """Swap the selected `nn.Linear`s of `model` for `QuantLinear`s in place; return name -> layer.

    `layer_roles` maps fnmatch globs on module names to roles (first match wins, else `other`);
    Linears matching `keep_high_precision` or `cfg.keep_high_precision`, or whose role is skipped in
    `cfg.role_overrides`, stay as they are. The swap goes through torchao's `quantize_` with a registered
    handler. Also attaches the shared timestep context to `model`, for timesteps in [0,
    `num_train_timesteps`) (a model family states its own: `ModelFamily.num_train_timesteps`). Call
    `initialize_` next.
    """
    if isinstance(model, nn.Linear):
        raise ValueError(
            "prepare_ swaps submodules in place; wrap a bare nn.Linear, e.g. nn.Sequential(linear)"
        )
    already = sorted(name for name, m in model.named_modules() if isinstance(m, QuantLinear))
    if already:
        raise ValueError(f"model is already prepared ({len(already)} QuantLinear, e.g. {already[0]!r})")
    plan = plan_quantization(model, cfg, layer_roles=layer_roles, keep_high_precision=keep_high_precision)
    by_role: dict[LayerRole, set[str]] = {}
    for name, role in plan.items():
        by_role.setdefault(role, set()).add(name)
    for role, names in by_role.items():
        quantize_(
            model,
            QVGenFakeQuantConfig(quant=cfg, role=role),
            filter_fn=lambda module, fqn, names=names: fqn in names and _is_swappable_linear(module),
        )
    attach_timestep_context_(model, num_train_timesteps)
    layers = quantized_layers(model)
    for name, layer in layers.items():
        layer.label = f"layer {name!r}"
        if isinstance(layer.act_quantizer, ActivationQuantizer):
            layer.act_quantizer.label = f"layer {name!r}: activation quantizer"
    logger.info("prepared %d QuantLinear layers (%d roles)", len(layers), len(by_role))
    return layers


def quantized_layers(model: nn.Module) -> dict[str, QuantLinear]:
    """Module name -> `QuantLinear`, in module order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, QuantLinear)}


def _check_weight(name: str, layer: QuantLinear) -> None:
    w = layer.weight
    if w.dim() != 2 or w.shape[0] == 0 or w.shape[1] == 0:
        raise ValueError(
            f"layer {name!r}: weight of shape {tuple(w.shape)} cannot be quantized per output row"
        )
    if w.is_meta:
        raise ValueError(
            f"layer {name!r}: weight is on the meta device; load or materialise it before initialize_"
        )
    if not w.dtype.is_floating_point:
        raise ValueError(f"layer {name!r}: weight dtype {w.dtype} is not floating point")
    if not bool(torch.isfinite(w).all()):
        bad = int((~torch.isfinite(w)).sum())
        raise ValueError(
            f"layer {name!r}: weight has {bad} NaN/Inf values; fix the checkpoint before quantizing"
        )


@torch.no_grad()
def initialize_(model: nn.Module, *, progress: bool = True) -> None:
    """Calibrate every `QuantLinear`'s weight range (MSE search, or min-max for `MinMaxWeight`).

    Call after `prepare_` and before attaching Φ or building the optimizer. A weight with NaN/Inf or an
    unquantizable shape raises `ValueError` naming the layer.
    """
    layers = quantized_layers(model)
    if not layers:
        raise ValueError("model has no QuantLinear layers: call `qvgen.quant.prepare_(model, cfg)` first")
    with_phi = [name for name, layer in layers.items() if layer.lowrank is not None]
    if with_phi:
        raise ValueError(
            f"layer {with_phi[0]!r} (and {len(with_phi) - 1} more) already has Φ attached; Φ is fitted to "
            "W - Q(W), so call `qvgen.quant.initialize_` before `qvgen.auxiliary.attach_`"
        )
    for name, layer in tqdm(layers.items(), desc="weight ranges", unit="layer", disable=not progress):
        _check_weight(name, layer)
        layer.weight_quantizer.initialize_(layer.weight)


@dataclass(frozen=True, slots=True)
class QuantParams:
    """Trainable parameters of the quantized layers, split for optimizer groups (lrs differ, docs/method.md §3.4, §4)."""

    weights: list[nn.Parameter]
    """Latent weights W of every QuantLinear."""
    weight_qparams: list[nn.Parameter]
    """Weight scales and zero points (trainable ones only; min-max ranges are frozen)."""
    act_clip: list[nn.Parameter]
    """Activation clip logits (lo and hi per layer)."""


def quant_parameter_groups(model: nn.Module) -> QuantParams:
    """The latent weights, weight (s, z) and clip logits of `model`'s QuantLinears (biases are not included)."""
    weights: list[nn.Parameter] = []
    qparams: list[nn.Parameter] = []
    clips: list[nn.Parameter] = []
    for layer in quantized_layers(model).values():
        weights.append(layer.weight)
        wq = layer.weight_quantizer
        qparams += [p for p in (wq.scale, wq.zero_point) if p.requires_grad]
        if isinstance(layer.act_quantizer, ActivationQuantizer):
            clips += [layer.act_quantizer.clip_logit_lo, layer.act_quantizer.clip_logit_hi]
    return QuantParams(weights=weights, weight_qparams=qparams, act_clip=clips)
