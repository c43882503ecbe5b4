import math

import pytest
import torch

from qvgen.quant import (
    ActivationQuantizer,
    ClippedDynamicActivation,
    LSQPlusWeight,
    MinMaxWeight,
    WeightQuantizer,
    activation_qparams,
    fake_quantize_activation,
    minmax_weight_range,
    mse_weight_range,
    set_timesteps_,
    shrink_grid_search,
)
from qvgen.quant.fake_quant import fake_quantize_weight
from qvgen.quant.testing import (
    ref_act_fake_quant,
    ref_group_index,
    ref_minmax_init,
    ref_mse_init,
    ref_weight_fake_quant,
)


def _weight(out: int = 12, inp: int = 64) -> torch.Tensor:
    # heavy-tailed rows so the search picks different shrinks per row
    return (
        torch.randn(out, inp, dtype=torch.float64) * torch.rand(out, 1, dtype=torch.float64)
        + (torch.randn(out, inp, dtype=torch.float64) ** 3) * 0.1
    )


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_mse_weight_range_matches_float64_reference_exactly(bits: int) -> None:
    w = _weight()
    s, z = mse_weight_range(w, bits)
    ref_s, ref_z = ref_mse_init(w, bits)
    torch.testing.assert_close(s, ref_s, atol=0, rtol=0)
    torch.testing.assert_close(z, ref_z, atol=0, rtol=0)


def test_mse_weight_range_shrinks_low_bit_ranges_and_keeps_zero_point_real() -> None:
    w = _weight(32, 128)
    s, z = mse_weight_range(w, 3)
    full = (w.amax(1, keepdim=True) - w.amin(1, keepdim=True)) / 7
    shrink = s / full
    assert bool((shrink <= 1).all()) and bool((shrink > 0.2).all())
    assert bool((shrink < 1).any())  # some rows clip their range
    assert bool((z != z.round()).any())  # not rounded (LSQ+ real-valued zero point)


def test_mse_weight_range_breaks_ties_towards_the_largest_shrink_factor() -> None:
    # bits=2, grid 4, norm 2: this row has equal error 0.5 at p=1.0 and p=0.75 (exact in binary)
    w = torch.tensor([[-2.0, -1.5, -1.5, 2.0]], dtype=torch.float64)
    s, z = mse_weight_range(w, 2, grid=4, max_shrink=1.0, norm=2.0)
    ref_s, ref_z = ref_mse_init(w, 2, grid=4, max_shrink=1.0, norm=2.0)
    assert s.item() == 4.0 / 3.0 and z.item() == 1.5  # the p = 1 candidate, not p = 0.75 (s = 1.0)
    assert (s.item(), z.item()) == (ref_s.item(), ref_z.item())


def test_mse_weight_range_search_params_change_the_candidates() -> None:
    w = _weight()
    for kw in ({"grid": 10, "max_shrink": 0.5, "norm": 2.0}, {"grid": 7, "max_shrink": 1.0, "norm": 3.0}):
        s, z = mse_weight_range(w, 4, **kw)
        ref_s, ref_z = ref_mse_init(w, 4, **kw)
        torch.testing.assert_close((s, z), (ref_s, ref_z), atol=0, rtol=0)


def test_mse_weight_range_runs_in_float32_for_bf16_weights() -> None:
    w = torch.randn(8, 64).bfloat16()
    s, z = mse_weight_range(w, 4)
    assert s.dtype == torch.float32
    torch.testing.assert_close((s, z), mse_weight_range(w.float(), 4), atol=0, rtol=0)


def test_minmax_weight_range_matches_reference_and_the_full_range() -> None:
    w = _weight()
    torch.testing.assert_close(minmax_weight_range(w, 4), ref_minmax_init(w, 4), atol=0, rtol=0)


@pytest.mark.parametrize("grad_scaling", [True, False])
@pytest.mark.parametrize("bits", [3, 4])
def test_lsq_weight_quantizer_forward_and_gradients_match_float64_reference(
    grad_scaling: bool, bits: int
) -> None:
    w0 = _weight(8, 32)
    wq = WeightQuantizer(8, 32, LSQPlusWeight(bits=bits, grad_scaling=grad_scaling)).double()
    wq.initialize_(w0)
    with torch.no_grad():  # move some rows off the calibrated point so clamping happens
        wq.scale.mul_(0.7)
        wq.zero_point.add_(0.3)
    w = w0.clone().requires_grad_()
    out = wq(w)
    upstream = torch.randn_like(out)
    (out * upstream).sum().backward()

    w_ref = w0.clone().requires_grad_()
    s_ref = wq.scale.detach().clone().requires_grad_()
    z_ref = wq.zero_point.detach().clone().requires_grad_()
    ref = ref_weight_fake_quant(w_ref, s_ref, z_ref, bits, grad_scaling=grad_scaling)
    (ref * upstream).sum().backward()

    torch.testing.assert_close(out, ref, atol=0, rtol=0)
    torch.testing.assert_close(w.grad, w_ref.grad, atol=0, rtol=0)
    torch.testing.assert_close(wq.scale.grad, s_ref.grad, atol=0, rtol=0)
    torch.testing.assert_close(wq.zero_point.grad, z_ref.grad, atol=0, rtol=0)
    assert bool((wq.scale.grad != 0).all()) and bool((wq.zero_point.grad != 0).any())


