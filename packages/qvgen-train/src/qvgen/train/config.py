"""`RunConfig`: one training run, validated at the edge (YAML file + `--set` overrides)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from qvgen import core
from qvgen.auxiliary import AuxConfig, validate_against_steps
from qvgen.core import ConfigError, Frozen, apply_overrides, parse_override
from qvgen.data import LoaderConfig
from qvgen.models import ModelSpec
from qvgen.quant import MAX_WEIGHT_BITS, LayerRole, QuantConfig
from qvgen.train.method_config import MethodConfig, QATMethod, check_method

__all__ = ["ConfigError", "RunConfig", "apply_overrides", "load_config", "parse_override"]


class LearningRates(Frozen):
    """One learning rate per optimizer parameter group (docs/method.md §8.1)."""

    weights: Annotated[float, Field(ge=0)] = 3e-5
    """Latent full-precision weights of quantized linears."""
    weight_qparams: Annotated[float, Field(ge=0)] = 3e-5
    """Weight quantizer scale and zero point."""
    act_clip: Annotated[float, Field(ge=0)] = 1e-2
    """Activation clipping logits."""
    phi: Annotated[float, Field(ge=0)] = 3e-5
    """The auxiliary low-rank branches Φ (L, R)."""
    other: Annotated[float, Field(ge=0)] = 3e-5
    """Every other trainable parameter: biases, norms, patch embedding, modulation tables."""


class OptimConfig(Frozen):
    """AdamW over explicit parameter groups, linear warm-up then cosine to zero."""

    lr: LearningRates = LearningRates()
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.9, 0.95)
    eps: Annotated[float, Field(gt=0)] = 1e-8
    weight_decay: Annotated[float, Field(ge=0)] = 1e-4
    """Applied to every group, quantizer parameters and Φ included (as in the reference scripts)."""
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_fraction: Annotated[float, Field(ge=0, le=1)] = 0.1
    """Linear warm-up length as a fraction of `train.max_steps` (rounded): 267 of 2667, 200 of 2000."""


class TrainConfig(Frozen):
    """The loop: length, precision, objective, randomness."""

    max_steps: Annotated[int, Field(ge=0)]
    """Optimizer steps; 0 means post-training quantization only (calibrate, export)."""
    grad_clip: Annotated[float, Field(gt=0)] | None = 1.0
    """Global gradient-norm clip; null disables it."""
    gradient_checkpointing: bool = False
    """Block-level activation checkpointing of the student (one level only, docs/method.md B9)."""
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    """accelerate autocast for the student; quantizer arithmetic stays float32 inside qvgen.quant."""
    caption_dropout: Annotated[float, Field(ge=0, le=1)] = 0.05
    """Probability that a whole batch is trained on the empty prompt (teacher sees the same)."""
    loss_target: Literal["teacher", "data"] = "teacher"
    """teacher: MSE to the full-precision teacher on the same noisy input; data: the family's target."""
    seed: int = 42
    """Model-independent seed; each process draws its timesteps and noise from `seed + rank` (B3)."""
    sharding: Literal["ddp", "fsdp2"] = "ddp"
    """ddp: every process holds the whole student (accelerate's DDP); fsdp2: the student's blocks are
    sharded with torch's `fully_shard` and Φ stays replicated outside them (`qvgen.train.sharding`).
    Launch both with a multi-process accelerate config (configs/accelerate/ddp.yaml)."""


_PIPELINE_SIZE_MULTIPLE = {"wan": 16, "cogvideox": 8}
"""What diffusers' WanPipeline / CogVideoXPipeline `check_inputs` require of height and width."""


class ValidationConfig(Frozen):
    """Sample short clips with the student every N steps and write them as mp4."""

    every_n_steps: Annotated[int, Field(ge=1)] = 200
    prompts: Annotated[tuple[str, ...], Field(min_length=1)] = ("a red square moves left",)
    num_frames: Annotated[int, Field(ge=1)] = 9
    height: Annotated[int, Field(ge=16)] = 64
    width: Annotated[int, Field(ge=16)] = 64
    num_inference_steps: Annotated[int, Field(ge=1)] = 4
    guidance_scale: Annotated[float, Field(ge=1)] = 5.0
    fps: Annotated[int, Field(ge=1)] = 8


