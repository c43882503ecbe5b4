"""`QuantLinear`: the fake-quantized Linear used during QAT, with a slot for the auxiliary branch Φ."""

from __future__ import annotations

from typing import assert_never

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qvgen.quant.config import ClippedDynamicActivation, NoActivationQuant, QuantConfig
from qvgen.quant.fake_quant import ActivationQuantizer, WeightQuantizer
from qvgen.quant.integer_linear import int8_linear, prepare_int8_linear
from qvgen.quant.packing import CONTAINER_BITS
from qvgen.quant.roles import NON_LATENT_INPUT_ROLES, LayerRole
from qvgen.quant.svdquant import SmoothLowRank


class QuantLinear(nn.Module):
    """Linear with fake-quantized input activations and weights: `F.linear(Qa(x), Qw(W) + Φ, b)`.

    `weight` is the latent float weight `[out, in]`. `lowrank`, when set by qvgen-aux, is a module whose
    call returns an `[out, in]` tensor added to `Qw(W)` before the single matmul, so Φ sees `Qa(x)`.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool,
        *,
        weight_quantizer: WeightQuantizer,
        act_quantizer: ActivationQuantizer | nn.Identity,
        role: LayerRole = LayerRole.other,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(out_features, device=device, dtype=dtype)) if bias else None
        self.weight_quantizer = weight_quantizer
        self.act_quantizer = act_quantizer
        self.role = LayerRole(role)
        if isinstance(act_quantizer, ActivationQuantizer):
            act_quantizer.token_groups = self.role not in NON_LATENT_INPUT_ROLES
        self.lowrank: nn.Module | None
        self.register_module("lowrank", None)
        self.weight_delta: nn.Module | None
        """Optional module returning an `[out, in]` tensor added to W *before* Qw (EfficientDM's LoRA)."""
        self.register_module("weight_delta", None)
        self.kept: SmoothLowRank | None
        """Optional SVDQuant branch kept at inference: x/λ feeds Qa and the 16-bit low-rank branch."""
        self.register_module("kept", None)
        self.label = f"QuantLinear ({self.role}, {out_features}x{in_features})"
        """Names the layer in errors (`prepare_` sets the model path)."""

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, cfg: QuantConfig, role: LayerRole = LayerRole.other
    ) -> QuantLinear:
        """A QuantLinear sharing `linear`'s weight and bias Parameters; call `initialize_` before use."""
        weight_cfg, act_cfg = cfg.for_role(LayerRole(role))
        device = linear.weight.device
        act_quantizer: ActivationQuantizer | nn.Identity
        match act_cfg:
            case ClippedDynamicActivation():
                act_quantizer = ActivationQuantizer(act_cfg, device=device)
            case NoActivationQuant():
                act_quantizer = nn.Identity()
            case _:
                assert_never(act_cfg)
        new = cls(
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            weight_quantizer=WeightQuantizer(
                linear.out_features, linear.in_features, weight_cfg, device=device
            ),
            act_quantizer=act_quantizer,
            role=role,
            device="meta",  # weight and bias are replaced by linear's own Parameters below
        )
        new.weight = linear.weight  # type: ignore[assignment]  # nn.Linear annotates it as Tensor
        new.bias = linear.bias
        if cfg.kept_lowrank is not None:  # identity smoothing, zero branch until fitted (svdquant.fit_)
            new.kept = SmoothLowRank(
                linear.in_features, linear.out_features, min(cfg.kept_lowrank.rank, linear.in_features,
                linear.out_features), dtype=cfg.kept_lowrank.dtype, device=device,
            )  # fmt: skip
        return new

    def to_linear(self) -> nn.Linear:
        """A plain `nn.Linear` with the latent weight and bias (Φ and the quantizers are dropped)."""
        with torch.device("meta"):
            linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        linear.weight = self.weight
        linear.bias = self.bias  # type: ignore[assignment]  # nn.Linear allows None at runtime
        return linear

    def _check_initialized(self) -> None:
        if not self.weight_quantizer.initialized:
            raise RuntimeError(
                f"{self.label} has no weight range yet: "
                "call `qvgen.quant.initialize_(model)` after `prepare_` and before the forward / optimizer"
            )

    def quantized_weight(self) -> Tensor:
        """Qw(W) in float32 (float64 for a float64 model), detached, without Φ."""
        self._check_initialized()
        with torch.no_grad():
            return self.weight_quantizer(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        self._check_initialized()
        if self._runs_integer_arithmetic(x):
            return self._forward_integer(x)
        if self.kept is not None:
            x = self.kept.smooth_input(x)
        xq = self.act_quantizer(x)
        latent = self.weight if self.weight_delta is None else self.weight + self.weight_delta()
        w = self.weight_quantizer(latent)
        if self.lowrank is not None:
            w = w + self.lowrank()
        y = F.linear(xq, w.to(x.dtype), self.bias)
        return y if self.kept is None else y + self.kept(x).to(y.dtype)

    def _runs_integer_arithmetic(self, x: Tensor) -> bool:
        """Whether this call takes the deploy layer's integer arithmetic (`qvgen.quant.integer_linear`).

        It does at inference (no gradient wanted) for a W4A4 layer that a deploy layer could replace:
        activation quantizer, int4-container weights, no Φ or weight delta, non-float64 input. Same function
        as the float form, taken exactly, so a fake-quant model and its export agree bit for bit.
        """
        return (
            not torch.is_grad_enabled()
            and isinstance(self.act_quantizer, ActivationQuantizer)
            and self.weight_quantizer.bits <= CONTAINER_BITS
            and self.lowrank is None
            and self.weight_delta is None
            and x.dtype != torch.float64
        )

    def _forward_integer(self, x: Tensor) -> Tensor:
        assert isinstance(self.act_quantizer, ActivationQuantizer)
        wq = self.weight_quantizer
        lead = x.shape[:-1]
        xs = x if self.kept is None else self.kept.smooth_input(x)
        weight = prepare_int8_linear(
            wq.codes(self.weight), wq.effective_scale(), wq.zero_point, self.bias, wq.qmax, x.device,
            transient=True,
        )  # fmt: skip
        y = int8_linear(xs, self.act_quantizer, weight).reshape(*lead, self.out_features).to(x.dtype)
        if self.kept is None:
            return y
        # the deploy layer's order of operations, for the same bits
        return (y + self.kept(xs).reshape(*lead, self.out_features)).to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, role={self.role}"
        )
