"""Pydantic boundary models of the eval CLI: what to sample, how, and what to compare."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from qvgen.core import Frozen
from qvgen.data import parse_caption
from qvgen.eval.vbench import VBenchDimension
from qvgen.eval.vbench import constants as vbench_constants
from qvgen.models import FamilyName


class FullPrecisionModel(Frozen):
    """The teacher: a local diffusers folder."""

    kind: Literal["full_precision"] = "full_precision"
    path: Path


class FakeQuantModel(Frozen):
    """A fake-quant student exported by training (manifest + safetensors), run with `QuantLinear`s."""

    kind: Literal["fake_quant"] = "fake_quant"
    path: Path
    base: Path | None = None
    """Diffusers folder for the VAE, text encoder, tokenizer and scheduler; None: the manifest's checkpoint."""


class DeployModel(Frozen):
    """A real low-bit export (packed int4 + integer GEMM deploy layers)."""

    kind: Literal["deploy"] = "deploy"
    path: Path
    base: Path | None = None
    """Diffusers folder for the VAE, text encoder, tokenizer and scheduler; None: the manifest's checkpoint."""


ModelSource = Annotated[FullPrecisionModel | FakeQuantModel | DeployModel, Field(discriminator="kind")]


class SamplingSettings(Frozen):
    """Pipeline settings; None takes the family's default (docs/method.md §10.3: 50 steps, CFG 5 Wan / 6 Cog)."""

    height: Annotated[int, Field(gt=0, multiple_of=16)] | None = None
    width: Annotated[int, Field(gt=0, multiple_of=16)] | None = None
    num_frames: Annotated[int, Field(gt=0)] | None = None
    num_inference_steps: Annotated[int, Field(gt=0)] | None = None
    guidance_scale: Annotated[float, Field(ge=0.0)] | None = None
    """Classifier-free guidance; > 1 runs the unconditional branch too (two calls for Wan, batched for Cog)."""
    negative_prompt: str | None = None
    use_dynamic_cfg: bool | None = None
    """CogVideoX only; the official script sets True with DDIM (docs/method.md B15)."""
    fps: Annotated[int, Field(gt=0)] | None = None
    """Frames per second of the written mp4; None: 16 (Wan) / 8 (CogVideoX)."""
    attention_backend: Annotated[str, Field(pattern=r"^_?[a-z0-9_]+$")] | None = None
    """diffusers attention backend for the transformer (`set_attention_backend`), e.g. "sage" (needs the
    `sageattention` package) or "flash" (`flash-attn`); None (default): diffusers' native SDPA."""

    def pipeline_overrides(self, family: str) -> dict[str, Any]:
        """The explicitly set pipeline keyword arguments."""
        _check_family_settings(family, self)
        fields = ("height", "width", "num_frames", "num_inference_steps", "guidance_scale", "negative_prompt")
        out = {k: getattr(self, k) for k in fields if getattr(self, k) is not None}
        if self.use_dynamic_cfg is not None:
            out["use_dynamic_cfg"] = self.use_dynamic_cfg
        return out


DeviceName = Annotated[str, Field(pattern=r"^(auto|cpu|cuda(:\d+)?|mps|xpu(:\d+)?)$")]
""""auto", or a torch device string such as "cpu", "cuda", "cuda:1"."""


class PromptSource(Frozen):
    """Prompts: inline, or a file (text: one per line; `.json`: VBench's full-info prompt suite)."""

    prompts: tuple[str, ...] = ()
    file: Path | None = None
    dimensions: tuple[str, ...] = ()
    """With a VBench full-info `.json`: only prompts of these dimensions."""
    videos_per_prompt: Annotated[int, Field(ge=1)] = 1
    """VBench uses 5 (25 for temporal_flickering)."""

    @model_validator(mode="after")
    def _one_source(self) -> PromptSource:
        if bool(self.prompts) == (self.file is not None):
            raise ValueError("set exactly one of prompts.prompts (inline list) and prompts.file")
        if self.dimensions and self.file is None:
            raise ValueError("prompts.dimensions filters prompts.file (a VBench full-info .json)")
        return self