def test_lsq_gradient_scaling_multiplies_scale_and_zero_point_grads_by_one_over_sqrt_in_times_p() -> None:
    w = _weight(4, 64)
    grads = {}
    for scaling in (True, False):
        wq = WeightQuantizer(4, 64, LSQPlusWeight(grad_scaling=scaling)).double()
        wq.initialize_(w)
        with torch.no_grad():
            wq.zero_point.add_(2.0)  # some values clamp, so z gets a gradient
        wq(w).pow(2).sum().backward()
        grads[scaling] = (wq.scale.grad, wq.zero_point.grad)
    g = 1 / math.sqrt(64 * 15)
    torch.testing.assert_close(grads[True][0], grads[False][0] * g, rtol=1e-12, atol=0)
    torch.testing.assert_close(grads[True][1], grads[False][1] * g, rtol=1e-12, atol=0)


def test_weight_quantizer_math_is_float32_for_bf16_weights() -> None:
    w = torch.randn(8, 64).bfloat16()
    wq = WeightQuantizer(8, 64, LSQPlusWeight())
    wq.initialize_(w)
    out = wq(w)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, wq(w.float()), atol=0, rtol=0)


def test_weight_quantizer_output_has_at_most_2_pow_bits_levels_per_row() -> None:
    w = torch.randn(6, 256)
    for bits in (2, 3, 4):
        wq = WeightQuantizer(6, 256, LSQPlusWeight(bits=bits))
        wq.initialize_(w)
        q = wq(w).detach()
        for row in q:
            assert row.unique().numel() <= 2**bits


def test_minmax_weight_quantizer_has_frozen_ranges_and_passes_weight_grads() -> None:
    w = torch.randn(4, 32, requires_grad=True)
    wq = WeightQuantizer(4, 32, MinMaxWeight(bits=4))
    wq.initialize_(w)
    assert not wq.scale.requires_grad and not wq.zero_point.requires_grad
    wq(w).sum().backward()
    assert w.grad is not None and bool((w.grad != 0).any())
    s, z = minmax_weight_range(w, 4)
    torch.testing.assert_close((wq.scale.data, wq.zero_point.data), (s, z), atol=0, rtol=0)


def test_weight_quantizer_state_dict_load_marks_it_initialized() -> None:
    w = torch.randn(4, 32)
    a = WeightQuantizer(4, 32, LSQPlusWeight())
    a.initialize_(w)
    b = WeightQuantizer(4, 32, LSQPlusWeight())
    assert not b.initialized
    b.load_state_dict(a.state_dict())
    assert b.initialized
    torch.testing.assert_close(b(w), a(w), atol=0, rtol=0)


def _act(cfg: ClippedDynamicActivation) -> ActivationQuantizer:
    return ActivationQuantizer(cfg).double()


def test_activation_quantizer_initial_clip_factor_is_0_9025() -> None:
    q = ActivationQuantizer(ClippedDynamicActivation())
    lo, hi = q.clip_factors()
    torch.testing.assert_close(lo, torch.full((50,), 0.9025), atol=1e-7, rtol=0)
    torch.testing.assert_close(hi, lo, atol=0, rtol=0)


