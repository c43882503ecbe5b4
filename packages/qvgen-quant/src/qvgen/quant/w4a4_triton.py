"""Fused W4A4 linear for CUDA in Triton: one activation-quant pass, then an int8 GEMM on the packed weight.

Imported lazily (needs the ``triton`` extra: ``pip install 'qvgen-quant[triton]'``); the dispatch check is
`qvgen.quant.triton_dispatch.fused_w4a4_unsupported`. The numerics are those of `DeployLinear`'s reference path:

1. ``_act_quant_kernel`` (one program per token) reads the bf16/fp16 row once: per-token clipped min/max
   with the sample's clip pair, ``s = max((hi - lo) / P, 1e-9)``, ``z = clamp(-round(lo / s), 0, P)``,
   codes ``q = clamp(round(x / s) + z, 0, P)`` and ``u = q - o`` (``o = z`` for P <= 127, else 128), written
   as int8 with the even columns first and the odd columns second (so that one packed weight byte meets
   its two activation codes in two contiguous tiles), plus ``rowsum(u)`` and ``o - z`` per token. IEEE
   division (``div_rn``), round-half-even and no FMA contraction make the codes bit-identical to the fake
   quantizer's.
2. ``_w4a4_gemm_kernel`` reads the packed int4 weight ``[N, K/2]`` (K-major, as stored), splits each byte
   into its low (even column) and high (odd column) nibble in registers, and runs two int8 ``tl.dot``s per
   K tile into an int32 accumulator. With ``c = clamp(round(z_w), 0, P)`` the epilogue forms
   ``acc - c * rowsum(u)`` exactly in int32 (that is ``u @ (q_w - c).T``) and then
   ``s_x * (s_w * acc8 - s_w d * rowsum(u) + (o - z_x) * s_w (rowsum(w8) - K d)) + bias`` in fp32, stored
   in the input dtype. ``SWAP_AB`` computes the transposed tile (weight as the left operand, which Hopper's
   wgmma can take from registers); autotuning picks the orientation per shape.

Resident state: the packed weight plus five float32 vectors of length N (`weight_vectors`).
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor

from qvgen.quant.triton_dispatch import interpreting


@torch.no_grad()
def weight_vectors(
    weight_packed: Tensor,
    scale: Tensor,
    zero_point: Tensor,
    bias: Tensor | None,
    in_features: int,
    weight_qmax: int,
) -> Tensor:
    """The epilogue's per-row float32 ``[5, N]``: ``s_w``, ``-s_w d``, ``s_w (rowsum(w8) - K d)``, bias, ``c``.

    Same float ops as the reference path's coefficients. ``rowsum`` comes from the packed bytes (the
    padding nibble of an odd width is zero); nothing of size ``N x K`` outlives this call.
    """
    rowsum_q = (weight_packed & 0x0F).sum(dim=1, dtype=torch.int64) + (weight_packed >> 4).sum(
        dim=1, dtype=torch.int64
    )
    z = zero_point.float()
    c = torch.clamp(torch.round(z), 0, weight_qmax)
    d = z - c
    rowsum = (rowsum_q - in_features * c.long()).float()
    s = scale.float()
    b = bias.float() if bias is not None else torch.zeros_like(s)
    return torch.stack([s, -s * d, s * (rowsum - in_features * d), b, c]).contiguous()


@triton.jit
def _round_half_even(v):
    """torch.round on float32: nearest integer, ties to even (exact; no FMA-sensitive steps)."""
    r = tl.floor(v)
    f = v - r
    odd = (r - 2.0 * tl.floor(r * 0.5)) == 1.0
    return tl.where((f > 0.5) | ((f == 0.5) & odd), r + 1.0, r)


@triton.jit
def _store_rounded(ptrs, y, mask):
    """Store float32 ``y`` in the pointer's dtype, rounding to nearest-even for bf16 by hand.

    The bits are rounded first, so the cast itself is exact (Triton's CPU interpreter truncates on casts to bf16).
    """
    if ptrs.dtype.element_ty == tl.bfloat16:
        bits = y.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        y = bits.to(tl.float32, bitcast=True)
    tl.store(ptrs, y.to(ptrs.dtype.element_ty), mask=mask)


@triton.jit
def _act_quant_kernel(
    x_ptr,
    u_ptr,
    sx_ptr,
    rsu_ptr,
    off_ptr,
    clo_ptr,
    chi_ptr,
    K,
    tokens_per_sample,
    stride_xm,
    QMAX: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0)
    k = tl.arange(0, BLOCK)
    mask = k < K
    x = tl.load(x_ptr + row * stride_xm + k, mask=mask, other=0.0).to(tl.float32)
    mn = tl.min(tl.where(mask, x, float("inf")), axis=0)
    mx = tl.max(tl.where(mask, x, float("-inf")), axis=0)
    sample = row // tokens_per_sample
    lo = tl.load(clo_ptr + sample) * mn
    hi = tl.load(chi_ptr + sample) * mx
    scale = tl.maximum(tl.math.div_rn(hi - lo, QMAX * 1.0), 1e-9)
    zero = tl.minimum(tl.maximum(-_round_half_even(tl.math.div_rn(lo, scale)), 0.0), QMAX * 1.0)
    q = tl.minimum(tl.maximum(_round_half_even(tl.math.div_rn(x, scale)) + zero, 0.0), QMAX * 1.0)
    if QMAX <= 127:
        offset = zero
    else:
        offset = 128.0
    u = tl.where(mask, q - offset, 0.0).to(tl.int32)
    half = K // 2
    dest = (k % 2) * half + k // 2
    tl.store(u_ptr + row * K + dest, u.to(tl.int8), mask=mask)
    tl.store(sx_ptr + row, scale)
    tl.store(rsu_ptr + row, tl.sum(u, axis=0))
    tl.store(off_ptr + row, offset - zero)


@triton.jit
def _w4a4_gemm_kernel(
    a_ptr,
    b_ptr,
    out_ptr,
    sx_ptr,
    rsu_ptr,
    off_ptr,
    wv_ptr,
    M,
    N,
    K,
    M_KEY,
    stride_bn,
    stride_om,
    HAS_BIAS: tl.constexpr,
    SWAP_AB: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    # grouped launch order: GROUP_M row tiles share each weight column tile while it is in L2
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    width = GROUP_M * num_n
    first_m = (pid // width) * GROUP_M
    size_m = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % width) % size_m
    pid_n = (pid % width) // size_m
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    ra = tl.where(rm < M, rm, 0)  # rows past M read row 0 and are never stored
    rb = tl.where(rn < N, rn, 0)
    BKH: tl.constexpr = BLOCK_K // 2
    rk = tl.arange(0, BKH)
    half = K // 2
    if SWAP_AB:
        a_tile = a_ptr + ra[None, :] * K + rk[:, None]  # [BKH, BM], K-contiguous
        b_tile = b_ptr + rb[:, None] * stride_bn + rk[None, :]  # [BN, BKH]
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.int32)
    else:
        a_tile = a_ptr + ra[:, None] * K + rk[None, :]  # [BM, BKH]
        b_tile = b_ptr + rb[None, :] * stride_bn + rk[:, None]  # [BKH, BN], K-contiguous
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for _ in range(0, half, BKH):
        a_even = tl.load(a_tile)
        a_odd = tl.load(a_tile + half)
        packed = tl.load(b_tile)
        w_lo = (packed & 0x0F).to(tl.int8)
        w_hi = (packed >> 4).to(tl.int8)
        if SWAP_AB:
            acc = tl.dot(w_lo, a_even, acc, out_dtype=tl.int32)
            acc = tl.dot(w_hi, a_odd, acc, out_dtype=tl.int32)
        else:
            acc = tl.dot(a_even, w_lo, acc, out_dtype=tl.int32)
            acc = tl.dot(a_odd, w_hi, acc, out_dtype=tl.int32)
        a_tile += BKH
        b_tile += BKH
    m_ok = rm < M
    n_ok = rn < N
    sx = tl.load(sx_ptr + rm, mask=m_ok, other=0.0)
    rsu = tl.load(rsu_ptr + rm, mask=m_ok, other=0)
    off = tl.load(off_ptr + rm, mask=m_ok, other=0.0)
    sw = tl.load(wv_ptr + rn, mask=n_ok, other=0.0)
    c0 = tl.load(wv_ptr + N + rn, mask=n_ok, other=0.0)
    c1 = tl.load(wv_ptr + 2 * N + rn, mask=n_ok, other=0.0)
    bias = tl.load(wv_ptr + 3 * N + rn, mask=n_ok, other=0.0)
    cz = tl.load(wv_ptr + 4 * N + rn, mask=n_ok, other=0.0).to(tl.int32)
    if SWAP_AB:
        acc8 = acc - cz[:, None] * rsu[None, :]
        y = acc8.to(tl.float32) * sw[:, None] + (
            rsu.to(tl.float32)[None, :] * c0[:, None] + off[None, :] * c1[:, None]
        )
        y = y * sx[None, :]
        if HAS_BIAS:
            y = y + bias[:, None]
        ptrs = out_ptr + rm[None, :] * stride_om + rn[:, None]
        ok = m_ok[None, :] & n_ok[:, None]
    else:
        acc8 = acc - rsu[:, None] * cz[None, :]
        y = acc8.to(tl.float32) * sw[None, :] + (
            rsu.to(tl.float32)[:, None] * c0[None, :] + off[:, None] * c1[None, :]
        )
        y = y * sx[:, None]
        if HAS_BIAS:
            y = y + bias[None, :]
        ptrs = out_ptr + rm[:, None] * stride_om + rn[None, :]
        ok = m_ok[:, None] & n_ok[None, :]
    _store_rounded(ptrs, y, ok)


def _config(bm: int, bn: int, bk: int, warps: int, stages: int, swap: bool) -> triton.Config:
    return triton.Config(
        {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8, "SWAP_AB": swap},
        num_warps=warps,
        num_stages=stages,
    )


GEMM_CONFIGS = [
    # large M (>= 2048 tokens): Wan 1.3B (1536 <-> 8960), CogVideoX-2B (1920 <-> 7680)
    _config(128, 256, 128, 8, 3, False),
    _config(128, 128, 128, 4, 4, False),
    _config(256, 128, 128, 8, 3, False),
    _config(256, 128, 128, 8, 3, True),
    _config(128, 256, 128, 8, 3, True),
    _config(128, 128, 128, 4, 4, True),
    # small M (256 .. 1024 tokens, text and time projections)
    _config(64, 128, 128, 4, 4, False),
    _config(64, 64, 128, 4, 4, False),
    _config(64, 128, 128, 4, 4, True),
    _config(64, 128, 64, 4, 4, False),
]
"""Autotuned per (M bucket, N, K); pruned to the tiles that divide K and suit M."""

SMALL_M = 1024


def _prune(configs: list[triton.Config], named_args: dict[str, Any], **kwargs: Any) -> list[triton.Config]:
    k, m_key = named_args["K"], named_args["M_KEY"]
    fits = [c for c in configs if k % c.kwargs["BLOCK_K"] == 0]
    small = [c for c in fits if c.kwargs["BLOCK_M"] <= 64]
    large = [c for c in fits if c.kwargs["BLOCK_M"] > 64]
    chosen = small if m_key <= SMALL_M else large
    return chosen or fits


_autotuned: Any = None


def _gemm_autotuned() -> Any:
    global _autotuned
    if _autotuned is None:
        _autotuned = triton.autotune(
            configs=GEMM_CONFIGS,
            key=["M_KEY", "N", "K", "HAS_BIAS"],
            prune_configs_by={"early_config_prune": _prune},
        )(_w4a4_gemm_kernel)
    return _autotuned


INTERPRET_CONFIG = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 64, "GROUP_M": 2, "SWAP_AB": False}
"""The fixed tile under the CPU interpreter (autotuning there would only cost time)."""


def _act_warps(block: int) -> int:
    return 4 if block <= 2048 else 8 if block <= 8192 else 16


def quantize_activation(
    x2d: Tensor, clip_lo: Tensor, clip_hi: Tensor, act_bits: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Run the activation pass: (u int8 ``[M, K]`` even|odd columns, s_x, rowsum(u) int32, o - z_x) per token.

    ``clip_lo``/``clip_hi``: float32 ``[B]`` clip factors, sample ``b`` owning rows ``[b M/B, (b+1) M/B)``.
    """
    m, k = x2d.shape
    dev = x2d.device
    u = torch.empty(m, k, dtype=torch.int8, device=dev)
    sx = torch.empty(m, dtype=torch.float32, device=dev)
    rsu = torch.empty(m, dtype=torch.int32, device=dev)
    off = torch.empty(m, dtype=torch.float32, device=dev)
    block = triton.next_power_of_2(k)
    _act_quant_kernel[(m,)](
        x2d,
        u,
        sx,
        rsu,
        off,
        clip_lo,
        clip_hi,
        k,
        m // clip_lo.numel(),
        x2d.stride(0),
        QMAX=2**act_bits - 1,
        BLOCK=block,
        num_warps=_act_warps(block),
        enable_fp_fusion=False,
    )
    return u, sx, rsu, off


def w4a4_linear(
    x2d: Tensor,
    weight_packed: Tensor,
    vectors: Tensor,
    clip_lo: Tensor,
    clip_hi: Tensor,
    *,
    act_bits: int,
    has_bias: bool,
    out_dtype: torch.dtype | None = None,
    config: dict[str, Any] | None = None,
) -> Tensor:
    """``y [M, N]`` of a W4A4 deploy layer for ``x2d [M, K]`` (bf16/fp16, contiguous); see the module doc.

    ``vectors`` is `weight_vectors`; ``out_dtype`` defaults to the input's; ``config`` fixes the tile
    (tests); by default the autotuned kernel runs (the interpreter's fixed tile under ``TRITON_INTERPRET``).
    """
    m, k = x2d.shape
    n = weight_packed.shape[0]
    if weight_packed.shape[1] * 2 != k or vectors.shape != (5, n):
        raise ValueError(
            f"w4a4_linear: input [{m}, {k}] does not match packed weight {tuple(weight_packed.shape)} "
            f"and vectors {tuple(vectors.shape)}"
        )
    u, sx, rsu, off = quantize_activation(x2d, clip_lo, clip_hi, act_bits)
    out = torch.empty(m, n, dtype=out_dtype or x2d.dtype, device=x2d.device)
    m_key = min(65536, triton.next_power_of_2(m))
    args = (
        u,
        weight_packed,
        out,
        sx,
        rsu,
        off,
        vectors,
        m,
        n,
        k,
        m_key,
        weight_packed.stride(0),
        out.stride(0),
    )
    if config is None and interpreting():
        config = INTERPRET_CONFIG
    if config is not None:
        if k % config["BLOCK_K"]:
            raise ValueError(f"w4a4_linear: in_features={k} is not a multiple of BLOCK_K={config['BLOCK_K']}")
        tiles = (triton.cdiv(m, config["BLOCK_M"]) * triton.cdiv(n, config["BLOCK_N"]),)
        _w4a4_gemm_kernel[tiles](*args, HAS_BIAS=has_bias, enable_fp_fusion=False, **config)
    else:

        def grid(meta: dict[str, Any]) -> tuple[int]:
            return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)

        _gemm_autotuned()[grid](*args, HAS_BIAS=has_bias, enable_fp_fusion=False)
    return out
