"""SVDQuant-style kept branch: per-input-channel smoothing plus a 16-bit low-rank branch beside the GEMM.

For a Linear ``y = x Wᵀ + b`` with smoothing factors ``λ`` (one per input channel):

    x̂ = x / λ,   Ŵ = W · diag(λ),   Ŵ = L₁L₂ + R  with  L₁L₂ = SVD_r(Ŵ)
    y = Q(x̂) Q(R)ᵀ  +  x̂ L₂ᵀ L₁ᵀ  +  b

The residual ``R`` becomes the quantized layer's latent weight; ``L₁`` (``up``, ``[out, r]``) and ``L₂``
(``down``, ``[r, in]``) are stored in 16 bits and **kept at inference**, fed with the smoothed but
unquantized input. This is the design QVGen's rank decay removes (its Φ is gone before export).
λ_j = max|x_j|^α / max|W_{:,j}|^(1−α) (SmoothQuant's migration strength α).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

KeptDType = Literal["bfloat16", "float16"]
_DTYPES: dict[str, torch.dtype] = {"bfloat16": torch.bfloat16, "float16": torch.float16}
SMOOTH_EPS = 1e-5
"""Lower bound of the activation / weight channel maxima and of λ."""


def smoothing_factors(act_absmax: Tensor, weight: Tensor, alpha: float) -> Tensor:
    """λ `[in]` (float32): max|x_j|^α / max_i|W_ij|^(1−α), both maxima floored at 1e-5."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"smoothing alpha must be in [0, 1], got {alpha}")
    a = act_absmax.detach().float().clamp_min(SMOOTH_EPS)
    w = weight.detach().float().abs().amax(dim=0).clamp_min(SMOOTH_EPS)
    if a.shape != w.shape:
        raise ValueError(
            f"activation maxima {tuple(a.shape)} do not match the weight's in_features {tuple(w.shape)}"
        )
    return (a.pow(alpha) / w.pow(1.0 - alpha)).clamp_min(SMOOTH_EPS)


class SmoothLowRank(nn.Module):
    """The kept branch of one layer: buffers ``smooth`` `[in]` (float32), ``down`` `[r, in]`, ``up`` `[out, r]`.

    ``smooth_input(x)`` returns x/λ (what both the quantized GEMM and the branch see); calling the module
    on that smoothed input returns the branch's output ``x̂ L₂ᵀ L₁ᵀ`` `[..., out]`, computed in float32 from
    the 16-bit factors. A fresh module is the identity smoothing with a zero branch.
    """

    smooth: Tensor
    down: Tensor
    up: Tensor

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        *,
        dtype: KeptDType = "bfloat16",
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if not 1 <= rank <= min(in_features, out_features):
            raise ValueError(
                f"kept low-rank branch: rank {rank} must be in 1..min(in, out) = {min(in_features, out_features)} "
                f"for a {out_features}x{in_features} layer"
            )
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.dtype_name: KeptDType = dtype
        self.register_buffer("smooth", torch.ones(in_features, dtype=torch.float32, device=device))
        self.register_buffer("down", torch.zeros(rank, in_features, dtype=_DTYPES[dtype], device=device))
        self.register_buffer("up", torch.zeros(out_features, rank, dtype=_DTYPES[dtype], device=device))

    @torch.no_grad()
    def fit_(self, weight: Tensor, act_absmax: Tensor, alpha: float) -> Tensor:
        """Set λ and the SVD factors from `weight` `[out, in]`; return the residual R (float32) to quantize."""
        lam = smoothing_factors(act_absmax, weight, alpha).to(self.smooth.device)
        w_hat = weight.detach().float() * lam[None, :]
        u, s, vh = torch.linalg.svd(w_hat, full_matrices=False)
        root = s[: self.rank].sqrt()
        up = u[:, : self.rank] * root[None, :]
        down = root[:, None] * vh[: self.rank]
        self.smooth.copy_(lam)
        self.up.copy_(up)
        self.down.copy_(down)
        # the residual is taken against the 16-bit factors actually stored, so Ŵ = up·down + R holds for them
        return w_hat - self.up.float() @ self.down.float()

    def smooth_input(self, x: Tensor) -> Tensor:
        """x / λ in x's dtype."""
        return x / self.smooth.to(x.dtype)

    def forward(self, x_smoothed: Tensor) -> Tensor:
        xf = x_smoothed.float()
        with torch.autocast(xf.device.type, enabled=False):  # float32 as documented, also under autocast
            return (xf @ self.down.float().T) @ self.up.float().T

    def nbytes(self) -> int:
        """Bytes of the stored branch (λ, down, up)."""
        return sum(t.numel() * t.element_size() for t in (self.smooth, self.down, self.up))

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        # follow device moves, keep the stored dtypes (float32 λ, 16-bit factors) whatever the model dtype
        dtypes = {name: buf.dtype for name, buf in self._buffers.items() if buf is not None}
        super()._apply(fn, recurse)
        for name, dtype in dtypes.items():
            buf = self._buffers[name]
            if buf is not None and buf.dtype != dtype:
                self._buffers[name] = buf.to(dtype)
        return self

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, dtype={self.dtype_name}"
