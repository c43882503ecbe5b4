"""The Triton kernels (fused W4A4 deploy linear, fused fake quantizers) against the reference code.

Without a GPU these run under Triton's CPU interpreter (``TRITON_INTERPRET=1``, set below before the
kernels are imported; the interpreter is slow, so shapes are small). With a GPU the same tests compile and
run the kernels on CUDA. Tolerances: the W4A4 output in float32 is within the deploy tests' 1e-5 of the
fake-quant layer and 1e-6 of a float64 reference; fake-quant forwards and element gradients are
bit-identical (the kernels replay the reference's float32 ops), per-row sums agree to 1e-5.
"""

import os
import sys

import pytest
import torch

if not torch.cuda.is_available():
    if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip(
            "triton was imported before TRITON_INTERPRET=1 (see conftest.py)", allow_module_level=True
        )
    os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton")

from torch import nn

from qvgen.quant import (
    ClippedDynamicActivation,
    LSQPlusWeight,
    QuantConfig,
    QuantLinear,
    fake_quantize_activation,
    fake_quantize_weight,
    initialize_,
    prepare_,
    set_timesteps_,
)
from qvgen.quant.deploy import DeployLinear
from qvgen.quant.fake_quant_triton import (
    fused_fake_quantize_activation,
    fused_fake_quantize_weight,
)
from qvgen.quant.triton_dispatch import (
    fused_w4a4_unsupported,
    set_fused_fake_quant,
    use_fused_fake_quant,
)
from qvgen.quant.w4a4_triton import INTERPRET_CONFIG, w4a4_linear

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def trained_layer(
    in_f: int, out_f: int, *, w_bits: int = 4, a_bits: int = 4, bias: bool = True
) -> tuple[nn.Module, QuantLinear]:
    """A prepared, initialised QuantLinear with off-grid zero points and random clip factors (50 groups)."""
    model = nn.Sequential(nn.Linear(in_f, out_f, bias=bias))
    act = ClippedDynamicActivation(bits=a_bits, groups=50)  # type: ignore[arg-type]
    prepare_(model, QuantConfig(weight=LSQPlusWeight(bits=w_bits), activation=act))  # type: ignore[arg-type]
    initialize_(model, progress=False)
    layer = model[0]
    assert isinstance(layer, QuantLinear)
    with torch.no_grad():
        wq = layer.weight_quantizer
        wq.zero_point.add_(torch.rand_like(wq.zero_point) - 0.5)
        wq.zero_point[0] = -30.3  # far outside [0, P]: the clamped integer offset c
        wq.zero_point[-1] = 2**w_bits + 20.7
        layer.act_quantizer.clip_logit_lo.uniform_(0.5, 4.0)
        layer.act_quantizer.clip_logit_hi.uniform_(0.5, 4.0)
    return model, layer


def float64_reference(layer: QuantLinear, x: torch.Tensor) -> torch.Tensor:
    """The quantized operands (from the layer's own quantizers) multiplied in float64."""
    with torch.no_grad():
        s, z = layer.act_quantizer.qparams(x)
        qmax = 2**layer.act_quantizer.bits - 1
        xq = s.double() * (torch.clamp(torch.round(x / s) + z, 0, qmax).double() - z.double())
        wq = layer.quantized_weight().double()
        bias = layer.bias.double() if layer.bias is not None else 0.0
        return xq @ wq.T + bias


def _fused_fp32(deploy: DeployLinear, x: torch.Tensor, swap: bool) -> torch.Tensor:
    act = deploy.act_quantizer
    assert act is not None
    lo, hi = act.sample_clips(x)
    y = w4a4_linear(
        x.reshape(-1, deploy.in_features),
        deploy.weight_packed,
        deploy._fused_vectors(x.device),
        lo.reshape(-1).contiguous(),
        hi.reshape(-1).contiguous(),
        act_bits=act.bits,
        has_bias=deploy.bias is not None,
        out_dtype=torch.float32,
        config={**INTERPRET_CONFIG, "SWAP_AB": swap},
    )
    return y.reshape(*x.shape[:-1], deploy.out_features)


@pytest.mark.parametrize(
    ("in_f", "out_f", "w_bits", "a_bits", "bias", "swap"),
    [
        (128, 48, 4, 4, True, False),
        (128, 32, 4, 4, False, True),
        (192, 16, 3, 8, True, False),  # 8-bit activations: u = q - 128 and the (o - z) term
        (64, 32, 2, 3, True, True),
    ],
)
def test_fused_w4a4_matches_fake_quant_layer(
    in_f: int, out_f: int, w_bits: int, a_bits: int, bias: bool, swap: bool
) -> None:
    model, layer = trained_layer(in_f, out_f, w_bits=w_bits, a_bits=a_bits, bias=bias)
    deploy = DeployLinear.from_quant_linear(layer).to(DEVICE)
    model.to(DEVICE)
    set_timesteps_(model, torch.tensor([10.0, 500.0, 990.0], device=DEVICE))  # three clip groups
    x = (torch.randn(3, 7, in_f, device=DEVICE) * 3 + 0.7).bfloat16()
    with torch.no_grad():
        out = _fused_fp32(deploy, x, swap)
        fake = layer(x.float())
        wired = deploy._forward_w4a4_fused(x)
    assert rel_err(out, fake) <= 1e-5
    assert rel_err(out.cpu(), float64_reference(layer.cpu(), x.float().cpu())) <= 1e-6
    # the layer's own fused path: the same float32 values, rounded once to the input dtype
    assert wired.dtype == torch.bfloat16
    assert torch.equal(wired.reshape(out.shape), out.to(torch.bfloat16))


