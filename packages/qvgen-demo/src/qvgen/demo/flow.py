"""The QVGen demo flow on the embedded tiny Wan teacher: `run_demo(DemoConfig()) -> DemoResult`.

1. `build_shards`: procedural clips (qvgen.data, a world seed the teacher never trained on) encoded by the
   teacher's own VAE + UMT5 into latent shards (`qvgen.train.precompute`).
2. `train_variant`: a `qvgen.train.run` per method — RTN (PTQ, max_steps 0), LSQ QAT (no Φ) or QVGen
   (Φ decayed to rank 0 before the last step) — each exporting the real low-bit (deploy) student.
3. `evaluate`: teacher and students sample the same held-out prompts and seeds through
   `qvgen.eval.compare_models` (report.json + report.html), then prompt adherence
   (`qvgen.eval.score_videos`) of every model's written mp4s; `format_table` prints one row per model.

`benchmarks/paper_table.py` reuses these pieces for the paper's main table in miniature.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from qvgen.demo.teacher import DEFAULT_TEACHER_DIR, REPORT_NAME

Method = Literal["rtn", "lsq", "qvgen"]
"""RTN: min-max PTQ, no training. LSQ: LSQ+ QAT without Φ. QVGen: LSQ+ QAT with Φ and rank decay."""

DATA_WORLD_SEED = 4000
"""World seed of the demo's training clips (the teacher trained on 1000 and was evaluated on 2000)."""
PROMPT_WORLD_SEED = 5000
"""World seed whose captions are the held-out prompts (no training set uses it)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class TrainBudget(_Frozen):
    """What every QAT method gets: steps, data, batch, learning rates (the same for LSQ and QVGen)."""

    steps: Annotated[int, Field(ge=0)] = 160
    """Optimizer steps; 0 is PTQ only."""
    batch_size: Annotated[int, Field(ge=1)] = 8
    lr: Annotated[float, Field(gt=0)] = 2e-4
    """Learning rate of latent weights, weight quantizer parameters, Φ and the other trainables."""
    act_clip_lr: Annotated[float, Field(gt=0)] = 1e-2
    """Learning rate of the activation clipping logits."""
    initial_rank: Annotated[int, Field(ge=1)] = 8
    """QVGen's r0; the decay period is chosen so Φ is gone before the last step."""
    seed: int = 0


class DemoConfig(_Frozen):
    """`qvgen demo`: one QVGen W4A4 training on the embedded teacher, compared with RTN and the teacher."""

    out: Path = Path("outputs/demo")
    """Output folder: shards/, runs/, report/ (report.html, mp4s)."""
    teacher: Path = DEFAULT_TEACHER_DIR
    """The teacher's diffusers folder (default: the embedded tiny Wan teacher)."""
    steps: Annotated[int, Field(ge=1)] = 160
    """QVGen training steps."""
    prompts: Annotated[int, Field(ge=1, le=64)] = 4
    """Number of held-out prompts (one video each)."""
    seed: int = 0
    """Seed of training and of the sampled videos (video k uses seed + k)."""
    num_clips: Annotated[int, Field(ge=1)] = 256
    """Procedural training clips encoded into shards."""
    batch_size: Annotated[int, Field(ge=1)] = 8
    bits: Literal[3, 4] = 4
    """Weight and activation bit width (W4A4 or W3A3)."""
    initial_rank: Annotated[int, Field(ge=1)] = 8
    sampling_steps: Annotated[int, Field(ge=1)] = 25
    guidance_scale: Annotated[float, Field(ge=1)] = 5.0
    progress: bool = True
    """tqdm progress bars."""

    @model_validator(mode="after")
    def _phi_fits(self) -> DemoConfig:
        decay_period(self.initial_rank, self.steps)  # raises with the fix in the message
        return self

    def budget(self) -> TrainBudget:
        return TrainBudget(
            steps=self.steps, batch_size=self.batch_size, initial_rank=self.initial_rank, seed=self.seed
        )


@dataclass(frozen=True, slots=True)
class Row:
    """One model's line of the table (means over the held-out videos)."""

    name: str
    colour: float
    shape: float
    motion: float
    flickering: float
    psnr_db: float | None
    latent_mse: float | None
    step_relative_mse: float | None

    @property
    def adherence(self) -> float:
        return (self.colour + self.shape + self.motion) / 3


@dataclass(frozen=True, slots=True)
class DemoResult:
    """What `run_demo` produced."""

    rows: tuple[Row, ...]
    report_html: Path
    report_json: Path
    deploy_dir: Path
    phi_rank: int | None
    prompts: tuple[str, ...]
    wall_s: float

    def table(self) -> str:
        return format_table(self.rows)


def decay_period(initial_rank: int, steps: int) -> int:
    """The longest rank-decay period whose schedule removes Φ before step `steps - 1`."""
    from qvgen.auxiliary import DecaySchedule, num_periods, validate_against_steps

    period = (steps - 1) // num_periods(DecaySchedule(initial_rank=initial_rank, period=1))
    if period < 1:
        raise ValueError(
            f"steps={steps} is too short to decay Φ from rank {initial_rank} to 0 "
            f"(needs at least {num_periods(DecaySchedule(initial_rank=initial_rank, period=1)) + 1} steps); "
            "raise steps or lower initial_rank"
        )
    validate_against_steps(DecaySchedule(initial_rank=initial_rank, period=period), steps)
    return period


def teacher_clip_shape(teacher: Path) -> tuple[int, int, int]:
    """(frames, height, width) the teacher was trained on, from its `training_report.json`."""
    path = Path(teacher) / REPORT_NAME
    try:
        cfg = json.loads(path.read_text())["config"]
        return int(cfg["frames"]), int(cfg["height"]), int(cfg["width"])
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise ValueError(
            f"{path}: cannot read the teacher's clip size (config.frames/height/width): {e}"
        ) from e


def held_out_prompts(n: int, shape: tuple[int, int, int], seed: int = PROMPT_WORLD_SEED) -> tuple[str, ...]:
    """The first `n` distinct one-object captions of procedural world `seed` (never used for training)."""
    from qvgen.data import make_clip

    frames, height, width = shape
    out: list[str] = []
    i = 0
    while len(out) < n:
        caption = make_clip(seed, i, frames=frames, height=height, width=width, max_objects=1).caption
        if caption not in out:
            out.append(caption)
        i += 1
        if i > 100 * n + 1000:
            raise ValueError(f"world {seed} gives fewer than {n} distinct captions")
    return tuple(out)


def run_demo(cfg: DemoConfig) -> DemoResult:
    """Shards → QVGen training (Φ to rank 0) → deploy export → teacher / RTN / QVGen compared."""
    raise NotImplementedError("skeleton: being written")


def format_table(rows: Sequence[Row]) -> str:
    """A plain-text table: adherence colour/shape/motion, flickering, PSNR and latent MSE vs the teacher."""
    head = ("model", "colour", "shape", "motion", "flicker", "PSNR dB", "latent MSE", "step relMSE")
    lines = [head]
    for r in rows:
        lines.append(
            (
                r.name,
                f"{r.colour:.3f}",
                f"{r.shape:.3f}",
                f"{r.motion:.3f}",
                f"{r.flickering:.2f}",
                "—" if r.psnr_db is None else f"{r.psnr_db:.2f}",
                "—" if r.latent_mse is None else f"{r.latent_mse:.4f}",
                "—" if r.step_relative_mse is None else f"{r.step_relative_mse:.4f}",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join(" | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines)


_ = time
