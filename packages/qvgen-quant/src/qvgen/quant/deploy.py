"""`DeployLinear`: the real low-bit layer a trained `QuantLinear` becomes (packed int4 + integer GEMM).

The weight is stored as packed int4 codes ``q_w`` in ``[0, P]`` with a per-row scale ``s_w`` and a
real-valued per-row zero point ``z_w``, so ``W_q = s_w * (q_w - z_w)`` exactly as in the LSQ+ fake
quantizer. Two targets:

``w4a4``: the input is quantized per token like the fake quantizer (``x_q = s_x * (q_x - z_x)``, integer
``q_x`` and ``z_x``, the same `ActivationQuantizer` module and timestep group), and the product is taken on
the integer codes (`qvgen.quant.integer_linear`: an integer GEMM plus two rank-1 terms, the arithmetic a
`QuantLinear` also runs at inference, so the two agree bit for bit).
On CUDA with bf16/fp16 input (and the ``triton`` extra) the whole layer is two fused Triton kernels
(`qvgen.quant.w4a4_triton`: activation pass, then an int8 GEMM reading the packed weight with this
epilogue); other inputs (fp32, non-contiguous, K not a multiple of 64, N not of 16) take the reference path
above, whose int8 weight copy is built per call on CUDA, so only the packed weight stays resident.

``w4a16``: int4 weight-only kernels with bf16 activations (memory savings only).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import torch
from torch import Tensor, nn

from qvgen.quant.fake_quant import ActivationQuantizer
from qvgen.quant.integer_gemm import PreparedInt4Weight, int4_weight_only_mm, prepare_int4_weight_only
from qvgen.quant.integer_linear import Int8LinearWeight, int8_linear, prepare_int8_linear
from qvgen.quant.linear import QuantLinear
from qvgen.quant.packing import CONTAINER_BITS, pack_int4, packed_columns, unpack_int4
from qvgen.quant.roles import NON_LATENT_INPUT_ROLES, LayerRole
from qvgen.quant.svdquant import SmoothLowRank
from qvgen.quant.triton_dispatch import fused_w4a4_unsupported

logger = logging.getLogger(__name__)

DeployTarget = Literal["w4a4", "w4a16"]

MAX_WEIGHT_BITS = CONTAINER_BITS
"""Deploy weights use the int4 container: 2-4 bits."""


class DeployLinear(nn.Module):
    """Linear with packed int4 weights; ``w4a4`` runs an integer GEMM, ``w4a16`` int4 weight-only.

    Buffers (the saved state): ``weight_packed`` uint8 ``[out, ceil(in/2)]``, ``weight_scale`` and
    ``weight_zero_point`` float32 ``[out]``, ``bias`` float32 ``[out]`` (if any); for ``w4a4`` also
    ``act_quantizer.clip_logit_lo/hi`` ``[G]``. The kernel form of the weight is built on first use per
    device and cached (not saved).
    """

    weight_packed: Tensor
    weight_scale: Tensor
    weight_zero_point: Tensor

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool,
        *,
        weight_bits: int,
        act_quantizer: ActivationQuantizer | None,
        role: LayerRole = LayerRole.other,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if not 2 <= weight_bits <= MAX_WEIGHT_BITS:
            raise ValueError(
                f"deploy weights need 2..{MAX_WEIGHT_BITS} bits (int4 container), got {weight_bits}"
            )
        self.in_features = in_features
        self.out_features = out_features
        self.weight_bits = weight_bits
        self.role = LayerRole(role)
        self.target: DeployTarget = "w4a16" if act_quantizer is None else "w4a4"
        self.act_quantizer = act_quantizer
        if act_quantizer is not None:
            act_quantizer.requires_grad_(False)
            act_quantizer.token_groups = self.role not in NON_LATENT_INPUT_ROLES
        self.register_buffer(
            "weight_packed",
            torch.zeros(out_features, packed_columns(in_features), dtype=torch.uint8, device=device),
        )
        self.register_buffer("weight_scale", torch.ones(out_features, dtype=torch.float32, device=device))
        self.register_buffer(
            "weight_zero_point", torch.zeros(out_features, dtype=torch.float32, device=device)
        )
        self.bias: Tensor | None
        if bias:
            self.register_buffer("bias", torch.zeros(out_features, dtype=torch.float32, device=device))
        else:
            self.bias = None
        self._kernel_cache: dict[tuple[str, int | None], Any] = {}
        self.label = f"DeployLinear ({self.role}, {out_features}x{in_features})"
        """Names the layer in errors and logs (`from_quant_linear` sets the model path)."""
        self._fallback_logged = False
        self.kept: SmoothLowRank | None
        """SVDQuant's kept branch: the input is divided by λ, and x̂·downᵀ·upᵀ is added beside the GEMM."""
        self.register_module("kept", None)

    @property
    def weight_qmax(self) -> int:
        return 2**self.weight_bits - 1

    @classmethod
    @torch.no_grad()
    def from_quant_linear(
        cls, layer: QuantLinear, target: DeployTarget = "w4a4", *, name: str = ""
    ) -> DeployLinear:
        """The deploy form of a trained `QuantLinear` (Φ must be gone); ``name`` labels errors."""
        label = f"layer {name!r}" if name else layer.label
        if layer.lowrank is not None:
            raise ValueError(
                f"{label} still has the auxiliary branch Φ (`lowrank` is set): finish rank decay to rank 0 "
                "(qvgen.auxiliary removes Φ) or set `layer.lowrank = None` before `convert_`"
            )
        if layer.weight_delta is not None:
            raise ValueError(
                f"{label} still has an unmerged weight delta (LoRA): merge it into the latent weight "
                "(`layer.weight += layer.weight_delta()`, then `layer.weight_delta = None`) before `convert_`"
            )
        wq = layer.weight_quantizer
        if not wq.initialized:
            raise ValueError(
                f"{label} has no weight range: call `qvgen.quant.initialize_(model)` before `convert_`"
            )
        if wq.bits > MAX_WEIGHT_BITS:
            raise ValueError(
                f"{label} has {wq.bits}-bit weights; deploy layers store 2..{MAX_WEIGHT_BITS}-bit codes in an int4 "
                "container: keep this layer in fake-quant or high precision (keep_high_precision)"
            )
        act: ActivationQuantizer | None = None
        match target:
            case "w4a4":
                if not isinstance(layer.act_quantizer, ActivationQuantizer):
                    raise ValueError(
                        f"{label} has no activation quantizer, so it cannot run W4A4: convert with target='w4a16'"
                    )
                act = layer.act_quantizer
            case "w4a16":
                pass
            case _:
                # a typo ("W4A4") must not silently export a weight-only model
                raise ValueError(f"{label}: deploy target {target!r} is not one of 'w4a4', 'w4a16'")
        w = layer.weight.detach().float()
        if not torch.isfinite(w).all():
            raise ValueError(f"{label} has NaN/Inf in its weight; cannot export it")
        scale = wq.effective_scale().float()  # max(scale, floor): > 0
        zero = wq.zero_point.detach().float()
        codes = wq.codes(w)  # exactly the codes the fake quantizer rounds to
        new = cls(
            layer.in_features,
            layer.out_features,
            layer.bias is not None,
            weight_bits=wq.bits,
            act_quantizer=act,
            role=layer.role,
            device=w.device,
        )
        new.weight_packed.copy_(pack_int4(codes.to(torch.uint8)))
        new.weight_scale.copy_(scale.reshape(-1))
        new.weight_zero_point.copy_(zero.reshape(-1))
        if layer.bias is not None:
            assert new.bias is not None
            new.bias.copy_(layer.bias.detach().float())
        if name:
            new.label = f"layer {name!r}"
        if layer.kept is not None:
            kept = layer.kept
            new.kept = SmoothLowRank(
                kept.in_features, kept.out_features, kept.rank, dtype=kept.dtype_name, device=w.device
            )
            new.kept.load_state_dict(kept.state_dict())
        return new

    def weight_codes(self) -> Tensor:
        """The unpacked integer weight codes ``[out, in]`` (uint8 in ``[0, P]``)."""
        return unpack_int4(self.weight_packed, self.in_features)

    def dequantized_weight(self) -> Tensor:
        """``s_w * (q_w - z_w)`` in float32 (for checks; the forward never builds it on the int8 path)."""
        return self.weight_scale[:, None] * (self.weight_codes().float() - self.weight_zero_point[:, None])

    def weight_nbytes(self) -> int:
        """Bytes of the stored weight: packed codes plus float32 scale and zero point per row."""
        return sum(
            t.numel() * t.element_size()
            for t in (self.weight_packed, self.weight_scale, self.weight_zero_point)
        )

    # -- kernel cache ---------------------------------------------------------------------------------
    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        """Follow device moves, but keep scales, zero points, bias and clip logits in float32.

        ``model.to(torch.bfloat16)`` would otherwise round the quantization grid itself.
        """
        self._kernel_cache = {}
        before = {n: t.detach() for n, t in self.state_dict(keep_vars=True).items() if t.is_floating_point()}
        out = super()._apply(fn, recurse)
        for name, t in self.state_dict(keep_vars=True).items():
            old = before.get(name)
            if old is not None and t.dtype != old.dtype:
                t.data = old.to(t.device)
        return out

    def _load_from_state_dict(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self._kernel_cache = {}
        super()._load_from_state_dict(*args, **kwargs)

    def _int8_kernel(self, device: torch.device) -> Int8LinearWeight:
        key = ("int8", device.index if device.type == "cuda" else None)
        cached = self._kernel_cache.get(key)
        if cached is None:
            cached = prepare_int8_linear(
                self.weight_codes(), self.weight_scale, self.weight_zero_point, self.bias, self.weight_qmax,
                device,
            )  # fmt: skip
            if device.type != "cuda":  # on CUDA the int8 copy is transient: resident stays the packed weight
                self._kernel_cache[key] = cached
        return cached  # type: ignore[no-any-return]

    def _fused_vectors(self, device: torch.device) -> Tensor:
        """The fused kernel's per-row float32 ``[5, N]`` (`w4a4_triton.weight_vectors`), cached per device."""
        key = ("fused", device.index if device.type == "cuda" else None)
        cached = self._kernel_cache.get(key)
        if cached is None:
            from qvgen.quant.w4a4_triton import weight_vectors

            cached = weight_vectors(
                self.weight_packed,
                self.weight_scale,
                self.weight_zero_point,
                self.bias,
                self.in_features,
                self.weight_qmax,
            ).to(device)
            self._kernel_cache[key] = cached
        return cached  # type: ignore[no-any-return]

    def _int4_kernel(self, device: torch.device) -> PreparedInt4Weight:
        key = ("int4", device.index if device.type == "cuda" else None)
        cached = self._kernel_cache.get(key)
        if cached is None:
            cached = prepare_int4_weight_only(
                self.weight_codes(), self.weight_scale, self.weight_zero_point, device
            )
            self._kernel_cache[key] = cached
        return cached  # type: ignore[no-any-return]

    # -- forward --------------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"{self.label} expects in_features={self.in_features}, got {tuple(x.shape)}")
        lead = x.shape[:-1]
        if self.kept is not None:  # SVDQuant: GEMM on x/λ, plus the 16-bit branch on the same x/λ
            xs = self.kept.smooth_input(x)
            side = self.kept(xs).reshape(*lead, self.out_features)
            return (self._forward_base(xs, lead) + side).to(x.dtype)
        return self._forward_base(x, lead).to(x.dtype)

    def _forward_base(self, x: Tensor, lead: torch.Size) -> Tensor:
        if self.target == "w4a16":
            y = int4_weight_only_mm(x.reshape(-1, self.in_features), self._int4_kernel(x.device))
            if self.bias is not None:
                y = y + self.bias
            return y.reshape(*lead, self.out_features).to(x.dtype)
        return self._forward_w4a4(x).reshape(*lead, self.out_features).to(x.dtype)

    def _forward_w4a4(self, x: Tensor) -> Tensor:
        act = self.act_quantizer
        assert act is not None
        if x.device.type == "cuda":
            reason = fused_w4a4_unsupported(x, self.in_features, self.out_features, act.bits)
            if reason is None:
                return self._forward_w4a4_fused(x)
            if not self._fallback_logged:
                self._fallback_logged = True
                logger.info(
                    "%s: fused W4A4 kernel not used (%s); running the reference path", self.label, reason
                )
        return int8_linear(x, act, self._int8_kernel(x.device))

    def _forward_w4a4_fused(self, x: Tensor) -> Tensor:
        """The Triton path (`qvgen.quant.w4a4_triton`): bf16/fp16 in, same dtype out, ``[M, N]``."""
        from qvgen.quant.w4a4_triton import w4a4_linear

        act = self.act_quantizer
        assert act is not None
        reason = fused_w4a4_unsupported(x, self.in_features, self.out_features, act.bits)
        if reason is not None:
            raise ValueError(f"{self.label}: the fused W4A4 kernel cannot run this input: {reason}")
        lo, hi = act.sample_clips(x)  # float32, one pair per sample (or one for all)
        return w4a4_linear(
            x.reshape(-1, self.in_features),
            self.weight_packed,
            self._fused_vectors(x.device),
            lo.reshape(-1).contiguous(),
            hi.reshape(-1).contiguous(),
            act_bits=act.bits,
            has_bias=self.bias is not None,
        )

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"target={self.target}, weight_bits={self.weight_bits}, role={self.role}"
        )