class LoggingConfig(Frozen):
    """Where metrics go: console progress bar, JSONL file, optionally TensorBoard."""

    every_n_steps: Annotated[int, Field(ge=1)] = 1
    progress_bar: bool = True
    tensorboard: bool = False
    """Needs the `tensorboard` package; the JSONL log (`metrics.jsonl`) is always written."""
    validation: ValidationConfig | None = None


class CheckpointConfig(Frozen):
    """Periodic resumable checkpoints under `output_dir/checkpoints/step-<N>`."""

    every_n_steps: Annotated[int, Field(ge=1)] | None = 200
    """null: no intermediate checkpoints."""
    keep_last: Annotated[int, Field(ge=1)] = 2
    resume_from: Path | Literal["latest"] | None = None
    """A checkpoint folder, `latest` (newest valid one under output_dir, or a fresh start), or null."""


class ExportConfig(Frozen):
    """What is written at the end of the run."""

    fake_quant: bool = True
    """The trained fake-quant student (Φ gone) in qvgen-quant's manifest + safetensors format."""
    deploy: bool = True
    """The real low-bit student after `qvgen.quant.convert_`."""


class RunConfig(Frozen):
    """A whole QVGen run. Baselines are configs: PTQ (max_steps 0), LSQ QAT (aux null), QVGen (aux set)."""

    schema_version: Literal[1] = 1
    method: MethodConfig = QATMethod()
    """qat (QVGen / LSQ / RTN, as set by aux and max_steps) or a baseline: efficientdm, qdm, svdquant."""
    model: ModelSpec
    """The family and checkpoint; `model.dtype` is the frozen teacher's dtype, the student trains in float32."""
    quant: QuantConfig = QuantConfig()
    aux: AuxConfig | None = None
    """The auxiliary branches Φ and their rank decay; null trains plain QAT (the LSQ baseline)."""
    data: LoaderConfig | None = None
    """Latent shards; required when train.max_steps > 0. Its batch_size is the per-process batch."""
    optim: OptimConfig = OptimConfig()
    train: TrainConfig
    logging: LoggingConfig = LoggingConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    export: ExportConfig = ExportConfig()
    output_dir: Path
    """Run folder: metrics.jsonl, checkpoints/, final/ and validation/."""
    expert: Literal["transformer", "transformer_2", "both"] | None = None
    """Wan 2.2 A14B (two experts, `boundary_ratio` in the checkpoint's model_index.json): the expert to
    quantize, distilled from its own full-precision expert on the timesteps `WanPipeline` gives it
    (`transformer`: t ≥ boundary_ratio·1000, `transformer_2`: below). `both`: `transformer` then
    `transformer_2`, each a complete run in `output_dir/<expert>/` (own Φ, rank decay, checkpoints, export),
    then `output_dir/final/{fake_quant,deploy}/` assembled as two-expert folders (`qvgen.models.load_pipeline`
    reads the deploy one). null: the checkpoint's one `transformer`."""

    @model_validator(mode="after")
    def _data_when_training(self) -> RunConfig:
        if self.train.max_steps > 0 and self.data is None:
            raise ValueError(
                f"train.max_steps={self.train.max_steps} needs `data` (a qvgen.data LoaderConfig with "
                "`shards:`); set train.max_steps=0 for post-training quantization without data"
            )
        if self.aux is not None:
            validate_against_steps(self.aux, self.train.max_steps)  # Φ must be gone before the last step
        check_method(  # the method's rules on family, bit widths and the other sections
            self.method, family=self.model.family, quant=self.quant, has_aux=self.aux is not None,
            has_data=self.data is not None, max_steps=self.train.max_steps, loss_target=self.train.loss_target,
        )  # fmt: skip
        if self.data is not None and self.data.mode != "train":
            raise ValueError("data.mode must be 'train' for a training run (eval mode ends after one pass)")
        act = self.quant.activation
        mode = getattr(act, "group_mode", None) if act is not None else None
        if mode in ("reference", "reference_nofix"):
            raise ValueError(
                f"quant.activation.group_mode={mode!r} replays the reference's sampling call counter and is "
                "only for sampling imported reference checkpoints; train with 'bin' (default) or 'mod'"
            )
        return self

    @model_validator(mode="after")
    def _experts_are_wan(self) -> RunConfig:
        """expert vs model.family, logging.validation and checkpoint.resume_from."""
        if self.expert is None:
            return self
        if self.model.family != "wan":
            raise ValueError(
                f"expert={self.expert!r} needs model.family 'wan' (Wan 2.2 A14B), not {self.model.family!r}"
            )
        if self.logging.validation is not None:
            raise ValueError(
                f"expert={self.expert!r} with logging.validation: a clip needs both experts; set "
                "logging.validation=null and sample the exported two-expert deploy folder"
            )
        if self.expert == "both" and not (self.export.fake_quant or self.export.deploy):
            raise ValueError(
                "expert='both' with export.fake_quant=false and export.deploy=false: the two-expert folders are "
                "assembled from each expert's exports (and a resume skips an expert by them); enable one"
            )
        resume = self.checkpoint.resume_from
        if self.expert == "both" and resume is not None and resume != "latest":
            raise ValueError(
                f"expert='both' with checkpoint.resume_from={str(resume)!r}: each expert has its own "
                "checkpoints (output_dir/<expert>/checkpoints); use resume_from=latest"
            )
        return self

    @model_validator(mode="after")
    def _fsdp2_supports_the_run(self) -> RunConfig:
        """train.sharding=fsdp2 vs the features that need the whole student on one process."""
        if self.train.sharding != "fsdp2":
            return self
        if self.logging.validation is not None:
            raise ValueError(
                "train.sharding=fsdp2 with logging.validation: validation clips sample the whole student on "
                "the main process; set logging.validation=null (sample the exported student with qvgen-eval)"
            )
        kind = getattr(getattr(self, "method", None), "kind", "qat")
        if kind != "qat":
            raise ValueError(f"train.sharding=fsdp2 supports method.kind 'qat' (QVGen, LSQ), not {kind!r}")
        if self.train.mixed_precision == "fp16":
            # fp16's loss scaling needs accelerate's unscale before the clip, which the sharded clip skips
            raise ValueError(
                "train.sharding=fsdp2 with train.mixed_precision=fp16: use bf16 (no loss scaling)"
            )
        return self

    @model_validator(mode="after")
    def _validation_size_fits_the_pipeline(self) -> RunConfig:
        """logging.validation's height/width vs the family pipeline's own check, caught at load rather than
        at the first validation step (hours in)."""
        val = self.logging.validation
        multiple = _PIPELINE_SIZE_MULTIPLE[self.model.family]
        if val is not None and (val.height % multiple or val.width % multiple):
            raise ValueError(
                f"logging.validation: height {val.height} and width {val.width} must be multiples of {multiple} "
                f"for the {self.model.family} pipeline"
            )
        return self

    @model_validator(mode="after")
    def _deploy_can_store_the_weight_bits(self) -> RunConfig:
        """export.deploy vs the weight bits of every quantized role: caught at load, not after training."""
        if not self.export.deploy:
            return self
        for role in LayerRole:
            if self.quant.is_skipped(role):
                continue
            bits = self.quant.for_role(role)[0].bits
            if bits > MAX_WEIGHT_BITS:
                override = self.quant.role_overrides.get(role)
                where = (
                    f"quant.role_overrides.{role.value}.weight_bits"
                    if override is not None and override.weight_bits is not None
                    else "quant.weight.bits"
                )
                raise ValueError(
                    f"{where}={bits} cannot be exported with export.deploy=true: deploy layers store "
                    f"2..{MAX_WEIGHT_BITS}-bit weight codes (int4 container); use <= {MAX_WEIGHT_BITS} bits, "
                    "skip the role (quant.role_overrides.<role>.skip=true), or set export.deploy=false "
                    "(the fake-quant student is still written)"
                )
        return self


# --- loading -------------------------------------------------------------------------------------------


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a YAML run config with `--set` overrides (`qvgen.core.load_config`); errors name the file."""
    return core.load_config(RunConfig, path, overrides)
