"""`method`: which quantization method a run trains, and the rules each method puts on the rest of the config.

`qat` is QVGen (with `aux`), plain LSQ+ QAT (`aux: null`) or round-to-nearest PTQ (`train.max_steps: 0`),
as before. The baselines of the paper's comparison are methods of the same recipe:

- `efficientdm`: quantized latent weights frozen, a LoRA branch inside the weight quantizer
  (Qw(W + B·A·α/r)), merged into W before export; timestep-grouped activation clipping; teacher distillation.
- `qdm`: timestep-grouped activation quantization and Q-DM's noise-estimating mimicking loss
  (data-target MSE + λ · MSE to the full-precision teacher's estimate).
- `svdquant`: post-training; smoothing migrated into the weights and a 16-bit low-rank branch kept at
  inference (`quant.kept_lowrank`), calibrated on a few batches of the training data.

Every cross-field rule is checked when the config is loaded (`check_method`), naming the fields. This module
knows nothing of `RunConfig`: `config.py` imports it and hands `check_method` the sections it reads (one
direction).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from qvgen.core import Frozen
from qvgen.quant import MAX_WEIGHT_BITS, ClippedDynamicActivation, LSQPlusWeight, QuantConfig

SMALLEST_LINEAR: dict[str, int] = {"wan": 64, "cogvideox": 64}
"""min(in, out) over every Linear of a family, real and tiny configs: `proj_out` has out_channels (16)
× patch (2×2) = 64 outputs in Wan 2.1, CogVideoX 1.0 and the tiny models. A branch rank above it cannot fit."""

MAX_DEPLOY_WEIGHT_BITS = MAX_WEIGHT_BITS
"""The deploy layers store weights in an int4 container (quant's `MAX_WEIGHT_BITS`)."""


class QATMethod(Frozen):
    """QVGen (aux set), plain LSQ+ QAT (aux null) or RTN/min-max PTQ (max_steps 0)."""

    kind: Literal["qat"] = "qat"


class EfficientDMMethod(Frozen):
    """EfficientDM-style QALoRA: frozen latent weights, LoRA inside the weight quantizer, merged before export."""

    kind: Literal["efficientdm"] = "efficientdm"
    lora_rank: Annotated[int, Field(ge=1)] = 64
    """r of B·A (the reference's `--qa_rank`, 64)."""
    lora_alpha: Annotated[float, Field(gt=0)] = 64.0
    """The branch is scaled by α/r (the reference's `--qa_alpha`, 64)."""
    train_weight_qparams: bool = True
    """Keep training the weight scale/zero point (the reference's QuantLoRALinear does; EfficientDM freezes them)."""


class QDMMethod(Frozen):
    """Q-DM-style QAT: timestep-grouped activation ranges + NeM mimicking; the paper's TaQ/NeM formulas are
    unverified (only its abstract was readable, no official code): see the qvgen-train README, "Q-DM"."""

    kind: Literal["qdm"] = "qdm"
    data_weight: Annotated[float, Field(ge=0)] = 1.0
    """Weight of MSE(student, family data target)."""
    mimic_weight: Annotated[float, Field(ge=0)] = 1.0
    """λ of MSE(student, full-precision teacher) on the same noisy input (the mimicking term)."""


class SVDQuantMethod(Frozen):
    """SVDQuant-style PTQ: smoothing into W, 16-bit low-rank branch kept (rank: `quant.kept_lowrank.rank`)."""

    kind: Literal["svdquant"] = "svdquant"
    smooth_alpha: Annotated[float, Field(ge=0, le=1)] = 0.5
    """Migration strength α of λ_j = max|x_j|^α / max|W_j|^(1−α)."""
    calibration_batches: Annotated[int, Field(ge=1)] = 4
    """Batches of `data` run through the full-precision teacher to get per-channel activation maxima."""


MethodConfig = Annotated[
    QATMethod | EfficientDMMethod | QDMMethod | SVDQuantMethod, Field(discriminator="kind")
]
MethodName = Literal["qat", "efficientdm", "qdm", "svdquant"]


def _timestep_grouped(quant: QuantConfig, method: str) -> None:
    act = quant.activation
    if not isinstance(act, ClippedDynamicActivation) or act.groups < 2:
        raise ValueError(
            f"method.kind={method!r} needs timestep-aware activation quantization: set "
            "quant.activation.kind='clipped_dynamic' with quant.activation.groups >= 2"
        )


def _qat_shape(quant: QuantConfig, has_aux: bool, max_steps: int, method: str) -> None:
    if max_steps == 0:
        raise ValueError(f"method.kind={method!r} trains: set train.max_steps > 0")
    if has_aux:
        raise ValueError(f"method.kind={method!r} has no auxiliary branch Φ: set aux=null")
    if not isinstance(quant.weight, LSQPlusWeight):
        raise ValueError(f"method.kind={method!r} needs quant.weight.kind='lsq_plus' (learned weight ranges)")


def _rank_fits(family: str, rank: int, field: str) -> None:
    limit = SMALLEST_LINEAR.get(family)
    if limit is not None and rank > limit:
        raise ValueError(
            f"{field}={rank} does not fit the {family} family: its smallest Linear has "
            f"min(in, out) = {limit}; use a rank <= {limit}"
        )


def check_method(
    method: MethodConfig,
    *,
    family: str,
    quant: QuantConfig,
    has_aux: bool,
    has_data: bool,
    max_steps: int,
    loss_target: str,
) -> None:
    """Refuse a method option that the model family, the bit widths or the other sections cannot take.

    The arguments are the run config's `method`, `model.family`, `quant`, whether `aux` and `data` are set,
    `train.max_steps` and `train.loss_target` (`RunConfig` calls this from its validator)."""
    if quant.kept_lowrank is not None and not isinstance(method, SVDQuantMethod):
        raise ValueError(
            "quant.kept_lowrank is SVDQuant's kept branch: set method.kind='svdquant' or drop it"
        )
    match method:
        case QATMethod():
            return
        case EfficientDMMethod():
            _qat_shape(quant, has_aux, max_steps, method.kind)
            _timestep_grouped(quant, method.kind)
            _rank_fits(family, method.lora_rank, "method.lora_rank")
            if loss_target != "teacher":
                raise ValueError(
                    "method.kind='efficientdm' distils the full-precision teacher: train.loss_target='teacher'"
                )
        case QDMMethod():
            _qat_shape(quant, has_aux, max_steps, method.kind)
            _timestep_grouped(quant, method.kind)
            if method.data_weight == 0 and method.mimic_weight == 0:
                raise ValueError("method.data_weight and method.mimic_weight are both 0: the loss would be 0")
            if loss_target != "teacher":
                raise ValueError(
                    "method.kind='qdm' sets its own loss (method.data_weight, method.mimic_weight); "
                    "leave train.loss_target='teacher'"
                )
        case SVDQuantMethod():
            if max_steps != 0:
                raise ValueError(
                    "method.kind='svdquant' is post-training quantization: set train.max_steps=0"
                )
            if has_aux:
                raise ValueError("method.kind='svdquant' keeps its own branch, not Φ: set aux=null")
            if not has_data:
                raise ValueError("method.kind='svdquant' calibrates the smoothing on `data`: set data.shards")
            kept = quant.kept_lowrank
            if kept is None:
                raise ValueError("method.kind='svdquant' needs quant.kept_lowrank (e.g. {rank: 32})")
            _rank_fits(family, kept.rank, "quant.kept_lowrank.rank")
            if quant.weight.bits > MAX_DEPLOY_WEIGHT_BITS:
                raise ValueError(
                    f"method.kind='svdquant': quant.weight.bits={quant.weight.bits} cannot be deployed "
                    f"(int4 container); use <= {MAX_DEPLOY_WEIGHT_BITS} (W4A4 / W4A6)"
                )
            if not isinstance(quant.activation, ClippedDynamicActivation):
                raise ValueError(
                    "method.kind='svdquant' quantizes activations (W4A4 / W4A6): "
                    "quant.activation.kind='clipped_dynamic'"
                )
            if quant.activation.bits < 4:
                raise ValueError(
                    f"method.kind='svdquant' is defined for 4-8 bit activations (W4A4 / W4A6); "
                    f"quant.activation.bits={quant.activation.bits} is below that"
                )
