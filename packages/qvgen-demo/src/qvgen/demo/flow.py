"""The QVGen demo flow on the embedded tiny Wan teacher: `run_demo(DemoConfig()) -> DemoResult`.

1. `build_shards`: procedural clips (qvgen.data, a world seed the teacher never trained on) encoded by the
   teacher's own VAE + UMT5 into latent shards.
2. `train_variant`: a `qvgen.train.run` per method — RTN (PTQ, max_steps 0), LSQ QAT (no Φ) or QVGen
   (Φ decayed to rank 0 before the last step) — each exporting the real low-bit (deploy) student.
3. `evaluate` (table.py): teacher and students sample the same held-out prompts and seeds through
   `qvgen.eval.compare_models` with the prompt-adherence scorer (report.json + report.html);
   `format_table` prints one row per model.

`benchmarks/paper_table.py` reuses these pieces (exported by `qvgen.demo`) for the paper's main table.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, model_validator
from tqdm.auto import tqdm

from qvgen.core import Frozen, files_sha256
from qvgen.data import DEFAULT_STYLE, WorldStyle
from qvgen.demo.table import Row, evaluate, format_table
from qvgen.demo.teacher_config import DEFAULT_TEACHER_DIR, REPORT_NAME

if TYPE_CHECKING:
    from qvgen.data import ProceduralClip
    from qvgen.train import RunConfig

Method = Literal["rtn", "lsq", "qvgen"]
"""RTN: min-max PTQ, no training. LSQ: LSQ+ QAT without Φ. QVGen: LSQ+ QAT with Φ and rank decay."""

DATA_WORLD_SEED = 4000
"""World seed of the demo's training clips (the teacher trained on 1000 and was evaluated on 2000)."""
PROMPT_WORLD_SEED = 5000
"""World seed of the held-out prompts: no training set draws from it, so its layouts and noise are new,
but the world has only 84 one-object captions, so most of its captions also occur in training."""


class TrainBudget(Frozen):
    """What every QAT method gets: steps, data, batch, learning rates (the same for LSQ and QVGen)."""

    steps: Annotated[int, Field(ge=0)] = 800
    """Optimizer steps; 0 is PTQ only."""
    batch_size: Annotated[int, Field(ge=1)] = 8
    lr: Annotated[float, Field(gt=0)] = 2e-4
    """Learning rate of the latent weights, Φ and the other trainables (biases, norms, modulation)."""
    qparam_lr: Annotated[float, Field(gt=0)] = 1e-4
    """Learning rate of the LSQ+ weight scales and zero points (too high and a scale crosses zero)."""
    act_clip_lr: Annotated[float, Field(gt=0)] = 1e-2
    """Learning rate of the activation clipping logits."""
    initial_rank: Annotated[int, Field(ge=1)] = 8
    """QVGen's r0; the decay period is chosen so Φ is gone before step `decay_fraction × steps`."""
    decay_fraction: Annotated[float, Field(gt=0, le=1)] = 1.0
    """Share of the steps over which Φ decays to rank 0 (1.0: gone just before the last step; 0.5: the
    second half trains the plain quantized model)."""
    phi_lr: Annotated[float, Field(gt=0)] | None = None
    """Learning rate of Φ; None: `lr`."""
    seed: int = 0