def test_fused_w4a4_matches_at_rounding_ties() -> None:
    model, layer = trained_layer(64, 32)
    with torch.no_grad():
        layer.act_quantizer.clip_logit_lo.fill_(30.0)
        layer.act_quantizer.clip_logit_hi.fill_(30.0)
    set_timesteps_(model, 1.0)
    x = 0.25 + 0.5 * torch.randint(0, 14, (1, 16, 64)).float()  # x / s = k + 0.5 with s = 0.5
    x[..., 0], x[..., 1] = 0.0, 7.5
    deploy = DeployLinear.from_quant_linear(layer)
    with torch.no_grad():
        assert rel_err(_fused_fp32(deploy, x.bfloat16(), swap=False), layer(x)) <= 1e-5


def test_fused_w4a4_keeps_only_packed_weight_and_row_vectors() -> None:
    model, layer = trained_layer(128, 64)
    set_timesteps_(model, 3.0)
    deploy = DeployLinear.from_quant_linear(layer, name="blocks.0.ffn")
    with torch.no_grad():
        deploy._forward_w4a4_fused(torch.randn(1, 5, 128).bfloat16())
    cached = list(deploy._kernel_cache.values())
    assert len(cached) == 1 and cached[0].shape == (5, 64) and cached[0].dtype == torch.float32


def _dispatch_reason(x: torch.Tensor, in_f: int = 128, out_f: int = 64, bits: int = 4) -> str | None:
    return fused_w4a4_unsupported(x, in_f, out_f, bits)


def test_fused_w4a4_dispatch_names_what_it_cannot_take() -> None:
    x = torch.randn(2, 4, 128, device=DEVICE).bfloat16()
    assert _dispatch_reason(x) is None
    assert "float32" in str(_dispatch_reason(x.float()))
    assert "contiguous" in str(_dispatch_reason(x.transpose(0, 1)))
    assert "in_features=96" in str(_dispatch_reason(x[..., :96].contiguous(), in_f=96))
    assert "out_features=40" in str(_dispatch_reason(x, out_f=40))
    assert _dispatch_reason(x.half()) is None


@pytest.mark.parametrize(
    ("in_f", "out_f", "make_input"),
    [
        (128, 64, lambda x: x.float()),  # fp32
        (128, 64, lambda x: x.transpose(0, 1)),  # non-contiguous
        (96, 64, lambda x: x),  # K not a multiple of 64
        (128, 40, lambda x: x),  # N not a multiple of 16
    ],
)
def test_bad_inputs_fall_back_to_reference_or_raise_naming_the_layer(in_f, out_f, make_input) -> None:  # type: ignore[no-untyped-def]
    model, layer = trained_layer(in_f, out_f)
    set_timesteps_(model, 3.0)
    deploy = DeployLinear.from_quant_linear(layer, name="blocks.3.attn1.to_q")
    x = make_input(torch.randn(2, 6, in_f).bfloat16())
    with torch.no_grad():
        with pytest.raises(ValueError, match=r"'blocks\.3\.attn1\.to_q'.*fused W4A4 kernel cannot run"):
            deploy._forward_w4a4_fused(x)
        out = deploy(x)  # the CPU path is the reference path; on CUDA the layer falls back to it as well
        ref = layer(x.float()).to(x.dtype)
    assert torch.allclose(out.float(), ref.float(), rtol=1e-2, atol=1e-2 * float(ref.float().abs().max()))


def _weight_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    w = torch.randn(24, 200, device=DEVICE)
    s = w.abs().amax(1, keepdim=True) / 7.5 * (1 + 0.1 * torch.rand(24, 1, device=DEVICE))
    z = 7.3 + torch.rand(24, 1, device=DEVICE)
    z[0] = -3.2  # rows partly outside the grid: the clamp mask matters
    return w, s, z


@pytest.mark.parametrize("bits", [4, 3])
def test_fused_weight_fake_quant_matches_reference_and_its_gradients(bits: int) -> None:
    w, s, z = _weight_case()
    g = torch.randn_like(w)
    results = []
    for fn in (fake_quantize_weight, fused_fake_quantize_weight):
        leaves = [t.clone().requires_grad_() for t in (w, s, z)]
        out = fn(*leaves, bits)
        out.backward(g)
        results.append((out.detach(), *(t.grad for t in leaves)))
    (ref, ref_gw, ref_gs, ref_gz), (out, gw, gs, gz) = results
    assert torch.equal(out, ref) and torch.equal(gw, ref_gw)
    torch.testing.assert_close(gs, ref_gs, rtol=1e-5, atol=1e-5 * float(ref_gs.abs().max()))
    torch.testing.assert_close(gz, ref_gz, rtol=1e-5, atol=1e-5 * float(ref_gz.abs().max()))


