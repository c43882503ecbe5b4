"""DeployLinear vs the fake-quant QuantLinear it came from, and the integer GEMM kernels under it.

At inference (no gradient) a QuantLinear runs the deploy layer's own integer arithmetic
(`qvgen.quant.integer_linear`), so the two agree bit for bit. With gradients it takes the float form
F.linear(Qa(x), Qw(W)): the same function, rounded differently. Tolerance there: the integer product
u @ w8.T is exact (int32 accumulation; FBGEMM's u8*s8 pair sums stay far below int16 saturation because
|w8| <= 15), and the activation codes come from the same float32 ops as the fake quantizer (same scale,
same rounding, ties included). What remains is float32 rounding: a few products in the deploy epilogue
and the fake-quant fp32 GEMM's own accumulation error (about sqrt(K) * 2**-24 relative). So the deploy
output is within 1e-6 (max-norm relative) of a float64 reference of the same quantized operands, and
within 1e-5 of the float fake-quant output.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qvgen.quant import (
    ClippedDynamicActivation,
    LSQPlusWeight,
    NoActivationQuant,
    QuantConfig,
    QuantLinear,
    initialize_,
    prepare_,
    set_timesteps_,
)
from qvgen.quant.deploy import DeployLinear
from qvgen.quant.integer_gemm import (
    PreparedInt8Weight,
    fbgemm_available,
    int8_gemm,
    prepare_int8_weight,
)

REL_TOL_VS_FAKE = 1e-5
REL_TOL_VS_FLOAT64 = 1e-6


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def trained_layer(
    in_f: int,
    out_f: int,
    *,
    w_bits: int = 4,
    a_bits: int | None = 4,
    bias: bool = True,
    groups: int = 50,
    mode: str = "bin",
) -> tuple[nn.Module, QuantLinear]:
    """A prepared, initialised QuantLinear with off-grid zero points and random clip factors."""
    act = (
        NoActivationQuant()
        if a_bits is None
        else ClippedDynamicActivation(bits=a_bits, groups=groups, group_mode=mode)  # type: ignore[arg-type]
    )
    model = nn.Sequential(nn.Linear(in_f, out_f, bias=bias))
    prepare_(model, QuantConfig(weight=LSQPlusWeight(bits=w_bits), activation=act))
    initialize_(model, progress=False)
    layer = model[0]
    assert isinstance(layer, QuantLinear)
    with torch.no_grad():
        wq = layer.weight_quantizer
        wq.zero_point.add_(torch.rand_like(wq.zero_point) - 0.5)
        wq.scale.mul_(1 + 0.2 * torch.rand_like(wq.scale))
        wq.zero_point[0] = -30.3  # far outside [0, P]: exercises the clamped integer offset
        wq.zero_point[-1] = 2**w_bits + 20.7
        if a_bits is not None:
            layer.act_quantizer.clip_logit_lo.uniform_(0.5, 4.0)
            layer.act_quantizer.clip_logit_hi.uniform_(0.5, 4.0)
    return model, layer


def float64_reference(layer: QuantLinear, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        s, z = layer.act_quantizer.qparams(x)
        qmax = 2**layer.act_quantizer.bits - 1
        xq = s.double() * (torch.clamp(torch.round(x / s) + z, 0, qmax).double() - z.double())
        ws, wz = layer.weight_quantizer.scale, layer.weight_quantizer.zero_point
        codes = torch.clamp(torch.round(layer.weight / ws + wz), 0, layer.weight_quantizer.qmax)
        wq = ws.double() * (codes.double() - wz.double())
        bias = layer.bias.double() if layer.bias is not None else 0.0
        return xq @ wq.T + bias


@pytest.mark.parametrize(
    ("in_f", "out_f", "w_bits", "a_bits", "bias", "mode"),
    [
        (64, 48, 4, 4, True, "bin"),
        (128, 256, 4, 4, False, "mod"),
        (67, 33, 3, 4, True, "bin"),  # odd width: padded nibble; 3-bit codes in the int4 container
        (256, 64, 4, 8, True, "bin"),  # 8-bit activations: u = q - 128 and the second rank-1 term
        (512, 128, 2, 3, True, "bin"),
    ],
)
def test_deploy_linear_matches_fake_quant_layer(
    in_f: int, out_f: int, w_bits: int, a_bits: int, bias: bool, mode: str
) -> None:
    model, layer = trained_layer(in_f, out_f, w_bits=w_bits, a_bits=a_bits, bias=bias, mode=mode)
    set_timesteps_(model, torch.tensor([10.0, 500.0, 990.0]))
    x = torch.randn(3, 29, in_f) * 3 + 0.7
    deploy = DeployLinear.from_quant_linear(layer)
    with torch.no_grad():
        fake = layer(x)
        out = deploy(x)
    float_form = layer(x).detach()  # with gradients: F.linear(Qa(x), Qw(W)), the training forward
    assert out.shape == fake.shape == float_form.shape == (3, 29, out_f)
    assert torch.equal(out, fake)
    assert rel_err(out, float_form) <= REL_TOL_VS_FAKE
    assert rel_err(out, float64_reference(layer, x)) <= REL_TOL_VS_FLOAT64


def test_deploy_linear_matches_fake_quant_at_rounding_ties() -> None:
    model, layer = trained_layer(64, 32)
    with torch.no_grad():
        layer.act_quantizer.clip_logit_lo.fill_(30.0)  # clip factor exactly 1.0 in float32
        layer.act_quantizer.clip_logit_hi.fill_(30.0)
    set_timesteps_(model, 1.0)
    # per token min 0 and max 7.5 give s = 0.5, so x / s = k + 0.5 lands exactly on rounding ties
    x = 0.25 + 0.5 * torch.randint(0, 14, (1, 16, 64)).float()
    x[..., 0], x[..., 1] = 0.0, 7.5
    deploy = DeployLinear.from_quant_linear(layer)
    with torch.no_grad():
        assert torch.equal(deploy(x), layer(x))
    assert rel_err(deploy(x), layer(x).detach()) <= REL_TOL_VS_FAKE


def test_deploy_linear_stores_packed_codes_and_exact_scales() -> None:
    _, layer = trained_layer(64, 16)
    deploy = DeployLinear.from_quant_linear(layer)
    assert deploy.weight_packed.dtype == torch.uint8 and deploy.weight_packed.shape == (16, 32)
    assert torch.equal(deploy.weight_scale, layer.weight_quantizer.scale.detach().reshape(-1))
    assert torch.equal(deploy.weight_zero_point, layer.weight_quantizer.zero_point.detach().reshape(-1))
    torch.testing.assert_close(deploy.dequantized_weight(), layer.quantized_weight(), rtol=0, atol=1e-6)
    assert deploy.weight_nbytes() == 16 * 32 + 2 * 16 * 4


def test_deploy_linear_uses_fbgemm_integer_gemm_on_cpu() -> None:
    if not fbgemm_available():
        pytest.skip("this torch build has no FBGEMM engine")
    _, layer = trained_layer(64, 16)
    deploy = DeployLinear.from_quant_linear(layer)
    assert deploy._int8_kernel(torch.device("cpu")).gemm.backend == "fbgemm"


@pytest.mark.parametrize("backend", ["fbgemm", "float"])
def test_int8_gemm_accumulates_exactly(backend: str) -> None:
    u = torch.randint(-128, 128, (33, 200)).float()
    w8 = torch.randint(-15, 16, (24, 200), dtype=torch.int8)
    if backend == "fbgemm":
        if not fbgemm_available():
            pytest.skip("this torch build has no FBGEMM engine")
        prepared = prepare_int8_weight(w8, torch.ones(24), torch.device("cpu"))
        assert prepared.backend == "fbgemm"
    else:
        prepared = PreparedInt8Weight("float", w8.float(), torch.ones(24))
    assert torch.equal(int8_gemm(u, prepared), (u.long() @ w8.long().T).float())


def test_int8_gemm_applies_per_row_weight_scale() -> None:
    u = torch.randint(-15, 16, (20, 64)).float()
    w8 = torch.randint(-15, 16, (8, 64), dtype=torch.int8)
    scale = torch.rand(8) + 0.01
    out = int8_gemm(u, prepare_int8_weight(w8, scale, torch.device("cpu")))
    ref = (u.double() @ w8.double().T) * scale.double()
    assert rel_err(out, ref) <= 1e-6


@pytest.mark.parametrize(("in_f", "backend"), [(128, "int4pack_cpu"), (67, "float")])
def test_w4a16_deploy_matches_dequantized_weight_matmul(in_f: int, backend: str) -> None:
    _, layer = trained_layer(in_f, 64, a_bits=None)
    deploy = DeployLinear.from_quant_linear(layer, "w4a16")
    assert deploy.target == "w4a16" and deploy.act_quantizer is None
    assert deploy._int4_kernel(torch.device("cpu")).backend == backend
    x = torch.randn(2, 40, in_f)
    with torch.no_grad():
        ref = F.linear(x.double(), layer.quantized_weight().double(), layer.bias.double())
        out = deploy(x)
    # the int4pack kernel takes bf16 activations (8 mantissa bits); the fallback is fp32
    assert rel_err(out, ref) <= (2e-2 if backend == "int4pack_cpu" else 1e-6)


def test_w4a16_deploy_drops_activation_quantizer_of_a4_layer() -> None:
    _, layer = trained_layer(64, 32)
    deploy = DeployLinear.from_quant_linear(layer, "w4a16")
    assert deploy.target == "w4a16" and deploy.act_quantizer is None


def test_from_quant_linear_refuses_layer_with_lowrank_branch() -> None:
    _, layer = trained_layer(64, 32)
    layer.lowrank = nn.Linear(1, 1)
    with pytest.raises(ValueError, match=r"'blocks.0.ff'.*auxiliary branch"):
        DeployLinear.from_quant_linear(layer, name="blocks.0.ff")


def test_from_quant_linear_refuses_uninitialised_and_wide_weights() -> None:
    lin = nn.Linear(64, 32)
    layer = QuantLinear.from_linear(lin, QuantConfig.w4a4())
    with pytest.raises(ValueError, match="initialize_"):
        DeployLinear.from_quant_linear(layer, name="a")
    _, wide = trained_layer(64, 32, w_bits=6)
    with pytest.raises(ValueError, match="6-bit weights"):
        DeployLinear.from_quant_linear(wide, name="b")


def test_from_quant_linear_refuses_w4a4_without_activation_quantizer() -> None:
    _, layer = trained_layer(64, 32, a_bits=None)
    with pytest.raises(ValueError, match="w4a16"):
        DeployLinear.from_quant_linear(layer, "w4a4", name="x")


def test_deploy_linear_rebuilds_kernel_after_load_state_dict() -> None:
    model, layer = trained_layer(64, 32)
    set_timesteps_(model, 3.0)
    deploy = DeployLinear.from_quant_linear(layer)
    x = torch.randn(1, 8, 64)
    with torch.no_grad():
        before = deploy(x)
        state = {k: v.clone() for k, v in deploy.state_dict().items()}
        state["weight_scale"] *= 2
        deploy.load_state_dict(state)
        after = deploy(x)
    bias = deploy.bias
    assert bias is not None
    torch.testing.assert_close(after - bias, 2 * (before - bias), rtol=1e-5, atol=1e-5)


def test_deploy_linear_keeps_quantization_grid_in_float32_under_dtype_casts() -> None:
    model, layer = trained_layer(64, 32)
    set_timesteps_(model, 3.0)
    deploy = DeployLinear.from_quant_linear(layer)
    x = torch.randn(2, 8, 64)
    with torch.no_grad():
        before = deploy(x)
        deploy.to(torch.bfloat16)
        assert all(t.dtype in (torch.float32, torch.uint8) for t in deploy.state_dict().values())
        assert torch.equal(deploy(x), before)
        assert deploy(x.bfloat16()).dtype == torch.bfloat16


@pytest.mark.gpu
@pytest.mark.parametrize("a_bits", [4, None])
def test_deploy_linear_on_cuda_matches_cpu(a_bits: int | None) -> None:
    model, layer = trained_layer(256, 128, a_bits=a_bits)
    set_timesteps_(model, torch.tensor([100.0, 700.0]))
    x = torch.randn(2, 40, 256)
    target = "w4a4" if a_bits else "w4a16"
    deploy = DeployLinear.from_quant_linear(layer, target)
    with torch.no_grad():
        cpu = deploy(x)
        set_timesteps_(model, torch.tensor([100.0, 700.0], device="cuda"))
        gpu = deploy.cuda()(x.cuda()).cpu()
    device = torch.device("cuda", torch.cuda.current_device())
    if target == "w4a4":  # fp32 input: the reference path
        assert deploy._int8_kernel(device).gemm.backend == "int_mm"
    else:
        assert deploy._int4_kernel(device).backend != "float"
    assert rel_err(gpu, cpu) <= (1e-5 if target == "w4a4" else 2e-2)
