"""Φ = L·diag(γ)·R: the low-rank branch and the fp32 SVD math behind its init and re-SVD."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

__all__ = ["LowRankBranch", "PhiGroup", "balanced_factors", "resvd_factors"]


class PhiGroup:
    """What the branches of one `attach_` call share: γ, the rank last applied, the decay mode and policy.

    γ is one float32 vector of length r0, written once per step by `apply_`.

    Branches read their first `width` entries; γ_i depends only on i and the step, so one vector serves
    all layers and the per-step update is a single in-place fill instead of a loop over modules (B5).
    It is deliberately not a registered buffer: it is derived from the step, so it is not checkpointed,
    and its device follows the branches lazily (see `LowRankBranch.forward`).
    """

    __slots__ = ("mode", "optimizer_state", "rank", "values")

    def __init__(
        self,
        width: int,
        mode: Literal["resvd", "columns"] = "resvd",
        optimizer_state: Literal["reset", "slice"] = "reset",
    ) -> None:
        self.values = torch.ones(width)
        self.rank = width
        """The schedule rank last applied (lets `apply_` skip steps without an event)."""
        self.mode = mode
        self.optimizer_state = optimizer_state


class LowRankBranch(nn.Module):
    """Φ for one [out, in] weight: `forward()` returns (L·γ) @ R as an [out, in] float32 tensor.

    L [out, w] and R [w, in] are the float32 master Parameters (the ones the optimizer holds), columns in
    descending singular-value order; w (`width`) shrinks at decay boundaries in `resvd` mode.
    """

    def __init__(self, L: Tensor, R: Tensor, group: PhiGroup | None = None) -> None:
        super().__init__()
        if L.ndim != 2 or R.ndim != 2 or L.shape[1] != R.shape[0]:
            raise ValueError(
                f"LowRankBranch: need L [out, r] and R [r, in], got {tuple(L.shape)} and {tuple(R.shape)}"
            )
        self.L = nn.Parameter(L.detach().float().clone())
        self.R = nn.Parameter(R.detach().float().clone())
        self.group = group if group is not None else PhiGroup(L.shape[1])
        self.owner: nn.Module | None
        object.__setattr__(self, "owner", None)  # the QuantLinear it is plugged into; not a submodule
        if self.group.values.numel() < L.shape[1]:
            raise ValueError(
                f"LowRankBranch: the group's γ has {self.group.values.numel()} entries < width {L.shape[1]}"
            )

    @property
    def width(self) -> int:
        return self.L.shape[1]

    @property
    def gamma(self) -> Tensor:
        """This branch's γ (a view of the shared vector)."""
        return self.group.values[: self.width]

    def forward(self) -> Tensor:
        shared = self.group
        if shared.values.device != self.L.device:  # once, after the model moved
            shared.values = shared.values.to(self.L.device)
        # Φ in the factors' float32, not in autocast's bf16
        with torch.autocast(self.L.device.type, enabled=False):
            return (self.L * shared.values[: self.width]) @ self.R

    def extra_repr(self) -> str:
        return f"out={self.L.shape[0]}, in={self.R.shape[1]}, width={self.width}"


def _canonical_signs(U: Tensor, Vh: Tensor, like: Tensor | None) -> tuple[Tensor, Tensor]:
    """Fix each component's sign so identical inputs give identical factors on every rank.

    With `like` (the old L columns), column i points the same way as like[:, i]; otherwise the entry of
    largest magnitude in each column of U is made positive.
    """
    if like is not None:
        ref = (U * like[:, : U.shape[1]]).sum(0)
    else:
        ref = U.gather(0, U.abs().argmax(0, keepdim=True)).squeeze(0)
    sign = torch.where(ref < 0, -1.0, 1.0).to(U.dtype)
    return U * sign, Vh * sign[:, None]


def balanced_factors(E: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """Best rank-`rank` approximation of E as L = U√Σ, R = √Σ Vᵀ (float32, descending σ).

    `rank` is clipped to min(E.shape); L @ R equals the truncated SVD of E (docs/method.md §5.2).
    """
    E = E.detach().float()
    r = min(rank, *E.shape)
    U, S, Vh = torch.linalg.svd(E, full_matrices=False)
    U, Vh = _canonical_signs(U[:, :r], Vh[:r], None)
    root = S[:r].sqrt()
    return U * root, root[:, None] * Vh


def resvd_factors(L: Tensor, R: Tensor, like: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Re-decompose the product L @ R into balanced SVD factors of the same rank, without forming it.

    QR of L and Rᵀ reduces the SVD to an r×r core, so the cost is O((out + in)·r²). The product is
    unchanged up to float32 rounding; only the basis is rotated into descending singular order.
    """
    L, R = L.detach().float(), R.detach().float()
    Ql, Tl = torch.linalg.qr(L)
    Qr, Tr = torch.linalg.qr(R.T)
    Uc, S, Vhc = torch.linalg.svd(Tl @ Tr.T)
    U, Vh = _canonical_signs(Ql @ Uc, Vhc @ Qr.T, like)
    root = S.sqrt()
    return U * root, root[:, None] * Vh
