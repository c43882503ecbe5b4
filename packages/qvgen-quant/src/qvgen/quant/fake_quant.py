"""Weight (LSQ+ / min-max) and activation (clipped dynamic per-token) fake quantizers.

All arithmetic runs in float32 (float64 if the input is float64), whatever the model dtype (docs/method.md
B12); results are cast back by the caller.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, assert_never

import torch
from torch import Tensor, nn

from qvgen.quant._torchao_compat import ste_round
from qvgen.quant.config import ClippedDynamicActivation, GroupMode, LSQPlusWeight, MinMaxWeight
from qvgen.quant.timestep import TimestepContext
from qvgen.quant.triton_dispatch import use_fused_fake_quant

SCALE_EPS = 1e-9
"""Lower bound of every scale (docs/method.md §3.3, §4.1)."""

SCALE_FLOOR_RATIO = 0.1
"""A weight scale never acts below this fraction of its initial (MSE or min-max) value (`scale_floor`)."""


def compute_dtype(t: Tensor) -> torch.dtype:
    """float64 for float64 input, float32 for everything else (bf16/fp16/fp32)."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


_HALF = (torch.float16, torch.bfloat16)


def keep_float32_on_half_cast(module: nn.Module, fn, recurse: bool) -> nn.Module:  # type: ignore[no-untyped-def]
    """`nn.Module._apply` that follows device moves but undoes casts of its own parameters to fp16/bf16.

    `model.to(torch.bfloat16)` would otherwise round the quantization grid itself (docs/method.md B12).
    """

    def own() -> list[tuple[str, Tensor]]:
        return [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]

    before = {name: p.detach() for name, p in own()}
    out = nn.Module._apply(module, fn, recurse)
    for name, p in own():
        old = before[name]
        if p.dtype in _HALF and old.dtype not in _HALF:
            p.data = old.to(p.device)
    return out


class _FloorStraightThrough(torch.autograd.Function):
    """Forward `max(scale, floor)`; backward passes the gradient to `scale` unchanged (straight through)."""

    @staticmethod
    def forward(ctx, scale: Tensor, floor: Tensor) -> Tensor:  # type: ignore[no-untyped-def,override]
        return torch.maximum(scale, floor)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[no-untyped-def,override]
        return grad, None


def floor_scale(scale: Tensor, floor: Tensor) -> Tensor:
    """The scale a weight quantizer acts with: `max(scale, floor)`, gradient straight through to `scale`.

    Gradient semantics: d(effective)/d(scale) = 1 everywhere, as for LSQ's rounding. A row pushed to or
    below its floor (one Adam step at a large scale lr can overshoot zero) quantizes with the floor but
    still receives the loss gradient, so it climbs back as soon as the loss asks for a larger step; the
    raw parameter is a latent value like the latent weight, and `convert_` exports the effective scale.
    """
    return _FloorStraightThrough.apply(scale, floor)  # type: ignore[no-any-return]


class _GradScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t: Tensor, g: float) -> Tensor:  # type: ignore[override]
        ctx.g = g
        return t.view_as(t)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad * ctx.g, None


def grad_scale(t: Tensor, g: float) -> Tensor:
    """Exactly `t` (bit for bit, so export reads the values training used), gradient multiplied by `g` (LSQ)."""
    return _GradScale.apply(t, g)  # type: ignore[no-any-return]


