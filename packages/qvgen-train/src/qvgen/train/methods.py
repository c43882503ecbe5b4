"""The baselines' pieces of the recipe: EfficientDM's LoRA, Q-DM's loss, SVDQuant's calibration and fit.

Each is a small function the recipe calls at one visible place (`recipe.py`); the configs and their
rules live in `method_config.py`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from qvgen import quant
from qvgen.train.loss import distill_loss
from qvgen.train.method_config import EfficientDMMethod, QDMMethod


class LoRADelta(nn.Module):
    """EfficientDM's QALoRA branch: returns `up @ down · α/r` `[out, in]`, added to W before Qw.

    `down` starts Kaiming-uniform (bound 1/sqrt(in), as `nn.Linear`), `up` at zero, so the branch starts
    at exactly zero (the reference's `QuantLoRALinear`: loraA Kaiming, loraB zeros).
    """

    def __init__(
        self, in_features: int, out_features: int, rank: int, alpha: float, generator: torch.Generator
    ) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)
        down = (torch.rand(rank, in_features, generator=generator) * 2 - 1) * bound
        self.down = nn.Parameter(down)
        self.up = nn.Parameter(torch.zeros(out_features, rank))
        self.scale = alpha / rank

    def forward(self) -> Tensor:
        return (self.up @ self.down) * self.scale

    def extra_repr(self) -> str:
        return f"rank={self.down.shape[0]}, scale={self.scale:g}"


def attach_lora_(model: nn.Module, method: EfficientDMMethod, seed: int) -> dict[str, LoRADelta]:
    """Give every QuantLinear a LoRA `weight_delta` (rank capped at min(in, out)) and freeze its latent W."""
    generator = torch.Generator().manual_seed(seed)
    branches: dict[str, LoRADelta] = {}
    for name, layer in quant.quantized_layers(model).items():
        if layer.weight_delta is not None:
            raise ValueError(f"layer {name!r} already has a weight delta; attach LoRA once")
        rank = min(method.lora_rank, layer.in_features, layer.out_features)
        delta = LoRADelta(layer.in_features, layer.out_features, rank, method.lora_alpha, generator)
        layer.weight_delta = delta.to(layer.weight.device)
        layer.weight.requires_grad_(False)
        if not method.train_weight_qparams:
            layer.weight_quantizer.scale.requires_grad_(False)
            layer.weight_quantizer.zero_point.requires_grad_(False)
        branches[name] = delta
    return branches


@torch.no_grad()
def merge_lora_(model: nn.Module) -> int:
    """W ← W + up·down·α/r for every QuantLinear with a LoRA delta, then drop the delta; return the count."""
    merged = 0
    for layer in quant.quantized_layers(model).values():
        if isinstance(layer.weight_delta, LoRADelta):
            layer.weight.add_(layer.weight_delta().to(layer.weight.dtype))
            layer.weight_delta = None
            merged += 1
    return merged


def qdm_loss(pred: Tensor, data_target: Tensor, teacher_target: Tensor, method: QDMMethod) -> Tensor:
    """Q-DM-style objective: data_weight·MSE(pred, data target) + mimic_weight·MSE(pred, teacher), in float32.

    The mimicking term is qvgen's reading of Q-DM's NeM from its abstract; the paper's exact loss is
    unverified (README, "Q-DM").
    """
    loss = pred.new_zeros((), dtype=torch.float32)
    if method.data_weight:
        loss = loss + method.data_weight * distill_loss(pred, data_target.detach())
    if method.mimic_weight:
        loss = loss + method.mimic_weight * distill_loss(pred, teacher_target)
    return loss


@torch.no_grad()
def input_absmax(
    model: nn.Module, names: Iterable[str], run_batch: Callable[[], None], batches: int
) -> dict[str, Tensor]:
    """Per-input-channel max|x| `[in]` (float32) of each named Linear over `batches` calls of `run_batch`."""
    maxima: dict[str, Tensor] = {}
    handles = []

    def hook(name: str) -> Callable[..., None]:
        def record(module: nn.Module, args: tuple[Tensor, ...]) -> None:
            x = args[0].detach().float()
            m = x.abs().reshape(-1, x.shape[-1]).amax(dim=0).cpu()
            maxima[name] = m if name not in maxima else torch.maximum(maxima[name], m)

        return record

    try:
        for name in names:
            handles.append(model.get_submodule(name).register_forward_pre_hook(hook(name)))
        for _ in range(batches):
            run_batch()
    finally:
        for h in handles:
            h.remove()
    return maxima


@torch.no_grad()
def fit_kept_branches_(model: nn.Module, absmax: dict[str, Tensor], alpha: float) -> int:
    """SVDQuant fit of every kept branch: λ, SVD_r(W·diag(λ)), and the residual as the new latent weight.

    Call after `quant.prepare_` and before `quant.initialize_` (the weight ranges are those of the residual).
    """
    fitted = 0
    for name, layer in quant.quantized_layers(model).items():
        if layer.kept is None:
            continue
        if name not in absmax:
            raise ValueError(
                f"layer {name!r} saw no input during SVDQuant calibration; it cannot be smoothed "
                "(keep it in high precision with quant.keep_high_precision)"
            )
        residual = layer.kept.fit_(layer.weight, absmax[name].to(layer.weight.device), alpha)
        layer.weight.copy_(residual.to(layer.weight.dtype))
        fitted += 1
    if fitted == 0:
        raise ValueError("SVDQuant: no QuantLinear has a kept branch; set quant.kept_lowrank")
    return fitted
