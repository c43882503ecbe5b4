"""Pydantic boundary models for quantization: weight / activation variants, overrides, presets."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import Discriminator, Field, Tag, model_validator

from qvgen.core import Frozen
from qvgen.quant.roles import LayerRole

Bits = Annotated[int, Field(ge=2, le=8)]
GroupMode = Literal["bin", "mod", "reference", "reference_nofix"]
"""How an activation quantizer picks its clip group each call (see `ClippedDynamicActivation.group_mode`)."""


def _kind_or(default: str) -> Any:
    """Discriminator that reads `kind` and falls back to `default`, so `{bits: 3}` means the default variant."""

    def kind(value: Any) -> str:
        if isinstance(value, dict):
            return str(value.get("kind", default))
        return str(getattr(value, "kind", default))

    return Discriminator(kind)


class LSQPlusWeight(Frozen):
    """LSQ+ per-output-channel asymmetric weight quantizer, MSE-initialised (docs/method.md §3)."""

    kind: Literal["lsq_plus"] = "lsq_plus"
    bits: Bits = 4
    """Weight bit width; P = 2**bits - 1 levels above zero."""
    grid: Annotated[int, Field(ge=1, le=10_000)] = 100
    """Shrink grid resolution of the MSE search: p = 1 - k/grid."""
    max_shrink: Annotated[float, Field(gt=0.0, le=1.0)] = 0.8
    """The search tries k = 0 .. int(max_shrink*grid) - 1."""
    norm: Annotated[float, Field(gt=0.0)] = 2.4
    """Exponent of the search error sum |Q(W) - W|**norm."""
    grad_scaling: bool = True
    """LSQ gradient scaling g = 1/sqrt(in_features * P) on scale and zero point."""

    @model_validator(mode="after")
    def _search_has_a_candidate(self) -> Self:
        if int(self.max_shrink * self.grid) < 1:
            raise ValueError(
                f"max_shrink={self.max_shrink} with grid={self.grid} gives no search candidate; "
                "need int(max_shrink * grid) >= 1"
            )
        return self


class MinMaxWeight(Frozen):
    """Round-to-nearest with per-row min/max range (the PTQ baseline); scale/zero point are frozen."""

    kind: Literal["minmax"] = "minmax"
    bits: Bits = 4
    """Weight bit width."""


WeightQuantConfig = Annotated[
    Annotated[LSQPlusWeight, Tag("lsq_plus")] | Annotated[MinMaxWeight, Tag("minmax")], _kind_or("lsq_plus")
]


class ClippedDynamicActivation(Frozen):
    """Dynamic per-token asymmetric activations with learnable per-timestep-group clipping (docs/method.md §4)."""

    kind: Literal["clipped_dynamic"] = "clipped_dynamic"
    bits: Bits = 4
    """Activation bit width."""
    groups: Annotated[int, Field(ge=1, le=1000)] = 50
    """Number of timestep groups G, each with its own clip logits."""
    group_mode: GroupMode = "bin"
    """`bin`: g = min(G-1, floor(t*G/T)); `mod`: g = int(t) mod G (the reference's training grouping).
    `reference`: the reference's sampling with `--fix`, by call count, not timestep: the k-th transformer
    call of a sampling run uses group max(G-k, 0); `reference_nofix`: its sampling without `--fix`, group
    G-1 for every call. Only the two `reference*` modes reproduce the released checkpoints' own videos."""
    clip_init: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.9025
    """Initial clip factor sigmoid(logit) on per-token min and max (0.95 * 0.95 of the reference, B1)."""


class NoActivationQuant(Frozen):
    """Activations stay in the model dtype (weight-only quantization)."""

    kind: Literal["none"] = "none"


ActivationQuantConfig = Annotated[
    Annotated[ClippedDynamicActivation, Tag("clipped_dynamic")] | Annotated[NoActivationQuant, Tag("none")],
    _kind_or("clipped_dynamic"),
]


class RoleOverride(Frozen):
    """Per-role change: skip the role entirely, or use other bit widths."""

    skip: bool = False
    """Leave every Linear of this role in high precision."""
    weight_bits: Bits | None = None
    """Weight bit width for this role (None: the global one)."""
    act_bits: Bits | None = None
    """Activation bit width for this role (None: the global one)."""

    @model_validator(mode="after")
    def _skip_excludes_bits(self) -> Self:
        if self.skip and (self.weight_bits is not None or self.act_bits is not None):
            raise ValueError("skip=True cannot be combined with weight_bits/act_bits; set one or the other")
        return self


class KeptLowRank(Frozen):
    """SVDQuant-style branch kept at inference: smoothing migrated into the weights + 16-bit SVD_r(Ŵ)."""

    rank: Annotated[int, Field(ge=1, le=1024)] = 32
    """Rank r of the 16-bit branch (the SVDQuant paper uses 32)."""
    dtype: Literal["bfloat16", "float16"] = "bfloat16"
    """Storage dtype of the branch factors (the branch runs in float32 on CPU)."""


class QuantConfig(Frozen):
    """What to quantize and how; the single entry point's config (`prepare_(model, cfg)`)."""

    weight: WeightQuantConfig = Field(default_factory=LSQPlusWeight)
    """Weight quantizer variant."""
    activation: ActivationQuantConfig = Field(default_factory=ClippedDynamicActivation)
    """Activation quantizer variant (input of each quantized Linear)."""
    keep_high_precision: tuple[str, ...] = ()
    """fnmatch globs on module names that stay high precision (added to the family's own)."""
    role_overrides: dict[LayerRole, RoleOverride] = Field(default_factory=dict)
    """Per-role skip or bit widths."""
    kept_lowrank: KeptLowRank | None = None
    """SVDQuant's smoothing + 16-bit low-rank branch, kept at inference (None: no kept branch)."""

    @model_validator(mode="after")
    def _act_bits_need_act_quant(self) -> Self:
        if isinstance(self.activation, NoActivationQuant):
            bad = sorted(r.value for r, o in self.role_overrides.items() if o.act_bits is not None)
            if bad:
                raise ValueError(
                    f"role_overrides {bad} set act_bits but activation.kind is 'none'; "
                    "drop act_bits or use activation.kind='clipped_dynamic'"
                )
        return self

    def is_skipped(self, role: LayerRole) -> bool:
        """Whether `role` stays high precision."""
        override = self.role_overrides.get(role)
        return override is not None and override.skip

    def for_role(
        self, role: LayerRole
    ) -> tuple[LSQPlusWeight | MinMaxWeight, ClippedDynamicActivation | NoActivationQuant]:
        """The weight and activation configs with this role's bit overrides applied."""
        weight, activation = self.weight, self.activation
        override = self.role_overrides.get(role)
        if override is not None and override.weight_bits is not None:
            weight = weight.model_copy(update={"bits": override.weight_bits})
        if (
            override is not None
            and override.act_bits is not None
            and isinstance(activation, ClippedDynamicActivation)
        ):
            activation = activation.model_copy(update={"bits": override.act_bits})
        return weight, activation

    @classmethod
    def w4a4(cls) -> QuantConfig:
        """QVGen's main setting: LSQ+ W4, clipped dynamic A4, G=50 bin groups."""
        return cls(weight=LSQPlusWeight(bits=4), activation=ClippedDynamicActivation(bits=4))

    @classmethod
    def w3a3(cls) -> QuantConfig:
        """The paper's lower setting: LSQ+ W3, clipped dynamic A3."""
        return cls(weight=LSQPlusWeight(bits=3), activation=ClippedDynamicActivation(bits=3))

    @classmethod
    def w4a16(cls) -> QuantConfig:
        """Weight-only LSQ+ W4, activations unquantized."""
        return cls(weight=LSQPlusWeight(bits=4), activation=NoActivationQuant())

    @classmethod
    def rtn_w4a4(cls) -> QuantConfig:
        """PTQ baseline: min-max round-to-nearest W4, dynamic A4 with the fixed initial clip."""
        return cls(weight=MinMaxWeight(bits=4), activation=ClippedDynamicActivation(bits=4))