class _WeightFakeQuant(torch.autograd.Function):
    """LSQ+ weight quantize-dequantize that saves only ``(w, s, z)`` and recomputes the rest in backward.

    The op-by-op autograd graph keeps two weight-sized float tensors per layer alive until backward (the
    clamp's input and ``q - z``); inside a gradient-checkpointed block that is two fp32 copies of every
    weight the block recomputes. Same forward bits, same gradients as that graph (up to summation order).
    """

    @staticmethod
    def forward(ctx, w: Tensor, scale: Tensor, zero: Tensor, bits: int) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(w, scale, zero)
        ctx.qmax = 2**bits - 1
        q = torch.clamp(torch.round(w / scale + zero), 0, ctx.qmax)
        return scale * (q - zero)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor, None]:  # type: ignore[override]
        w, s, z = ctx.saved_tensors
        t = w / s
        r = torch.round(t + z)
        inside = (r >= 0) & (r <= ctx.qmax)
        d = r.clamp_(0, ctx.qmax).sub_(z)  # q - z, in r's buffer
        gd = grad * s
        gr = torch.where(inside, gd, 0.0)
        grad_w = gr / s
        # d/ds s(q - z) = (q - z) + s dq/ds with dq/ds = -w/s² inside the range (LSQ's straight-through round)
        grad_s = (grad * d).sum(dim=1, keepdim=True) - (gr * t.div_(s)).sum(dim=1, keepdim=True)
        # d/dz s(q - z) = s (dq/dz - 1) with dq/dz = 1 inside
        grad_z = gr.sum(dim=1, keepdim=True) - gd.sum(dim=1, keepdim=True)
        return grad_w, grad_s, grad_z, None


def fake_quantize_weight(w: Tensor, scale: Tensor, zero_point: Tensor, bits: int) -> Tensor:
    """LSQ+ quantize-dequantize `s * (clamp(round_ste(w/s + z), 0, P) - z)` per row (real-valued z)."""
    per_row = w.dim() == 2 and scale.shape == zero_point.shape == (w.shape[0], 1)
    if per_row and use_fused_fake_quant(w):
        from qvgen.quant.fake_quant_triton import fused_fake_quantize_weight  # CUDA + triton: fused kernels

        return fused_fake_quantize_weight(w, scale, zero_point, bits)
    if per_row and type(w) in (Tensor, nn.Parameter):
        return _WeightFakeQuant.apply(w, scale, zero_point, bits)  # type: ignore[no-any-return]
    qmax = 2**bits - 1
    q = torch.clamp(ste_round(w / scale + zero_point), 0, qmax)
    return scale * (q - zero_point)


