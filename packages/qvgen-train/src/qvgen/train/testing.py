"""Fakes for tests and benchmarks: a checkpoint in the reference implementation's on-disk format.

`write_reference_checkpoint` follows the reference's saving path (ModelTC/QVGen `training/quant/quant.py`
`replace_linear` + `QuantLinear`, then diffusers `save_pretrained`): every `nn.Linear` becomes a module
with parameters `w`, `b`, `wquantizer.{scale, zero_point}` ([out, 1], LSQ+ real-valued zero point) and
`aquantizer.{lower, upper}` ([G] clip logits, initialised at logit(0.95)); every other tensor keeps its
diffusers name; `config.json` is the transformer's config.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from qvgen.train.reference import REF_TENSORS


def reference_minmax_qparams(w: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """The reference's LSQ+ min-max init: s = (max − min)/P, z = −min/s (not rounded), both [out, 1]."""
    qmax = 2**bits - 1
    lo, hi = w.amin(dim=1, keepdim=True), w.amax(dim=1, keepdim=True)
    scale = ((hi - lo) / qmax).clamp_min(1e-9)
    return scale, -lo / scale


def write_reference_checkpoint(
    transformer: nn.Module,
    folder: str | Path,
    *,
    groups: int = 50,
    bits: int = 4,
    seed: int = 0,
    lora_rank: int | None = None,
    skip: Iterable[str] = (),
) -> Path:
    """Write `transformer` as the reference would after QAT; return the folder.

    Clip logits are logit(0.95) plus noise (as after training); `lora_rank` adds `loraA`/`loraB` weights
    (the `--qa_lora` variant, saved unmerged); Linears named in `skip` stay plain (`.weight`/`.bias`).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    skipped = set(skip)
    state = {k: v.detach().clone().contiguous() for k, v in transformer.state_dict().items()}
    init = math.log(0.95 / 0.05)
    for name, module in transformer.named_modules():
        if not isinstance(module, nn.Linear) or name in skipped:
            continue
        w = state.pop(f"{name}.weight")
        state[f"{name}.w"] = w
        if module.bias is not None:
            state[f"{name}.b"] = state.pop(f"{name}.bias")
        scale, zero = reference_minmax_qparams(w.float(), bits)
        state[f"{name}.wquantizer.scale"] = scale * (1 + 0.05 * torch.rand(scale.shape, generator=g))
        state[f"{name}.wquantizer.zero_point"] = zero + 0.3 * torch.randn(zero.shape, generator=g)
        state[f"{name}.aquantizer.lower"] = init + 0.5 * torch.randn(groups, generator=g)
        state[f"{name}.aquantizer.upper"] = init + 0.5 * torch.randn(groups, generator=g)
        if lora_rank is not None:
            state[f"{name}.loraA.weight"] = 0.01 * torch.randn(lora_rank, module.in_features, generator=g)
            state[f"{name}.loraB.weight"] = 0.01 * torch.randn(module.out_features, lora_rank, generator=g)
    save_file(state, str(folder / REF_TENSORS), metadata={"format": "pt"})
    save_config = getattr(transformer, "save_config", None)
    if not callable(save_config):
        raise TypeError(f"{type(transformer).__name__} has no save_config(); pass a diffusers model")
    save_config(str(folder))
    return folder
