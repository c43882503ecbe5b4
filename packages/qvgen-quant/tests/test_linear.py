import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qvgen.quant import (
    ActivationQuantizer,
    LayerRole,
    LSQPlusWeight,
    QuantConfig,
    QuantLinear,
    RoleOverride,
    set_timesteps_,
)


class _LowRank(nn.Module):
    def __init__(self, out_features: int, in_features: int, rank: int = 2) -> None:
        super().__init__()
        self.left = nn.Parameter(torch.randn(out_features, rank) * 0.1)
        self.right = nn.Parameter(torch.randn(rank, in_features) * 0.1)

    def forward(self) -> torch.Tensor:
        return self.left @ self.right


def _layer(cfg: QuantConfig | None = None, role: LayerRole = LayerRole.ffn_up) -> QuantLinear:
    layer = QuantLinear.from_linear(nn.Linear(32, 16), cfg or QuantConfig.w4a4(), role)
    layer.weight_quantizer.initialize_(layer.weight)
    set_timesteps_(nn.Sequential(layer), torch.tensor([100.0, 800.0]))
    return layer


def test_from_linear_shares_weight_and_bias_and_sets_role_and_bits() -> None:
    linear = nn.Linear(32, 16)
    cfg = QuantConfig(role_overrides={LayerRole.attn_q: RoleOverride(weight_bits=3, act_bits=8)})
    layer = QuantLinear.from_linear(linear, cfg, LayerRole.attn_q)
    assert layer.weight is linear.weight and layer.bias is linear.bias
    assert layer.role is LayerRole.attn_q and layer.lowrank is None
    assert layer.weight_quantizer.bits == 3 and layer.act_quantizer.bits == 8
    assert layer.weight_quantizer.scale.shape == (16, 1) and layer.weight_quantizer.zero_point.shape == (
        16,
        1,
    )
    assert isinstance(layer.weight_quantizer.scale, nn.Parameter)


def test_to_linear_returns_the_latent_weights() -> None:
    linear = nn.Linear(32, 16, bias=False)
    back = QuantLinear.from_linear(linear, QuantConfig()).to_linear()
    assert type(back) is nn.Linear and back.weight is linear.weight and back.bias is None


def test_forward_before_initialize_says_to_call_initialize() -> None:
    layer = QuantLinear.from_linear(nn.Linear(32, 16), QuantConfig())
    with pytest.raises(RuntimeError, match=r"call `qvgen\.quant\.initialize_\(model\)`"):
        layer(torch.randn(1, 3, 32))
    with pytest.raises(RuntimeError, match="initialize_"):
        layer.quantized_weight()


def test_forward_is_one_linear_of_quantized_activation_and_weight() -> None:
    layer = _layer()
    x = torch.randn(2, 5, 32)
    expected = F.linear(layer.act_quantizer(x), layer.weight_quantizer(layer.weight), layer.bias)
    torch.testing.assert_close(layer(x), expected, atol=0, rtol=0)
    torch.testing.assert_close(layer.quantized_weight(), layer.weight_quantizer(layer.weight), atol=0, rtol=0)
    assert not layer.quantized_weight().requires_grad


def test_lowrank_is_added_to_the_quantized_weight_and_sees_the_quantized_activation() -> None:
    layer = _layer()
    layer.lowrank = _LowRank(16, 32)
    assert "lowrank" in dict(layer.named_children())
    x = torch.randn(2, 5, 32)
    xq = layer.act_quantizer(x)
    w = layer.weight_quantizer(layer.weight) + layer.lowrank()
    torch.testing.assert_close(layer(x), F.linear(xq, w, layer.bias), atol=0, rtol=0)
    layer(x).sum().backward()
    assert layer.lowrank.left.grad is not None and layer.lowrank.right.grad is not None
    layer.lowrank = None
    torch.testing.assert_close(layer(x), F.linear(xq, layer.quantized_weight(), layer.bias), atol=0, rtol=0)


def test_gradients_reach_weight_scale_zero_point_and_clip_logits() -> None:
    layer = _layer()
    with torch.no_grad():
        layer.weight_quantizer.zero_point.add_(1.0)  # push some values into the clamp
    layer(torch.randn(2, 7, 32) * 2).pow(2).sum().backward()
    for p in (layer.weight, layer.bias, layer.weight_quantizer.scale, layer.weight_quantizer.zero_point):
        assert p.grad is not None and bool((p.grad != 0).any())
    assert isinstance(layer.act_quantizer, ActivationQuantizer)
    for p in (layer.act_quantizer.clip_logit_lo, layer.act_quantizer.clip_logit_hi):
        assert p.grad is not None
        assert set(torch.nonzero(p.grad).flatten().tolist()) == {5, 40}  # bins of t = 100 and 800


def test_bf16_cast_keeps_quantizer_parameters_in_float32() -> None:
    layer = _layer()
    x = torch.randn(2, 3, 32)
    with torch.no_grad():
        layer.weight.copy_(layer.weight.bfloat16().float())  # representable in bf16: casting loses nothing
        reference = layer(x.bfloat16().float())
    layer.to(torch.bfloat16)
    assert layer.weight.dtype == torch.bfloat16
    quantizer_params = [*layer.weight_quantizer.parameters(), *layer.act_quantizer.parameters()]
    assert {p.dtype for p in quantizer_params} == {torch.float32}
    out = layer(x.bfloat16())
    assert out.dtype == torch.bfloat16
    assert layer.quantized_weight().dtype == torch.float32
    torch.testing.assert_close(
        layer.quantized_weight(), layer.weight_quantizer(layer.weight.float()), atol=0, rtol=0
    )
    torch.testing.assert_close(out.float(), reference, atol=0.05, rtol=0.02)  # bf16 matmul output rounding
    layer.double()  # float64 casts are kept (parity tests use them)
    assert layer.weight_quantizer.scale.dtype == torch.float64


def test_weight_only_config_leaves_activations_unquantized() -> None:
    layer = _layer(QuantConfig.w4a16())
    assert isinstance(layer.act_quantizer, nn.Identity)
    x = torch.randn(2, 3, 32)
    torch.testing.assert_close(layer(x), F.linear(x, layer.quantized_weight(), layer.bias), atol=0, rtol=0)


def test_lsq_config_knobs_reach_the_weight_quantizer() -> None:
    layer = QuantLinear.from_linear(nn.Linear(32, 16), QuantConfig(weight=LSQPlusWeight(grad_scaling=False)))
    assert layer.weight_quantizer.grad_scale_factor is None