def shrink_grid_search(
    w: Tensor,
    bits: int,
    error: Callable[[Tensor, Tensor], Tensor],
    *,
    grid: int,
    max_shrink: float,
    incumbent: tuple[Tensor, Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-row (scale, zero point) `[out, 1]` minimising `error(scale, zero) -> [out, 1]` over the shrink grid.

    The search of docs/method.md §3.3: candidates clip each row of `w` to [p·min, p·max] with
    p = 1 - k/grid for k < int(max_shrink*grid); the first candidate with a strictly smaller error wins,
    so ties go to the largest p. `incumbent` = (error, scale, zero) is a starting point a candidate must
    beat (default: none). Vectorised over rows; the one implementation of this search in qvgen.
    """
    w = w.detach().to(compute_dtype(w))
    qmax = 2**bits - 1
    w_min = w.amin(dim=1, keepdim=True)
    w_max = w.amax(dim=1, keepdim=True)
    if incumbent is None:
        best_err = torch.full_like(w_min, math.inf)
        best_scale = torch.empty_like(w_min)
        best_zero = torch.empty_like(w_min)
    else:
        best_err, best_scale, best_zero = incumbent
    for k in range(int(max_shrink * grid)):
        p = 1.0 - k / grid
        lo, hi = p * w_min, p * w_max
        scale = ((hi - lo) / qmax).clamp_min(SCALE_EPS)
        zero = -lo / scale
        err = error(scale, zero)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_scale = torch.where(better, scale, best_scale)
        best_zero = torch.where(better, zero, best_zero)
    return best_scale, best_zero


def mse_weight_range(
    w: Tensor, bits: int, *, grid: int = 100, max_shrink: float = 0.8, norm: float = 2.4
) -> tuple[Tensor, Tensor]:
    """Per-row (scale, zero point) `[out, 1]` minimising sum |Q(W) - W|**norm by `shrink_grid_search`."""
    w = w.detach().to(compute_dtype(w))
    qmax = 2**bits - 1

    def error(scale: Tensor, zero: Tensor) -> Tensor:
        # |s·(clamp(round(w/s + z), 0, P) − z) − w|^norm, in place (same ops and order, half the time)
        err_el = w / scale
        err_el += zero
        err_el.round_().clamp_(0, qmax)
        err_el -= zero
        err_el *= scale
        err_el -= w
        return err_el.abs_().pow_(norm).sum(dim=1, keepdim=True)

    return shrink_grid_search(w, bits, error, grid=grid, max_shrink=max_shrink)


def minmax_weight_range(w: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """Per-row (scale, zero point) `[out, 1]` from the full min/max range (the p = 1 point of the search)."""
    w = w.detach().to(compute_dtype(w))
    qmax = 2**bits - 1
    lo = w.amin(dim=1, keepdim=True)
    hi = w.amax(dim=1, keepdim=True)
    scale = ((hi - lo) / qmax).clamp_min(SCALE_EPS)
    return scale, -lo / scale


class WeightQuantizer(nn.Module):
    """Per-output-channel asymmetric weight fake quantizer with learnable `scale`/`zero_point` `[out, 1]`.

    `method="lsq_plus"`: MSE-initialised, s and z trainable with LSQ gradient scaling.
    `method="minmax"`: min/max range, s and z frozen (round-to-nearest baseline).
    The scale acts through `floor_scale(scale, scale_floor)`: `scale_floor` (a buffer, `[out, 1]`) is
    `SCALE_FLOOR_RATIO` times the initial scale, so the effective scale is positive by construction.
    """

    def __init__(
        self,
        out_features: int,
        in_features: int,
        cfg: LSQPlusWeight | MinMaxWeight,
        *,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.bits = cfg.bits
        self.in_features = in_features
        self.cfg = cfg
        match cfg:
            case LSQPlusWeight():
                self.method: Literal["lsq_plus", "minmax"] = "lsq_plus"
                learnable, use_grad_scale = True, cfg.grad_scaling
            case MinMaxWeight():
                self.method = "minmax"
                learnable, use_grad_scale = False, False
            case _:
                assert_never(cfg)
        self.grad_scale_factor: float | None = (
            1.0 / math.sqrt(max(in_features, 1) * (2**cfg.bits - 1)) if use_grad_scale else None
        )
        self.scale = nn.Parameter(
            torch.ones(out_features, 1, device=device, dtype=torch.float32), requires_grad=learnable
        )
        self.zero_point = nn.Parameter(
            torch.zeros(out_features, 1, device=device, dtype=torch.float32), requires_grad=learnable
        )
        self.scale_floor: Tensor
        self.register_buffer(
            "scale_floor", torch.full((out_features, 1), SCALE_EPS, device=device, dtype=torch.float32)
        )
        self.initialized = False

    @property
    def qmax(self) -> int:
        return 2**self.bits - 1

    @torch.no_grad()
    def initialize_(self, weight: Tensor) -> None:
        """Set scale/zero point from `weight` (MSE search or min-max); the caller validates the weight."""
        match self.cfg:
            case LSQPlusWeight():
                s, z = mse_weight_range(
                    weight, self.bits, grid=self.cfg.grid, max_shrink=self.cfg.max_shrink, norm=self.cfg.norm
                )
            case MinMaxWeight():
                s, z = minmax_weight_range(weight, self.bits)
            case _:
                assert_never(self.cfg)
        self.scale.copy_(s)
        self.zero_point.copy_(z)
        self.scale_floor.copy_((s * SCALE_FLOOR_RATIO).clamp_min(SCALE_EPS))
        self.initialized = True

    def effective_scale(self) -> Tensor:
        """`max(scale, scale_floor)` `[out, 1]`, detached: the scale the forward uses and `convert_` exports."""
        return torch.maximum(self.scale.detach(), self.scale_floor.to(self.scale.dtype))

    @torch.no_grad()
    def codes(self, weight: Tensor) -> Tensor:
        """The integer codes ``clamp(round(w/s + z), 0, P)`` `[out, in]` (float32) the forward rounds to.

        The same float ops as `forward`, so export and the integer inference path see its exact codes.
        """
        q = weight.detach().float() / self.effective_scale().float()
        return q.add_(self.zero_point.float()).round_().clamp_(0, self.qmax)

    def forward(self, weight: Tensor) -> Tensor:
        dtype = compute_dtype(weight)
        s = floor_scale(self.scale.to(dtype), self.scale_floor.to(dtype))
        z = self.zero_point.to(dtype)
        if self.grad_scale_factor is not None:
            s, z = grad_scale(s, self.grad_scale_factor), grad_scale(z, self.grad_scale_factor)
        return fake_quantize_weight(weight.to(dtype), s, z, self.bits)

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        return keep_float32_on_half_cast(self, fn, recurse)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        scale = state_dict.get(prefix + "scale")
        if scale is not None and prefix + "scale_floor" not in state_dict:
            # written before the floor existed: tie it to the saved scale (load_state_dict copied the dict)
            state_dict[prefix + "scale_floor"] = (scale.detach() * SCALE_FLOOR_RATIO).clamp_min(SCALE_EPS)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if prefix + "scale" in state_dict and prefix + "zero_point" in state_dict:
            self.initialized = True

    def extra_repr(self) -> str:
        return f"method={self.method}, bits={self.bits}, initialized={self.initialized}"


def activation_qparams(x: Tensor, clip_lo: Tensor, clip_hi: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """Per-token (scale, integer zero point) `[..., 1]` of docs/method.md §4.1 with clip factors broadcast to x.

    lo = clip_lo * min(x), hi = clip_hi * max(x), s = max((hi-lo)/P, 1e-9), z = clamp(-round(lo/s), 0, P).
    The zero point carries no gradient; the clip factors get theirs through s.
    """
    qmax = 2**bits - 1
    lo = clip_lo * x.amin(dim=-1, keepdim=True)
    hi = clip_hi * x.amax(dim=-1, keepdim=True)
    scale = ((hi - lo) / qmax).clamp_min(SCALE_EPS)
    zero = torch.clamp(-torch.round(lo / scale), 0, qmax).detach()
    return scale, zero


def fake_quantize_activation(x: Tensor, clip_lo: Tensor, clip_hi: Tensor, bits: int) -> Tensor:
    """Dynamic per-token asymmetric quantize-dequantize `s * (clamp(round_ste(x/s) + z, 0, P) - z)`."""
    scale, zero = activation_qparams(x, clip_lo, clip_hi, bits)
    q = torch.clamp(ste_round(x / scale) + zero, 0, 2**bits - 1)
    return scale * (q - zero)


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


class ActivationQuantizer(nn.Module):
    """Clipped dynamic per-token activation fake quantizer with one clip logit pair per timestep group.

    `clip_logit_lo`/`clip_logit_hi` `[G]` are learnable; sigmoid gives the clip factors. The group of each
    sample comes from the shared `TimestepContext` (set by `attach_timestep_context_`); with G = 1 no
    timestep is needed. Under per-token timesteps `[B, S]` an input `[B, S, ...]` (or `[B*S, K]`) takes
    each token's group from its own timestep, any other input its sample's group; `token_groups = False`
    (set from the layer's role for Linears reading text or image tokens) always takes the sample's.
    """

    def __init__(self, cfg: ClippedDynamicActivation, *, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.bits = cfg.bits
        self.groups = cfg.groups
        self.group_mode: GroupMode = cfg.group_mode
        init = _logit(cfg.clip_init)
        self.clip_logit_lo = nn.Parameter(torch.full((cfg.groups,), init, device=device, dtype=torch.float32))
        self.clip_logit_hi = nn.Parameter(torch.full((cfg.groups,), init, device=device, dtype=torch.float32))
        self.context: TimestepContext | None = None
        self.token_groups = True
        """Whether this quantizer's input is the latent token sequence, so that `[B, S]` timesteps give
        per-token groups (`QuantLinear`/`DeployLinear` set it from the role)."""
        self.label = "activation quantizer"
        """Names the owning layer in errors (`prepare_` sets it)."""

    def clip_factors(self, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
        """The per-group clip factors (sigmoid of the logits), `[G]` each, computed in `dtype`."""
        return torch.sigmoid(self.clip_logit_lo.to(dtype)), torch.sigmoid(self.clip_logit_hi.to(dtype))

    def group_index(self) -> Tensor:
        """Per-sample group indices `[B]` (long) for the current call; `[0]` when G == 1."""
        if self.groups == 1:
            return torch.zeros(1, dtype=torch.long, device=self.clip_logit_lo.device)
        if self.context is None:
            raise RuntimeError(
                f"{self.label} has no timestep context: call `qvgen.quant.attach_timestep_context_(model)` "
                "(done by `prepare_`) or `qvgen.quant.set_timesteps_(model, t)`"
            )
        return self.context.group_index(self.groups, self.group_mode, self.clip_logit_lo.device)

    def token_group_index(self) -> Tensor | None:
        """Per-token group indices `[B, S]` (long) under `[B, S]` timesteps, else None."""
        if self.groups == 1 or not self.token_groups or self.context is None:
            return None
        return self.context.token_group_index(self.groups, self.group_mode, self.clip_logit_lo.device)

    def sample_clips(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Clip factors (lo, hi) gathered per sample (per token under `[B, S]` timesteps) and shaped to
        broadcast over `x`'s tokens."""
        g = self.group_index()
        tg = self.token_group_index()
        if tg is not None and x.dim() >= 3 and x.shape[:2] == tg.shape:
            lo, hi = self.clip_factors(compute_dtype(x))
            shape = tuple(tg.shape) + (1,) * (x.dim() - 2)
            return lo[tg].reshape(shape), hi[tg].reshape(shape)
        if tg is not None and x.dim() == 2 and x.shape[0] == tg.numel():
            lo, hi = self.clip_factors(compute_dtype(x))
            return lo[tg].reshape(-1, 1), hi[tg].reshape(-1, 1)
        batch = g.shape[0]
        if x.dim() >= 2 and x.shape[0] == batch:
            shape = (batch,) + (1,) * (x.dim() - 1)
        elif batch == 1:
            shape = (1,) * x.dim()
        else:
            raise ValueError(
                f"{self.label}: activation of shape {tuple(x.shape)} does not start with the batch size "
                f"{batch} of the timesteps; pass one timestep per sample (shape [B]) or a single one, or "
                "keep this layer out of the quantized set if it folds frames into the batch"
            )
        lo, hi = self.clip_factors(compute_dtype(x))
        return lo[g].reshape(shape), hi[g].reshape(shape)

    def qparams(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Per-token (scale, integer-valued zero point) `[..., 1]` in float32 (float64 for float64 x)."""
        xc = x.to(compute_dtype(x))
        lo, hi = self.sample_clips(xc)
        return activation_qparams(xc, lo, hi, self.bits)

    def forward(self, x: Tensor) -> Tensor:
        if use_fused_fake_quant(x):  # CUDA + triton: one fused kernel each way, reads x in its own dtype
            from qvgen.quant.fake_quant_triton import fused_fake_quantize_activation

            lo, hi = self.sample_clips(x)
            return fused_fake_quantize_activation(x, lo, hi, self.bits)
        xc = x.to(compute_dtype(x))
        lo, hi = self.sample_clips(xc)
        return fake_quantize_activation(xc, lo, hi, self.bits).to(x.dtype)

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        return keep_float32_on_half_cast(self, fn, recurse)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, groups={self.groups}, group_mode={self.group_mode}"