@pytest.mark.parametrize("mode", ["bin", "mod"])
def test_activation_quantizer_matches_float64_reference_per_sample_group(mode: str) -> None:
    cfg = ClippedDynamicActivation(bits=4, groups=50, group_mode=mode)
    q = _act(cfg)
    with torch.no_grad():  # distinct clip per group
        q.clip_logit_lo.copy_(torch.linspace(0.5, 4.0, 50, dtype=torch.float64))
        q.clip_logit_hi.copy_(torch.linspace(3.0, 1.0, 50, dtype=torch.float64))
    holder = torch.nn.Sequential(q)
    timesteps = torch.tensor([3.7, 517.2, 999.0])
    set_timesteps_(holder, timesteps)
    x0 = torch.randn(3, 5, 32, dtype=torch.float64) * 3
    x = x0.clone().requires_grad_()
    out = q(x)
    upstream = torch.randn_like(out)
    (out * upstream).sum().backward()

    groups = ref_group_index(timesteps.tolist(), 50, mode)
    lo_logit = q.clip_logit_lo.detach().clone().requires_grad_()
    hi_logit = q.clip_logit_hi.detach().clone().requires_grad_()
    x_ref = x0.clone().requires_grad_()
    ref = ref_act_fake_quant(
        x_ref, [torch.sigmoid(lo_logit[g]) for g in groups], [torch.sigmoid(hi_logit[g]) for g in groups], 4
    )
    (ref * upstream).sum().backward()

    torch.testing.assert_close(out, ref, atol=0, rtol=0)
    torch.testing.assert_close(x.grad, x_ref.grad, atol=0, rtol=0)
    # The clip gradient is a sum over the sample's tokens; broadcasting sums them in another order than
    # the reference's per-token loop, so it agrees to float64 rounding (a few ulp), not bit for bit.
    torch.testing.assert_close(q.clip_logit_lo.grad, lo_logit.grad, atol=0, rtol=1e-12)
    torch.testing.assert_close(q.clip_logit_hi.grad, hi_logit.grad, atol=0, rtol=1e-12)
    touched = set(torch.nonzero(q.clip_logit_hi.grad).flatten().tolist())
    assert touched == set(groups)


def test_bin_and_mod_modes_pick_different_groups_for_the_same_timesteps() -> None:
    timesteps = torch.tensor([999.0, 979.0, 959.0, 20.0, 0.0])
    for mode, expected in (("bin", [49, 48, 47, 1, 0]), ("mod", [49, 29, 9, 20, 0])):
        q = ActivationQuantizer(ClippedDynamicActivation(groups=50, group_mode=mode))
        set_timesteps_(torch.nn.Sequential(q), timesteps)
        assert q.group_index().tolist() == expected == ref_group_index(timesteps.tolist(), 50, mode)


def test_bin_groups_handle_float32_timesteps_at_bin_edges_like_exact_arithmetic() -> None:
    t = torch.tensor([19.999998, 20.0, 1000.0, 1e6, -3.0], dtype=torch.float32)
    q = ActivationQuantizer(ClippedDynamicActivation(groups=50))
    set_timesteps_(torch.nn.Sequential(q), t)
    assert q.group_index().tolist() == ref_group_index(t.tolist(), 50, "bin") == [0, 1, 49, 49, 0]


def test_activation_zero_point_gets_no_gradient_and_clips_learn_through_the_scale() -> None:
    x = torch.randn(1, 4, 16, dtype=torch.float64)
    lo = torch.tensor(0.9, dtype=torch.float64, requires_grad=True)
    hi = torch.tensor(0.9, dtype=torch.float64, requires_grad=True)
    scale, zero = activation_qparams(x, lo, hi, 4)
    assert scale.requires_grad and not zero.requires_grad
    fake_quantize_activation(x, lo, hi, 4).pow(2).sum().backward()
    assert lo.grad is not None and hi.grad is not None
    assert lo.grad.item() != 0 and hi.grad.item() != 0


def test_activation_quantizer_output_keeps_input_dtype_and_computes_in_float32() -> None:
    q = ActivationQuantizer(ClippedDynamicActivation(groups=1))
    x = torch.randn(2, 3, 64).bfloat16()
    out = q(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, q(x.float()).bfloat16(), atol=0, rtol=0)


def test_activation_quantizer_output_has_at_most_2_pow_bits_levels_per_token() -> None:
    q = ActivationQuantizer(ClippedDynamicActivation(bits=3, groups=1))
    out = q(torch.randn(2, 6, 128))
    for tok in out.reshape(-1, 128):
        assert tok.unique().numel() <= 8


def test_activation_quantizer_with_groups_needs_a_timestep() -> None:
    q = ActivationQuantizer(ClippedDynamicActivation(groups=4))
    with pytest.raises(RuntimeError, match="attach_timestep_context_"):
        q(torch.randn(2, 3, 8))
    set_timesteps_(torch.nn.Sequential(q), None)
    with pytest.raises(RuntimeError, match="set_timesteps_"):
        q(torch.randn(2, 3, 8))


def test_activation_quantizer_rejects_batch_that_does_not_match_timesteps() -> None:
    q = ActivationQuantizer(ClippedDynamicActivation(groups=4))
    set_timesteps_(torch.nn.Sequential(q), torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"shape \(3, 8\) does not start with the batch size 2"):
        q(torch.randn(3, 8))


def test_activation_quantizer_broadcasts_a_single_timestep_over_the_batch() -> None:
    q = ActivationQuantizer(ClippedDynamicActivation(groups=4))
    holder = torch.nn.Sequential(q)
    x = torch.randn(3, 5, 8)
    set_timesteps_(holder, 900.0)
    one = q(x)
    set_timesteps_(holder, torch.full((3,), 900.0))
    torch.testing.assert_close(one, q(x), atol=0, rtol=0)