def _check_family_settings(family: str, sampling: SamplingSettings) -> None:
    if sampling.use_dynamic_cfg is not None and family != "cogvideox":
        raise ValueError(f"sampling.use_dynamic_cfg is a CogVideoX setting; family is {family!r}")


class SampleConfig(Frozen):
    """`qvgen-eval sample`: one model, a prompt list, seeds → `{prompt}-{index}.mp4` in `out_dir`."""

    schema_version: Literal[1] = 1
    family: FamilyName
    model: ModelSource
    prompts: PromptSource
    out_dir: Path
    seed: int = 0
    """Video k (prompt-major order) uses seed + k, whatever the number of processes."""
    sampling: SamplingSettings = SamplingSettings()
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: DeviceName = "auto"
    """"auto": the accelerate process's device (cuda:<local rank> when there is a GPU, else cpu)."""
    skip_existing: bool = True
    """Reuse the videos already in out_dir whose sidecar matches this config and model (resume); False
    samples every video again."""
    on_change: Literal["error", "resample"] = "error"
    """An existing video whose sidecar differs (another model, seed, setting) or that has none: "error"
    refuses the run listing them and what changed; "resample" samples just those again (`--overwrite`)."""

    @model_validator(mode="after")
    def _family_settings(self) -> SampleConfig:
        _check_family_settings(self.family, self.sampling)
        return self


class Variant(Frozen):
    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]
    """Folder name and column title in the report."""
    model: ModelSource


class VBenchSettings(Frozen):
    """Run VBench on every model's videos after `compare` sampled them (weights from a local cache only)."""

    dimensions: Annotated[tuple[VBenchDimension, ...], Field(min_length=1)]
    cache_dir: Path | None = None
    """None: `$VBENCH_CACHE_DIR`, else `~/.cache/vbench`."""
    python: Path | None = None
    """Interpreter with `vbench`; None: `$QVGEN_VBENCH_PYTHON`, else this one."""
    device: Literal["cpu", "cuda"] = "cpu"

    @model_validator(mode="after")
    def _custom_dimensions(self) -> VBenchSettings:
        bad = sorted(set(self.dimensions) & set(vbench_constants().custom_input_unsupported))
        if bad:
            raise ValueError(
                f"vbench.dimensions {bad} need VBench's own prompt suite and naming; score those folders with "
                "`qvgen-eval vbench` in mode 'vbench_standard' instead"
            )
        return self


class CompareConfig(Frozen):
    """`qvgen-eval compare`: teacher and variants at the same seeds → metrics, JSON report, HTML page."""

    schema_version: Literal[1] = 1
    family: FamilyName
    teacher: FullPrecisionModel
    variants: Annotated[tuple[Variant, ...], Field(min_length=1)]
    prompts: PromptSource
    out_dir: Path
    seed: int = 0
    sampling: SamplingSettings = SamplingSettings()
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: DeviceName = "auto"
    embed_videos: bool = True
    """Embed the mp4s in the HTML page (one self-contained file); False links them relatively."""
    vbench: VBenchSettings | None = None
    """Also score every model with VBench (custom prompts: VBench reads them from the file names)."""
    adherence: bool = False
    """Also score prompt adherence (colour, shape, motion) on every video; the prompts must be captions of
    qvgen.data's procedural world (`qvgen.data.parse_caption`)."""

    @model_validator(mode="after")
    def _unique_names(self) -> CompareConfig:
        _check_family_settings(self.family, self.sampling)
        if self.adherence:
            for prompt in self.prompts.prompts:
                try:
                    parse_caption(prompt)
                except ValueError as err:
                    raise ValueError(
                        f"adherence: true needs procedural-world captions; prompt {prompt!r}: {err}"
                    ) from err
        names = [v.name for v in self.variants]
        if "teacher" in names or len(set(names)) != len(names):
            raise ValueError(f"variants need unique names other than 'teacher', got {names}")
        return self