class DemoConfig(Frozen):
    """`qvgen demo`: one QVGen W4A4 training on the embedded teacher, compared with RTN and the teacher."""

    out: Path = Path("outputs/demo")
    """Output folder: shards/, runs/, report/ (report.html, mp4s)."""
    teacher: Path = DEFAULT_TEACHER_DIR
    """The teacher's diffusers folder (default: the embedded tiny Wan teacher)."""
    steps: Annotated[int, Field(ge=1)] = 600
    """QVGen training steps (600 keeps the demo under 10 minutes on a 2-core CPU with the 4-block teacher)."""
    prompts: Annotated[int, Field(ge=1, le=64)] = 12
    """Number of held-out prompts (one video each); a quarter of them (rounded down) have two objects."""
    seed: int = 0
    """Seed of training and of the sampled videos (video k uses seed + k)."""
    num_clips: Annotated[int, Field(ge=1)] = 512
    """Procedural training clips encoded into shards."""
    batch_size: Annotated[int, Field(ge=1)] = 8
    bits: Literal[3, 4] = 4
    """Weight and activation bit width (W4A4 or W3A3)."""
    initial_rank: Annotated[int, Field(ge=1)] = 8
    sampling_steps: Annotated[int, Field(ge=1)] | None = None
    """Denoising steps per video; None: the teacher's own evaluation setting (its training_report.json)."""
    guidance_scale: Annotated[float, Field(ge=1)] | None = None
    """Classifier-free guidance; None: the teacher's own evaluation setting."""
    progress: bool = True
    """tqdm progress bars."""
    threads: Annotated[int, Field(ge=1)] | None = 1
    """torch intra-op threads; the tiny model gains nothing from more, and on a shared CPU extra threads
    contend (training steps about 20× slower with 2 threads on a busy 2-core box). None: torch's default."""
    lora: Path | None = None
    """A diffusers-format LoRA folder (`qvgen train-lora`'s); every model is then also sampled with it loaded
    (rows ``teacher+lora``, ``rtn-…+lora``, ``qvgen-…+lora``). Needs peft (`qvgen-demo[lora]`)."""

    @model_validator(mode="after")
    def _phi_fits(self) -> DemoConfig:
        decay_period(self.initial_rank, self.steps)  # raises with the fix in the message
        return self

    @model_validator(mode="after")
    def _lora_exists(self) -> DemoConfig:
        from qvgen.demo.lora_training import LORA_WEIGHTS_NAME

        if self.lora is not None and not (self.lora / LORA_WEIGHTS_NAME).is_file():
            raise ValueError(
                f"lora={self.lora}: no {LORA_WEIGHTS_NAME} there; give the folder `qvgen train-lora --out` wrote"
            )
        return self

    def budget(self) -> TrainBudget:
        return TrainBudget(
            steps=self.steps, batch_size=self.batch_size, initial_rank=self.initial_rank, seed=self.seed
        )


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


def decay_steps(budget: TrainBudget) -> int:
    """The steps within which QVGen's Φ must be gone: `decay_fraction` of `steps`, at least 2."""
    return max(2, round(budget.steps * budget.decay_fraction))


def _teacher_setting(teacher: Path, keys: tuple[str, ...]) -> tuple[float, ...]:
    path = Path(teacher) / REPORT_NAME
    try:
        cfg = json.loads(path.read_text())["config"]
        return tuple(float(cfg[k]) for k in keys)
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise ValueError(f"{path}: cannot read the teacher's config.{'/'.join(keys)}: {e}") from e


def teacher_clip_shape(teacher: Path) -> tuple[int, int, int]:
    """(frames, height, width) the teacher was trained on, from its `training_report.json`."""
    frames, height, width = _teacher_setting(teacher, ("frames", "height", "width"))
    return int(frames), int(height), int(width)


def teacher_world_style(teacher: Path) -> WorldStyle:
    """How the teacher's world looks (background, object sizes), from its `training_report.json`; a teacher
    trained before the style was configurable saw qvgen.data's default world."""
    path = Path(teacher) / REPORT_NAME
    try:
        cfg = json.loads(path.read_text())["config"]
        if "background" not in cfg:
            return DEFAULT_STYLE
        return WorldStyle(
            cfg["background"], tuple(cfg["radius_fraction"]), cfg.get("layout", "random"),
            cfg.get("lane_shrink", DEFAULT_STYLE.lane_shrink), cfg.get("shapes", DEFAULT_STYLE.shapes),
        )  # fmt: skip
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise ValueError(
            f"{path}: cannot read the teacher's world (config.background/radius_fraction): {e}"
        ) from e


def teacher_sampling(teacher: Path) -> tuple[int, float]:
    """(denoising steps, CFG scale) the teacher's model card evaluates it with."""
    steps, guidance = _teacher_setting(teacher, ("num_inference_steps", "guidance_scale"))
    return int(steps), guidance


def teacher_fingerprint(teacher: Path) -> str:
    """A short hash of what the teacher's latent shards depend on: its VAE, text encoder and tokenizer files,
    and the world its clips are drawn from (style, shapes, objects per clip)."""
    folders = [Path(teacher) / sub for sub in ("vae", "text_encoder", "tokenizer")]
    for folder in folders:
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: the teacher has no {folder.name}/ folder")
    world = f"{teacher_world_style(teacher)!r};max_objects={teacher_max_objects(teacher)}"
    return hashlib.sha256(f"{files_sha256(folders, teacher)};{world}".encode()).hexdigest()[:12]


def teacher_max_objects(teacher: Path) -> int:
    """Objects per training clip of the teacher's world (1 for a teacher trained before two-object clips)."""
    return int(json.loads((Path(teacher) / REPORT_NAME).read_text())["config"].get("max_objects", 1))


