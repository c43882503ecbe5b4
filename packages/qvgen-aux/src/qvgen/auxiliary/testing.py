"""Factories and checks for tests that involve Φ (this package's and others')."""

from __future__ import annotations

import itertools

from torch import nn

from qvgen.auxiliary.lowrank import LowRankBranch
from qvgen.quant import ClippedDynamicActivation, LSQPlusWeight, QuantConfig, initialize_, prepare_

__all__ = ["assert_no_phi", "quant_config", "tiny_mlp", "tiny_quantized_mlp"]


def quant_config(bits: int = 4) -> QuantConfig:
    """WbitsAbits LSQ+ / clipped-dynamic config with one timestep group (no timestep needed)."""
    return QuantConfig(
        weight=LSQPlusWeight(bits=bits), activation=ClippedDynamicActivation(bits=bits, groups=1)
    )


def tiny_mlp(dims: tuple[int, ...] = (64, 128, 64)) -> nn.Sequential:
    """Linear/GELU stack with the given feature sizes (float32, default init)."""
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(itertools.pairwise(dims)):
        if i:
            layers.append(nn.GELU())
        layers.append(nn.Linear(d_in, d_out))
    return nn.Sequential(*layers)


def tiny_quantized_mlp(dims: tuple[int, ...] = (64, 128, 64), bits: int = 4) -> nn.Sequential:
    """`tiny_mlp` with every Linear prepared and calibrated by qvgen.quant, ready for `attach_`."""
    model = tiny_mlp(dims)
    prepare_(model, quant_config(bits))
    initialize_(model, progress=False)
    return model


def assert_no_phi(model: nn.Module) -> None:
    """Fail if any Φ module, parameter or state_dict key is left under `model`."""
    leftovers = [n for n, m in model.named_modules() if isinstance(m, LowRankBranch)]
    leftovers += [k for k in model.state_dict() if "lowrank" in k]
    if leftovers:
        raise AssertionError(f"Φ still present: {leftovers}")
