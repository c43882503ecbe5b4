"""The W4A4 layer arithmetic on integer codes, shared by `DeployLinear` and `QuantLinear` at inference.

With weight codes ``q_w`` in ``[0, P]``, per-row scale ``s_w`` and real zero point ``z_w``, activation codes
``q_x`` with per-token ``s_x`` and integer ``z_x``, ``w8 = q_w - c`` (``c = clamp(round(z_w), 0, P)``),
``d = z_w - c`` and ``u = q_x - o`` (``o = z_x`` when ``u`` fits int8, else 128)::

    y = s_x * s_w * ( u @ w8.T  -  d * rowsum(u)  +  (o - z_x) * (rowsum(w8) - K * d) ) + bias

which is ``F.linear(s_x * (q_x - z_x), s_w * (q_w - z_w)) + bias`` rearranged so the only large product is
an integer GEMM, taken exactly. Both layer kinds run this one function, so a fake-quant model evaluated
without gradients and its deploy export give the same output bit for bit. That matters at 4 bits: a
one-ulp difference between two float GEMMs flips an activation code across a rounding boundary, the flip
moves the next layer's input by a whole quantization step, and such flips compound through the blocks
(docs/method.md §10.2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from qvgen.quant.fake_quant import ActivationQuantizer
from qvgen.quant.integer_gemm import PreparedInt8Weight, int8_gemm, prepare_int8_weight


@dataclass(frozen=True, slots=True)
class Int8LinearWeight:
    """A layer's weight in the form `int8_linear` consumes: the GEMM operand, the two rank-1 coefficient
    rows ``[2, N]`` (of ``rowsum(u)`` and ``o - z_x``) and the float32 bias (or None)."""

    gemm: PreparedInt8Weight
    coef: Tensor
    bias: Tensor | None


def prepare_int8_linear(
    codes: Tensor,
    scale: Tensor,
    zero_point: Tensor,
    bias: Tensor | None,
    qmax: int,
    device: torch.device,
    *,
    transient: bool = False,
) -> Int8LinearWeight:
    """`Int8LinearWeight` from integer codes ``[N, K]`` in ``[0, qmax]`` (qmax <= 15), ``s_w``/``z_w`` ``[N]``.

    ``transient``: the weight serves one call (a fake-quant layer rounds its codes every forward). Off CUDA
    it then stays in float32 (integer values, so the product is still exact) and skips FBGEMM's packing,
    which only pays off when cached; ``codes`` may be overwritten.
    """
    k = codes.shape[1]
    s = scale.detach().float().reshape(-1)
    z = zero_point.detach().float().reshape(-1)
    c = torch.clamp(torch.round(z), 0, qmax)
    d = z - c
    gemm: PreparedInt8Weight
    if transient and device.type != "cuda":
        w8f = codes.float().sub_(c[:, None])  # in place when codes are float32
        rowsum = w8f.sum(dim=1)  # exact: integers, |sum| <= 15 K
        gemm = PreparedInt8Weight("float", w8f.to(device), s.to(device))
    else:
        w8 = (codes.to(torch.int16) - c.to(torch.int16)[:, None]).to(torch.int8)
        rowsum = w8.sum(dim=1, dtype=torch.int64).float()
        gemm = prepare_int8_weight(w8, s, device)
    coef = torch.stack([-s * d, s * (rowsum - k * d)]).to(device)
    return Int8LinearWeight(gemm, coef, None if bias is None else bias.detach().float().to(device))


def int8_linear(x: Tensor, act: ActivationQuantizer, weight: Int8LinearWeight) -> Tensor:
    """The W4A4 layer on ``x [..., K]`` (any float dtype): float32 ``[M, N]``, M the tokens of ``x``."""
    xc = x.float()
    scale, zero = act.qparams(xc)  # per token [..., 1], the fake quantizer's own code
    qmax = 2**act.bits - 1
    k = x.shape[-1]
    scale = scale.reshape(-1, 1)
    zero = zero.reshape(-1, 1)
    # u = q_x - o with q_x = clamp(round(x / s) + z, 0, P), computed in place (one new [M, K] buffer).
    # o = z_x (u in [-P, P], fits int8) when P <= 127, else o = 128. Exact: all values are small integers.
    u = torch.div(xc.reshape(-1, k), scale).round_()
    if qmax <= 127:
        offset = zero
        u.clamp_(min=-zero, max=qmax - zero)
    else:
        offset = torch.full_like(zero, 128.0)
        u.add_(zero).clamp_(0, qmax).sub_(offset)
    y = int8_gemm(u, weight.gemm)
    lhs = torch.cat([u.sum(dim=1, keepdim=True), offset - zero], dim=1)
    y.addmm_(lhs, weight.coef).mul_(scale)
    if weight.bias is not None:
        y.add_(weight.bias)
    return y