def held_out_clips(
    n: int,
    shape: tuple[int, int, int],
    seed: int = PROMPT_WORLD_SEED,
    *,
    two_object: int = 0,
    style: WorldStyle = DEFAULT_STYLE,
) -> tuple[ProceduralClip, ...]:
    """`n - two_object` one-object clips then `two_object` two-object clips of procedural world `seed` (no
    training set uses it), each with a caption not used by an earlier one."""
    from qvgen.data import make_clip

    if not 0 <= two_object <= n:
        raise ValueError(f"two_object must lie in [0, n={n}], got {two_object}")
    frames, height, width = shape
    out: list[ProceduralClip] = []
    for objects, count in ((1, n - two_object), (2, two_object)):
        found: dict[str, ProceduralClip] = {}
        i = 0
        while len(found) < count:
            clip = make_clip(seed, 10_000 * objects + i, frames=frames, height=height, width=width,
                             num_objects=objects, style=style)  # fmt: skip
            found.setdefault(clip.caption, clip)
            i += 1
            if i > 100 * count + 1000:
                raise ValueError(f"world {seed} gives fewer than {count} distinct {objects}-object captions")
        out += found.values()
    return tuple(out)


def held_out_prompts(
    n: int,
    shape: tuple[int, int, int],
    seed: int = PROMPT_WORLD_SEED,
    *,
    two_object: int = 0,
    style: WorldStyle = DEFAULT_STYLE,
) -> tuple[str, ...]:
    """The captions of `held_out_clips` (one-object ones first)."""
    return tuple(c.caption for c in held_out_clips(n, shape, seed, two_object=two_object, style=style))


def build_shards(teacher: Path, out_dir: Path, num_clips: int, *, seed: int = DATA_WORLD_SEED) -> Path:
    """`num_clips` procedural clips of world `seed` at the teacher's clip size (1 or 2 objects, like the
    teacher's training world), rendered in memory and encoded by the teacher's own VAE + UMT5 straight into
    latent shards under `out_dir/shards-<teacher fingerprint>-<seed>-<n>` (lossless and deterministic; reused
    when already complete, resumed when interrupted; another teacher gets another folder)."""
    from qvgen.data import read_manifest
    from qvgen.demo.world import ClipShape, write_world_shards
    from qvgen.models import get_family

    shard_dir = out_dir / f"shards-{teacher_fingerprint(teacher)}-{seed}-{num_clips}"
    try:
        if read_manifest(shard_dir).num_samples == num_clips:
            return shard_dir
    except (OSError, ValueError):
        pass  # no (complete) shard set yet: write it
    frames, height, width = teacher_clip_shape(teacher)
    max_objects = teacher_max_objects(teacher)
    components = get_family("wan").load(teacher, dtype="float32")
    write_world_shards(
        components, seed, num_clips, ClipShape(frames, height, width, teacher_world_style(teacher)), shard_dir,
        max_objects=max_objects, progress=False,
    )  # fmt: skip
    return shard_dir


def run_config(
    method: Method, bits: int, teacher: Path, shards: Path | None, budget: TrainBudget, out_dir: Path, *,
    progress: bool = True, high_precision_roles: Sequence[str] = (), act_bits: int | None = None,
    act_clip_init: float | None = None,
) -> RunConfig:  # fmt: skip
    """The `qvgen.train.RunConfig` of one method at W{bits}A{bits}; LSQ and QVGen share `budget`.

    `act_bits`: the activation bit width when it differs from the weights' (e.g. W4A8, where the weight
    error dominates). `act_clip_init`: the activation quantizer's initial clip factor instead of its default
    (e.g. 0.9999 for RTN with plain per-token min-max ranges).

    `high_precision_roles`: qvgen.quant layer roles (e.g. "time_embed", "modulation", "proj_out") whose
    linears stay unquantized; by default every linear of the transformer is quantized, as in the paper's code.
    """
    from qvgen.auxiliary import AuxConfig, DecaySchedule
    from qvgen.data import LoaderConfig
    from qvgen.models import WanSpec
    from qvgen.quant import (
        ClippedDynamicActivation,
        LayerRole,
        LSQPlusWeight,
        MinMaxWeight,
        QuantConfig,
        RoleOverride,
    )
    from qvgen.train import (
        CheckpointConfig,
        LearningRates,
        LoggingConfig,
        OptimConfig,
        RunConfig,
        TrainConfig,
    )

    clip = {} if act_clip_init is None else {"clip_init": act_clip_init}  # validated like a config file's
    activation = ClippedDynamicActivation(bits=bits if act_bits is None else act_bits, **clip)
    weight = MinMaxWeight(bits=bits) if method == "rtn" else LSQPlusWeight(bits=bits)
    try:
        skipped = {LayerRole(r): RoleOverride(skip=True) for r in high_precision_roles}
    except ValueError as e:
        raise ValueError(f"high_precision_roles: {e}; roles are {[r.value for r in LayerRole]}") from e
    quant = QuantConfig(weight=weight, activation=activation, role_overrides=skipped)
    steps = 0 if method == "rtn" else budget.steps
    aux = None
    if method == "qvgen":
        period = decay_period(budget.initial_rank, decay_steps(budget))
        aux = AuxConfig(decay=DecaySchedule(initial_rank=budget.initial_rank, period=period))
    lr = budget.lr
    phi_lr = (budget.phi_lr or lr) if method == "qvgen" else lr  # LSQ has no Φ: keep its config unchanged
    return RunConfig(
        model=WanSpec(checkpoint=teacher, dtype="float32"),
        quant=quant,
        aux=aux,
        data=None
        if steps == 0 or shards is None
        else LoaderConfig(shards=shards, batch_size=budget.batch_size, num_workers=0, seed=budget.seed),
        optim=OptimConfig(
            lr=LearningRates(
                weights=lr, weight_qparams=budget.qparam_lr, act_clip=budget.act_clip_lr, phi=phi_lr, other=lr
            )
        ),
        train=TrainConfig(max_steps=steps, caption_dropout=0.1, seed=budget.seed),
        logging=LoggingConfig(progress_bar=progress),
        checkpoint=CheckpointConfig(every_n_steps=None),
        output_dir=out_dir,
    )