@pytest.mark.parametrize(("dtype", "bits"), [(torch.float32, 4), (torch.bfloat16, 4), (torch.bfloat16, 8)])
def test_fused_activation_fake_quant_matches_reference_and_its_gradients(
    dtype: torch.dtype, bits: int
) -> None:
    x = (torch.randn(2, 9, 200, device=DEVICE) * 2 + 0.3).to(dtype)
    x[0, 0, :3] = x[0, 0].max()  # a tied maximum: amax splits its gradient evenly
    lo = torch.sigmoid(torch.rand(2, 1, 1, device=DEVICE) * 3 + 0.5)
    hi = torch.sigmoid(torch.rand(2, 1, 1, device=DEVICE) * 3 + 0.5)
    g = torch.randn(x.shape, device=DEVICE).to(dtype)
    results = []
    for fused in (False, True):
        xl, lol, hil = (t.clone().requires_grad_() for t in (x, lo, hi))
        if fused:
            out = fused_fake_quantize_activation(xl, lol, hil, bits)
        else:
            out = fake_quantize_activation(xl.float(), lol, hil, bits).to(dtype)
        out.backward(g)
        results.append((out.detach(), xl.grad, lol.grad, hil.grad))
    (ref, ref_gx, ref_glo, ref_ghi), (out, gx, glo, ghi) = results
    assert out.dtype == dtype and torch.equal(out, ref)
    xf = x.float()
    extreme = (xf == xf.amin(-1, keepdim=True)) | (xf == xf.amax(-1, keepdim=True))
    assert torch.equal(gx[~extreme], ref_gx[~extreme])  # elsewhere three terms are summed in another order
    torch.testing.assert_close(gx.float(), ref_gx.float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(glo, ref_glo, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ghi, ref_ghi, rtol=1e-5, atol=1e-6)


def test_fused_fake_quant_is_cuda_only_and_can_be_switched_off() -> None:
    assert not use_fused_fake_quant(torch.randn(4, 8))  # CPU: the reference path, unchanged
    old = set_fused_fake_quant(False)
    try:
        assert not use_fused_fake_quant(torch.randn(4, 8, device=DEVICE))
    finally:
        set_fused_fake_quant(old)
    assert use_fused_fake_quant(torch.randn(4, 8, device=DEVICE)) == (DEVICE.type == "cuda")


@pytest.mark.gpu
def test_deploy_linear_on_cuda_runs_the_autotuned_kernel_and_keeps_only_the_packed_weight() -> None:
    model, layer = trained_layer(1536, 512)
    deploy = DeployLinear.from_quant_linear(layer, name="blocks.0.ffn.net.2")
    x = (torch.randn(2, 1200, 1536) * 2).bfloat16()
    set_timesteps_(model, torch.tensor([100.0, 800.0]))
    with torch.no_grad():
        ref = deploy(x.float())  # the CPU reference path on the same (bf16-exact) values
        model.cuda()
        deploy.cuda()
        set_timesteps_(model, torch.tensor([100.0, 800.0], device="cuda"))
        out = deploy(x.cuda())  # bf16, contiguous: the fused path, autotuned
        act = deploy.act_quantizer
        assert act is not None
        lo, hi = act.sample_clips(x.cuda())
        out32 = w4a4_linear(
            x.cuda().reshape(-1, 1536), deploy.weight_packed, deploy._fused_vectors(out.device),
            lo.reshape(-1).contiguous(), hi.reshape(-1).contiguous(), act_bits=4, has_bias=True,
            out_dtype=torch.float32,
        )  # fmt: skip
    assert out.dtype == torch.bfloat16
    assert rel_err(out32.reshape(ref.shape).cpu(), ref) <= 1e-5
    assert torch.equal(out, out32.reshape(out.shape).to(torch.bfloat16))
    cached = list(deploy._kernel_cache.values())
    assert len(cached) == 1 and cached[0].shape == (5, 512)  # no int8 copy of the weight stays resident


@pytest.mark.gpu
def test_quant_linear_on_cuda_uses_the_fused_fake_quantizers_with_the_cpu_gradients() -> None:
    results = []
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        model, layer = trained_layer(256, 128)
        model.to(device)
        set_timesteps_(model, torch.tensor([100.0, 800.0], device=device))
        x = (torch.randn(2, 40, 256) * 2).to(device).requires_grad_()
        assert use_fused_fake_quant(x) == (device == "cuda")
        out = layer(x)
        out.square().sum().backward()
        wq, aq = layer.weight_quantizer, layer.act_quantizer
        grads = [x.grad, layer.weight.grad, wq.scale.grad, wq.zero_point.grad, aq.clip_logit_lo.grad]
        results.append([t.detach().cpu() for t in [out, *grads]])
    for cpu, gpu in zip(*results, strict=True):
        assert rel_err(gpu, cpu) <= 1e-5
