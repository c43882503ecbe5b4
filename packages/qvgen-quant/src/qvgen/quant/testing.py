"""Float64 reference quantizers, written plainly (loops, no shared code) for parity tests in any package,
and `randomize_kept_branches_` for tests and benchmarks of SVDQuant's kept branch.

Each reference function states the formula of docs/method.md it implements. They take and return float64
tensors and keep autograd, so gradients can be compared too (STE rounding as `(round(x) - x).detach() + x`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from qvgen.quant.svdquant import SmoothLowRank

EPS = 1e-9


def ref_round_ste(x: Tensor) -> Tensor:
    """round(x) forward, identity gradient."""
    return (x.round() - x).detach() + x


def ref_grad_scale(t: Tensor, g: float) -> Tensor:
    """LSQ gradient scaling: value t, gradient times g."""
    return (t - t * g).detach() + t * g


def ref_weight_fake_quant(
    w: Tensor, scale: Tensor, zero_point: Tensor, bits: int, *, grad_scaling: bool = False
) -> Tensor:
    """docs/method.md §3.1-3.2: s·(clamp(⌊W/s + z⌉, 0, P) − z) per row, s and z `[out, 1]`, in float64."""
    w, s, z = w.double(), scale.double(), zero_point.double()
    qmax = 2**bits - 1
    if grad_scaling:
        g = 1.0 / math.sqrt(w.shape[1] * qmax)
        s, z = ref_grad_scale(s, g), ref_grad_scale(z, g)
    rows = []
    for i in range(w.shape[0]):
        q = torch.clamp(ref_round_ste(w[i] / s[i] + z[i]), 0, qmax)
        rows.append(s[i] * (q - z[i]))
    return torch.stack(rows)


def ref_mse_init(
    w: Tensor, bits: int, *, grid: int = 100, max_shrink: float = 0.8, norm: float = 2.4
) -> tuple[Tensor, Tensor]:
    """docs/method.md §3.3, one row at a time: first k with strictly smallest Σ|Q(W)−W|^norm; (s, z) `[out, 1]`."""
    w = w.detach().double()
    qmax = 2**bits - 1
    scales, zeros = [], []
    for i in range(w.shape[0]):
        row = w[i]
        row_min, row_max = row.min(), row.max()
        best_err, best = None, None
        for k in range(int(max_shrink * grid)):
            p = 1.0 - k / grid
            lo, hi = p * row_min, p * row_max
            s = torch.clamp((hi - lo) / qmax, min=EPS)
            z = -lo / s
            q = torch.clamp(torch.round(row / s + z), 0, qmax)
            err = ((s * (q - z) - row).abs() ** norm).sum()
            if best_err is None or err < best_err:
                best_err, best = err, (s, z)
        assert best is not None
        scales.append(best[0])
        zeros.append(best[1])
    return torch.stack(scales).reshape(-1, 1), torch.stack(zeros).reshape(-1, 1)


def ref_minmax_init(w: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """Full-range (p = 1) scale and real zero point per row, float64 `[out, 1]`."""
    w = w.detach().double()
    qmax = 2**bits - 1
    s = torch.clamp((w.amax(1, keepdim=True) - w.amin(1, keepdim=True)) / qmax, min=EPS)
    return s, -w.amin(1, keepdim=True) / s


def ref_group_index(
    timesteps: Sequence[float], groups: int, mode: str, num_train_timesteps: int = 1000
) -> list[int]:
    """docs/method.md §4.2 / B2: `bin` min(G−1, ⌊t·G/T⌋) (clamped at 0), `mod` int(t) mod G, per sample."""
    out = []
    for t in timesteps:
        if mode == "bin":
            out.append(min(groups - 1, max(0, math.floor(float(t) * groups / num_train_timesteps))))
        elif mode == "mod":
            out.append(int(t) % groups)
        else:
            raise ValueError(f"unknown group mode {mode!r}")
    return out


def ref_act_fake_quant(x: Tensor, clip_lo: Sequence[Tensor], clip_hi: Sequence[Tensor], bits: int) -> Tensor:
    """docs/method.md §4.1 per token, float64: sample b uses clip factors clip_lo[b], clip_hi[b] (0-d tensors).

    lo = c_lo·min(x), hi = c_hi·max(x), s = max((hi−lo)/P, 1e−9), z = clamp(−round(lo/s), 0, P) (no grad),
    Q(x) = s·(clamp(⌊x/s⌉ + z, 0, P) − z). `x` is `[B, ..., C]`.
    """
    x = x.double()
    qmax = 2**bits - 1
    samples = []
    for b in range(x.shape[0]):
        tokens = x[b].reshape(-1, x.shape[-1])
        c_lo, c_hi = clip_lo[b].double(), clip_hi[b].double()
        out_rows = []
        for j in range(tokens.shape[0]):
            tok = tokens[j]
            lo, hi = c_lo * tok.min(), c_hi * tok.max()
            s = torch.clamp((hi - lo) / qmax, min=EPS)
            z = torch.clamp(-torch.round(lo / s), 0, qmax).detach()
            q = torch.clamp(ref_round_ste(tok / s) + z, 0, qmax)
            out_rows.append(s * (q - z))
        samples.append(torch.stack(out_rows).reshape(x.shape[1:]))
    return torch.stack(samples)


@torch.no_grad()
def randomize_kept_branches_(model: nn.Module, seed: int = 7) -> None:
    """Give every SVDQuant kept branch in `model` a non-trivial λ (in [0.5, 1.5)) and small random factors.

    A fresh branch smooths by 1 and adds zero, which would let a test pass without running its arithmetic.
    """
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        kept = getattr(m, "kept", None)
        if isinstance(kept, SmoothLowRank):
            kept.smooth.copy_(torch.rand(kept.smooth.shape, generator=g) + 0.5)
            kept.down.copy_(torch.randn(kept.down.shape, generator=g) * 0.05)
            kept.up.copy_(torch.randn(kept.up.shape, generator=g) * 0.05)