@dataclass(frozen=True, slots=True)
class TrainedVariant:
    """A finished `train_variant`: the deploy export, Φ's final rank and the loss at every logged step."""

    deploy_dir: Path
    phi_rank: int | None
    losses: tuple[float, ...]


def train_variant(cfg: RunConfig) -> TrainedVariant:
    """Run `cfg` (PTQ when max_steps is 0) and return its deploy export, Φ's final rank and its losses."""
    from qvgen.train import run

    # a previous demo's run is replaced (temp sibling + rename); a folder qvgen-train did not write is refused
    result = run(cfg, overwrite=True)
    if result.deploy_dir is None:
        raise RuntimeError(f"{cfg.output_dir}: the run wrote no deploy export (export.deploy is off)")
    return TrainedVariant(result.deploy_dir, result.phi_rank, tuple(result.losses))


def run_demo(cfg: DemoConfig) -> DemoResult:
    """Shards → QVGen training (Φ to rank 0) → deploy export → teacher / RTN / QVGen compared."""
    import torch

    start = time.perf_counter()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    shape = teacher_clip_shape(cfg.teacher)
    default_steps, default_guidance = teacher_sampling(cfg.teacher)
    prompts = held_out_prompts(
        cfg.prompts, shape, two_object=cfg.prompts // 4, style=teacher_world_style(cfg.teacher)
    )
    stages = tqdm(total=4, desc="qvgen demo", unit="stage", disable=not cfg.progress)
    stages.set_postfix_str(f"procedural clips + latent shards ({cfg.num_clips} clips)")
    shards = build_shards(cfg.teacher, out, cfg.num_clips)
    budget = cfg.budget()
    tag = f"w{cfg.bits}a{cfg.bits}"
    stages.update()
    stages.set_postfix_str(f"RTN {tag} (PTQ)")
    rtn = train_variant(
        run_config(
            "rtn", cfg.bits, cfg.teacher, None, budget, out / "runs" / f"rtn-{tag}", progress=cfg.progress
        )
    )
    stages.update()
    stages.set_postfix_str(f"QVGen {tag} training ({cfg.steps} steps)")
    qvgen = train_variant(
        run_config(
            "qvgen",
            cfg.bits,
            cfg.teacher,
            shards,
            budget,
            out / "runs" / f"qvgen-{tag}",
            progress=cfg.progress,
        )
    )
    stages.update()
    stages.set_postfix_str(f"sampling {len(prompts)} held-out prompts × 3 models")
    evaluation = evaluate(
        cfg.teacher,
        [(f"rtn-{tag}", rtn.deploy_dir), (f"qvgen-{tag}", qvgen.deploy_dir)],
        prompts,
        out / "report",
        seed=cfg.seed,
        sampling_steps=cfg.sampling_steps or default_steps,
        guidance_scale=cfg.guidance_scale or default_guidance,
        clip_shape=shape,
        progress=cfg.progress,
        lora=cfg.lora,
    )
    stages.update()
    stages.close()
    return DemoResult(
        rows=evaluation.rows,
        report_html=evaluation.report_html,
        report_json=evaluation.report_json,
        deploy_dir=qvgen.deploy_dir,
        phi_rank=qvgen.phi_rank,
        prompts=prompts,
        wall_s=time.perf_counter() - start,
    )
