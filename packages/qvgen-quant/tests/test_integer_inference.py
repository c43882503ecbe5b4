"""Which arithmetic a QuantLinear runs: the deploy layer's integer form at inference, the float form
F.linear(Qa(x), Qw(W) + Φ) whenever a gradient is wanted or a deploy layer could not replace it."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qvgen.quant import (
    ClippedDynamicActivation,
    LSQPlusWeight,
    QuantConfig,
    QuantLinear,
    initialize_,
    prepare_,
    set_timesteps_,
)
from qvgen.quant.deploy import DeployLinear

torch.set_num_threads(1)


def _layer(w_bits: int = 4, a_bits: int = 4) -> tuple[nn.Module, QuantLinear]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(96, 40))
    cfg = QuantConfig(
        weight=LSQPlusWeight(bits=w_bits), activation=ClippedDynamicActivation(bits=a_bits, groups=4)
    )
    prepare_(model, cfg)
    initialize_(model, progress=False)
    set_timesteps_(model, torch.tensor([30.0, 800.0]))
    layer = model[0]
    assert isinstance(layer, QuantLinear)
    return model, layer


def _float_form(layer: QuantLinear, x: torch.Tensor) -> torch.Tensor:
    w = layer.weight_quantizer(layer.weight)
    if layer.lowrank is not None:
        w = w + layer.lowrank()
    return F.linear(layer.act_quantizer(x), w.to(x.dtype), layer.bias)


class _Delta(nn.Module):
    def __init__(self, shape: tuple[int, int]) -> None:
        super().__init__()
        self.delta = nn.Parameter(torch.randn(shape) * 0.01)

    def forward(self) -> torch.Tensor:
        return self.delta


def test_inference_takes_the_integer_form_training_the_float_form() -> None:
    _, layer = _layer()
    x = torch.randn(2, 11, 96)
    with torch.no_grad():
        infer = layer(x)
        # (a copy: the deploy layer takes over the activation quantizer and freezes it)
        assert torch.equal(infer, DeployLinear.from_quant_linear(copy.deepcopy(layer))(x))
        ref = _float_form(layer, x)
    train = layer(x)
    assert train.requires_grad and torch.equal(train.detach(), ref)
    torch.testing.assert_close(infer, ref, rtol=1e-5, atol=1e-5)  # one function, rounded two ways
    train.sum().backward()
    assert (
        layer.weight_quantizer.scale.grad is not None and layer.act_quantizer.clip_logit_hi.grad is not None
    )


def test_bf16_input_gives_bf16_output_computed_in_float32() -> None:
    _, layer = _layer()
    x = torch.randn(2, 11, 96).to(torch.bfloat16)
    with torch.no_grad():
        out = layer(x)
        expected = DeployLinear.from_quant_linear(layer)(x)
    assert out.dtype == torch.bfloat16 and torch.equal(out, expected)


@pytest.mark.parametrize("case", ["lowrank", "weight_delta", "8-bit weights", "float64"])
def test_layers_a_deploy_layer_cannot_replace_keep_the_float_form(case: str) -> None:
    model, layer = _layer(w_bits=8 if case == "8-bit weights" else 4)
    x = torch.randn(2, 11, 96)
    if case == "lowrank":
        layer.lowrank = _Delta((40, 96))
    elif case == "weight_delta":
        layer.weight_delta = _Delta((40, 96))
    elif case == "float64":
        model.double()
        x = x.double()
    with torch.no_grad():
        out = layer(x)
        if case == "weight_delta":
            latent = layer.weight + layer.weight_delta()
            expected = F.linear(layer.act_quantizer(x), layer.weight_quantizer(latent), layer.bias)
        else:
            expected = _float_form(layer, x)
    assert torch.equal(out, expected)
