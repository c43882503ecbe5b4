"""Fused fake quantizers for QAT on CUDA (Triton): one kernel forward, one backward, per quantizer.

Imported lazily by `qvgen.quant.fake_quant` when `triton_dispatch.use_fused_fake_quant` says so (CUDA
tensors, the ``triton`` extra installed). Each kernel replays the float32 ops of the reference autograd
graph in the same order (IEEE division via ``div_rn``, round-half-even, no FMA contraction):

- weight (LSQ+): ``out = s * (clamp(round(w / s + z), 0, P) - z)``; backward: ``dW = (G s [r in 0..P]) / s``
  (straight-through rounding, clamp mask), ``ds = sum(G (q - z)) + sum(-dv ((w / s) / s))``,
  ``dz = sum(dv) - sum(G s)`` per row.
- activation (clipped per token): ``lo = c_lo min(x)``, ``hi = c_hi max(x)``, ``s = max((hi - lo) / P, 1e-9)``,
  ``z = clamp(-round(lo / s), 0, P)`` (no gradient), ``out = s * (clamp(round(x / s) + z, 0, P) - z)``;
  backward: x gets the straight-through term plus the min/max terms (split evenly over ties, as
  ``amin``/``amax`` do), the clip factors get ``-ds/P * min(x)`` and ``ds/P * max(x)`` per token.

Forward values and ``dW``/``dx`` match the reference bit for bit except at a row's min/max positions
(three gradient terms summed in another order); the per-row sums (``ds``, ``dz``, clip gradients) differ
only by summation order. The activation kernel reads the bf16/fp16 input directly and saves it (not a
float32 copy) for backward.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor

from qvgen.quant.w4a4_triton import _round_half_even, _store_rounded

SCALE_EPS = 1e-9


def _warps(block: int) -> int:
    return 4 if block <= 2048 else 8 if block <= 8192 else 16


@triton.jit
def _weight_fwd_kernel(w_ptr, s_ptr, z_ptr, out_ptr, K, QMAX: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    col = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = col < K
    w = tl.load(w_ptr + row * K + col, mask=mask, other=0.0)
    s = tl.load(s_ptr + row)
    z = tl.load(z_ptr + row)
    q = tl.minimum(tl.maximum(_round_half_even(tl.math.div_rn(w, s) + z), 0.0), QMAX * 1.0)
    tl.store(out_ptr + row * K + col, s * (q - z), mask=mask)


@triton.jit
def _weight_bwd_kernel(
    g_ptr, w_ptr, s_ptr, z_ptr, gw_ptr, gs_ptr, gz_ptr, K, QMAX: tl.constexpr, BLOCK: tl.constexpr
):
    row = tl.program_id(0)
    s = tl.load(s_ptr + row)
    z = tl.load(z_ptr + row)
    acc_sd = tl.zeros((BLOCK,), dtype=tl.float32)
    acc_sr = tl.zeros((BLOCK,), dtype=tl.float32)
    acc_gd = tl.zeros((BLOCK,), dtype=tl.float32)
    acc_gr = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(0, K, BLOCK):
        col = start + tl.arange(0, BLOCK)
        mask = col < K
        g = tl.load(g_ptr + row * K + col, mask=mask, other=0.0)
        w = tl.load(w_ptr + row * K + col, mask=mask, other=0.0)
        t = tl.math.div_rn(w, s)
        r = _round_half_even(t + z)
        inside = (r >= 0.0) & (r <= QMAX * 1.0)
        d = tl.minimum(tl.maximum(r, 0.0), QMAX * 1.0) - z
        gd = g * s
        gr = tl.where(inside & mask, gd, 0.0)
        tl.store(gw_ptr + row * K + col, tl.math.div_rn(gr, s), mask=mask)
        acc_sd += tl.where(mask, g * d, 0.0)
        acc_sr += -gr * tl.math.div_rn(t, s)
        acc_gd += tl.where(mask, gd, 0.0)
        acc_gr += gr
    tl.store(gs_ptr + row, tl.sum(acc_sd, axis=0) + tl.sum(acc_sr, axis=0))
    tl.store(gz_ptr + row, tl.sum(acc_gr, axis=0) - tl.sum(acc_gd, axis=0))


@triton.jit
def _act_fwd_kernel(
    x_ptr, clo_ptr, chi_ptr, out_ptr, stats_ptr, M, K, QMAX: tl.constexpr, BLOCK: tl.constexpr
):
    row = tl.program_id(0)
    k = tl.arange(0, BLOCK)
    mask = k < K
    x = tl.load(x_ptr + row * K + k, mask=mask, other=0.0).to(tl.float32)
    mn = tl.min(tl.where(mask, x, float("inf")), axis=0)
    mx = tl.max(tl.where(mask, x, float("-inf")), axis=0)
    lo = tl.load(clo_ptr + row) * mn
    hi = tl.load(chi_ptr + row) * mx
    span = tl.math.div_rn(hi - lo, QMAX * 1.0)
    s = tl.maximum(span, 1e-9)
    z = tl.minimum(tl.maximum(-_round_half_even(tl.math.div_rn(lo, s)), 0.0), QMAX * 1.0)
    q = tl.minimum(tl.maximum(_round_half_even(tl.math.div_rn(x, s)) + z, 0.0), QMAX * 1.0)
    _store_rounded(out_ptr + row * K + k, s * (q - z), mask)
    tl.store(stats_ptr + row, s)
    tl.store(stats_ptr + M + row, z)
    tl.store(stats_ptr + 2 * M + row, mn)
    tl.store(stats_ptr + 3 * M + row, mx)
    tl.store(stats_ptr + 4 * M + row, span)


@triton.jit
def _act_bwd_kernel(
    g_ptr,
    x_ptr,
    clo_ptr,
    chi_ptr,
    stats_ptr,
    gx_ptr,
    gclip_ptr,
    M,
    K,
    QMAX: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0)
    k = tl.arange(0, BLOCK)
    mask = k < K
    x = tl.load(x_ptr + row * K + k, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + row * K + k, mask=mask, other=0.0).to(tl.float32)
    s = tl.load(stats_ptr + row)
    z = tl.load(stats_ptr + M + row)
    mn = tl.load(stats_ptr + 2 * M + row)
    mx = tl.load(stats_ptr + 3 * M + row)
    span = tl.load(stats_ptr + 4 * M + row)
    t = tl.math.div_rn(x, s)
    v = _round_half_even(t) + z
    inside = (v >= 0.0) & (v <= QMAX * 1.0) & mask
    d = tl.minimum(tl.maximum(v, 0.0), QMAX * 1.0) - z
    gd = g * s
    gt = tl.where(inside, gd, 0.0)
    gs = tl.sum(tl.where(mask, g * d, 0.0), axis=0) + tl.sum(-gt * tl.math.div_rn(t, s), axis=0)
    gs = tl.where(span >= 1e-9, gs, 0.0)  # clamp_min passes the gradient where span >= eps
    g_hi = tl.math.div_rn(gs, QMAX * 1.0)
    g_lo = -g_hi
    is_min = (x == mn) & mask
    is_max = (x == mx) & mask
    n_min = tl.sum(is_min.to(tl.float32), axis=0)
    n_max = tl.sum(is_max.to(tl.float32), axis=0)
    g_mn = tl.math.div_rn(g_lo * tl.load(clo_ptr + row), n_min)
    g_mx = tl.math.div_rn(g_hi * tl.load(chi_ptr + row), n_max)
    gx = tl.math.div_rn(gt, s) + tl.where(is_min, g_mn, 0.0) + tl.where(is_max, g_mx, 0.0)
    _store_rounded(gx_ptr + row * K + k, gx, mask)
    tl.store(gclip_ptr + row, g_lo * mn)
    tl.store(gclip_ptr + M + row, g_hi * mx)


_NO_FMA: dict[str, Any] = {"enable_fp_fusion": False}


class _WeightFakeQuant(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w: Tensor, scale: Tensor, zero: Tensor, bits: int) -> Tensor:  # type: ignore[override]
        n, k = w.shape
        s, z = scale.reshape(n).contiguous(), zero.reshape(n).contiguous()
        out = torch.empty_like(w)
        block = min(triton.next_power_of_2(k), 4096)
        grid = (n, triton.cdiv(k, block))
        _weight_fwd_kernel[grid](
            w, s, z, out, k, QMAX=2**bits - 1, BLOCK=block, num_warps=_warps(block), **_NO_FMA
        )
        ctx.save_for_backward(w, s, z)
        ctx.bits = bits
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor, None]:  # type: ignore[override]
        w, s, z = ctx.saved_tensors
        n, k = w.shape
        gw = torch.empty_like(w)
        gs = torch.empty_like(s)
        gz = torch.empty_like(z)
        block = min(triton.next_power_of_2(k), 2048)
        _weight_bwd_kernel[(n,)](
            grad.contiguous(),
            w,
            s,
            z,
            gw,
            gs,
            gz,
            k,
            QMAX=2**ctx.bits - 1,
            BLOCK=block,
            num_warps=4,
            **_NO_FMA,
        )
        return gw, gs.reshape(n, 1), gz.reshape(n, 1), None


class _ActivationFakeQuant(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x2d: Tensor, clip_lo: Tensor, clip_hi: Tensor, bits: int) -> Tensor:  # type: ignore[override]
        m, k = x2d.shape
        out = torch.empty_like(x2d)
        stats = torch.empty(5, m, dtype=torch.float32, device=x2d.device)
        block = triton.next_power_of_2(k)
        _act_fwd_kernel[(m,)](
            x2d,
            clip_lo,
            clip_hi,
            out,
            stats,
            m,
            k,
            QMAX=2**bits - 1,
            BLOCK=block,
            num_warps=_warps(block),
            **_NO_FMA,
        )
        ctx.save_for_backward(x2d, clip_lo, clip_hi, stats)
        ctx.bits = bits
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor, None]:  # type: ignore[override]
        x2d, clip_lo, clip_hi, stats = ctx.saved_tensors
        m, k = x2d.shape
        gx = torch.empty_like(x2d)
        gclip = torch.empty(2, m, dtype=torch.float32, device=x2d.device)
        block = triton.next_power_of_2(k)
        _act_bwd_kernel[(m,)](
            grad.contiguous(), x2d, clip_lo, clip_hi, stats, gx, gclip, m, k,
            QMAX=2**ctx.bits - 1, BLOCK=block, num_warps=_warps(block), **_NO_FMA,
        )  # fmt: skip
        return gx, gclip[0], gclip[1], None


def fused_fake_quantize_weight(w: Tensor, scale: Tensor, zero_point: Tensor, bits: int) -> Tensor:
    """`qvgen.quant.fake_quantize_weight` for a float32 ``[out, in]`` weight, ``[out, 1]`` s and z, fused."""
    return _WeightFakeQuant.apply(w.contiguous(), scale, zero_point, bits)  # type: ignore[no-any-return]


def fused_fake_quantize_activation(x: Tensor, clip_lo: Tensor, clip_hi: Tensor, bits: int) -> Tensor:
    """``fake_quantize_activation(x.float(), lo, hi, bits).to(x.dtype)`` fused; lo/hi broadcast like ``[..., 1]``."""
    lead = x.shape[:-1]
    k = x.shape[-1]
    lo = clip_lo.to(torch.float32).expand(*lead, 1).reshape(-1)
    hi = clip_hi.to(torch.float32).expand(*lead, 1).reshape(-1)
    out = _ActivationFakeQuant.apply(x.reshape(-1, k).contiguous(), lo.contiguous(), hi.contiguous(), bits)
    return out.reshape(x.shape)  # type: ignore[no-any-return]