def test_float32_weight_quantizer_agrees_with_float64_reference_within_float32_rounding() -> None:
    w = torch.randn(64, 256)
    wq = WeightQuantizer(64, 256, LSQPlusWeight())
    wq.initialize_(w)
    out = wq(w).detach().double()
    ref = ref_weight_fake_quant(w, wq.scale.detach(), wq.zero_point.detach(), 4).detach()
    # Same formula; float32 rounding of s·(q − z) gives ~1e-7 relative differences. A value whose w/s + z
    # lies within float32 eps of a .5 boundary may round to the neighbouring level (a difference of one s).
    diff = (out - ref).abs()
    flips = diff > 1e-5
    assert int(flips.sum()) <= w.numel() // 1000
    torch.testing.assert_close(diff[flips], wq.scale.detach().double().expand_as(w)[flips], rtol=1e-5, atol=0)
    assert float(diff[~flips].max()) <= 1e-6


def test_shrink_grid_search_keeps_an_incumbent_that_no_candidate_beats() -> None:
    w = _weight()
    s_mse, z_mse = mse_weight_range(w, 4)

    def l2(scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
        q = torch.clamp(torch.round(w / scale + zero), 0, 15)
        return ((q - zero) * scale - w).pow(2).sum(dim=1, keepdim=True)

    free_s, free_z = shrink_grid_search(w, 4, l2, grid=100, max_shrink=0.8)
    rows = torch.arange(w.shape[0]) % 2 == 0
    incumbent_err = torch.where(rows[:, None], torch.zeros(w.shape[0], 1, dtype=w.dtype), math.inf)
    kept_s, kept_z = shrink_grid_search(
        w, 4, l2, grid=100, max_shrink=0.8, incumbent=(incumbent_err, s_mse * 7, z_mse)
    )
    torch.testing.assert_close(kept_s[rows], s_mse[rows] * 7, atol=0, rtol=0)  # error 0 cannot be beaten
    torch.testing.assert_close(kept_s[~rows], free_s[~rows], atol=0, rtol=0)
    torch.testing.assert_close(kept_z[~rows], free_z[~rows], atol=0, rtol=0)


def test_mse_weight_range_is_the_shrink_grid_search_with_the_norm_error() -> None:
    w = _weight()

    def err(scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
        q = torch.clamp(torch.round(w / scale + zero), 0, 7)
        return ((q - zero) * scale - w).abs().pow(2.4).sum(dim=1, keepdim=True)

    expected = shrink_grid_search(w, 3, err, grid=50, max_shrink=0.5)
    torch.testing.assert_close(mse_weight_range(w, 3, grid=50, max_shrink=0.5), expected, atol=0, rtol=0)


def test_grad_scale_returns_its_input_bit_for_bit_and_scales_the_gradient():
    from qvgen.quant.fake_quant import grad_scale

    t = (torch.rand(4096, 1, generator=torch.Generator().manual_seed(0)) * 0.37 + 1e-3).requires_grad_(True)
    out = grad_scale(t, 0.0123)
    assert torch.equal(out, t)  # export reads the raw s, z: training must have used exactly those values
    out.sum().backward()
    assert t.grad is not None and torch.allclose(t.grad, torch.full_like(t, 0.0123))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_weight_fake_quant_saving_only_its_inputs_matches_the_op_by_op_graph(dtype: torch.dtype) -> None:
    """The autograd Function behind `fake_quantize_weight` (saves w, s, z; recomputes in backward) gives the
    reference's output and LSQ+ gradients, rows clamped at both ends included."""
    g = torch.Generator().manual_seed(4)
    w = (torch.randn(48, 200, generator=g, dtype=dtype) * 0.05).requires_grad_()
    s = (torch.rand(48, 1, generator=g, dtype=dtype) * 0.01 + 0.004).requires_grad_()
    z = (torch.rand(48, 1, generator=g, dtype=dtype) * 19 - 2).requires_grad_()  # some rows clamp
    grad = torch.randn(48, 200, generator=g, dtype=dtype)
    out = fake_quantize_weight(w, s, z, 4)
    assert out.grad_fn is not None and type(out.grad_fn).__name__ == "_WeightFakeQuantBackward"
    got = torch.autograd.grad(out, (w, s, z), grad)
    ref = ref_weight_fake_quant(w, s, z, 4)  # float64, row by row, through autograd
    want = torch.autograd.grad(ref, (w, s, z), grad.double())
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol * 1e-3)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol * 1e-3)
    with torch.no_grad():
        assert torch.equal(fake_quantize_weight(w, s, z, 4), out)
