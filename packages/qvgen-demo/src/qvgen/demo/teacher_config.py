"""`TeacherConfig`: everything that defines a `qvgen train-teacher` run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from qvgen.core import Frozen
from qvgen.data import Background, Layout, ShapeSet, WorldStyle

DEFAULT_TEACHER_DIR = Path(__file__).parent / "assets" / "tiny_wan_teacher"
"""The committed teacher (a diffusers folder)."""
REPORT_NAME = "training_report.json"
CARD_NAME = "MODEL_CARD.md"


class TeacherConfig(Frozen):
    """Everything that defines a teacher training run.

    The defaults are the first teacher's recipe; the committed teacher's own command (different world,
    width, prompt length, and that VAE reused) is in its MODEL_CARD.md, and `recipe_of(folder)` (the CLI's
    `--recipe-of`) reads any trained teacher's config back."""

    out: Path = DEFAULT_TEACHER_DIR
    """Diffusers folder to write (replaced atomically)."""
    work_dir: Path | None = None
    """Where the trained VAE and the latent shards go (reused by a rerun); default: a temporary folder."""
    seed: int = 0
    """Seed of the initial weights, the batches and the noise."""
    world_seed: int = 1000
    """qvgen.data procedural world of the training clips."""
    eval_seed: int = 2000
    """qvgen.data procedural world of the held-out clips and captions (never trained on)."""
    frames: Annotated[int, Field(ge=5)] = 9
    height: Annotated[int, Field(ge=32)] = 64
    width: Annotated[int, Field(ge=32)] = 64
    max_objects: Annotated[int, Field(ge=1, le=2)] = 2
    """Objects per training clip: 1..max_objects, drawn uniformly."""
    background: Background = "textured"
    """The world's background: textured (qvgen.data's default world) or plain grey (the committed teacher's)."""
    layout: Layout = "random"
    """Where objects go ("random": anywhere, qvgen.data's default world; "lanes": a caption fixes its clip up
    to small offsets)."""
    radius_fraction: tuple[float, float] = (0.12, 0.17)
    """Object radius range as a fraction of min(H, W) (64×64: 8–11 px; (0.16, 0.2): 10–13 px)."""
    lane_shrink: float = 0.75
    """Radius factor of the objects of a two-object clip in the "lanes" layout (qvgen.data's `LANE_SHRINK`;
    `WorldStyle` checks its range)."""
    shapes: ShapeSet = "outline"
    """The world's shapes (qvgen.data's `SHAPE_SETS`): "outline" (circle, square, triangle) or "elongated"
    (circle, bar, column)."""

    vae_z_dim: Literal[4, 8, 16] = 16
    """Latent channels of the VAE (and the transformer's in/out channels). A spatial patch of p turns a
    latent into tokens of z_dim·p² values: 16 × 4² = 256 squeezes every token through the transformer's
    width of 128 (its loss stalls near 0.83–0.89) unless `num_heads` is 4; 8 × 4² = 128 does not (loss
    0.33), but the 8-channel VAE loses colours (benchmarks/RESULTS.md, "teacher probes")."""
    vae_from: Path | None = None
    """A teacher folder whose VAE is used as it is (its phases all done): the VAE, VAE fine-tuning and
    decoder phases are skipped, and the card names that VAE, its sha256 and the command that trained it.
    Its `z_dim` must equal `vae_z_dim`."""
    vae_image_steps: Annotated[int, Field(ge=0)] = 1500
    """VAE steps on single frames first (cheap: they teach the spatial path, colours and shapes)."""
    vae_image_batch_size: Annotated[int, Field(ge=1)] = 8
    vae_lr: Annotated[float, Field(gt=0)] = 4e-3
    """Peak one-cycle learning rate of the single-frame steps."""
    vae_steps: Annotated[int, Field(ge=0)] = 1000
    """VAE steps on whole clips next (they teach the causal temporal path)."""
    vae_batch_size: Annotated[int, Field(ge=1)] = 4
    vae_clip_lr: Annotated[float, Field(gt=0)] = 2e-3
    """Peak one-cycle learning rate of the clip steps."""
    vae_crop: Annotated[int, Field(ge=16)] = 32
    """Square crop the VAE trains on (three in four centred near an object)."""
    vae_clips: Annotated[int, Field(ge=1)] = 1024
    """Clips held in memory for VAE training."""
    vae_shape_weight: Annotated[float, Field(ge=0)] = 4.0
    """Extra loss weight of the pixels covered by an object."""
    vae_kl_weight: Annotated[float, Field(ge=0)] = 1e-3
    vae_finetune_steps: Annotated[int, Field(ge=0)] = 600
    """More whole-clip VAE steps after the first two stages, with a fresh optimizer and schedule (the
    temporal path is what the 4× VAE learns slowest)."""
    vae_finetune_lr: Annotated[float, Field(gt=0)] = 5e-4
    """Peak one-cycle learning rate of the fine-tuning clip steps."""
    vae_decoder_steps: Annotated[int, Field(ge=0)] = 1500
    """Whole-clip steps on the decoder alone at the end (the latents the transformer learns stay the same)."""
    vae_decoder_lr: Annotated[float, Field(gt=0)] = 5e-4
    vae_edge_weight: Annotated[float, Field(ge=0)] = 16.0
    """Extra loss weight of object-boundary pixels in the decoder steps (corners make squares squares)."""

    text_length: Annotated[int, Field(ge=8, le=512)] = 16
    """Prompt length in tokens (the tokenizer's model_max_length; the tiny factory's: 16). The offline
    tokenizer spells "purple" and "orange" letter by letter, so a two-object caption takes up to 21 tokens
    and 16 cuts the end off about a third of them (its last direction or shape); 32 holds every caption."""
    text_steps: Annotated[int, Field(ge=0)] = 0
    """Steps that teach the random UMT5 which clause says what before it is frozen (`text_training`;
    0: it stays as initialised, like the first teachers'). A random encoder barely tells "a red bar … and
    a blue circle …" from "a blue bar … and a red circle …", so two-object captions lose their binding."""
    text_lr: Annotated[float, Field(gt=0)] = 1e-3
    text_batch_size: Annotated[int, Field(ge=1)] = 64
    num_clips: Annotated[int, Field(ge=1)] = 4096
    """Training clips encoded into latent shards for the transformer."""
    patch_size: Literal[2, 4] = 4
    """Spatial patch of the transformer (on the 4× VAE's latents 4 gives the same 48 tokens per 9×64×64
    clip that the tiny factory's 8× VAE with patch 2 gives)."""
    num_heads: Literal[2, 4] = 2
    """Attention heads of 64 channels: the transformer's width is 64 × num_heads (the tiny Wan factory's:
    2, width 128). 4 (width 256) holds a whole 16-channel 4×4-patch token (256 values)."""
    num_layers: Annotated[int, Field(ge=1)] = 2
    """Transformer blocks (the tiny Wan factory's: 2)."""
    ffn_dim: Annotated[int, Field(ge=16)] = 256
    """Hidden width of each block's feed-forward layer (the tiny Wan factory's: 256, twice the model width)."""
    steps: Annotated[int, Field(ge=0)] = 8000
    """Transformer optimiser steps."""
    batch_size: Annotated[int, Field(ge=1)] = 32
    lr: Annotated[float, Field(gt=0)] = 1e-3
    warmup_steps: Annotated[int, Field(ge=0)] = 200
    caption_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1
    """Probability of training on the empty prompt (what classifier-free guidance subtracts)."""
    ema_decay: Annotated[float, Field(ge=0, lt=1)] = 0.999
    train_flow_shift: Annotated[float, Field(gt=0)] = 1.0
    """Shift of the training sigmas (1.0: uniform σ, the official Wan recipe)."""

    finetune_steps: Annotated[int, Field(ge=0)] = 4500
    """Second transformer stage: more steps from the stage-1 weights at `finetune_flow_shift`."""
    finetune_lr: Annotated[float, Field(gt=0)] = 5e-4
    finetune_flow_shift: Annotated[float, Field(gt=0)] = 3.0
    """σ shift of the second stage (3.0, the sampler's: more steps at high noise)."""

    minutes: Annotated[float, Field(gt=0)] | None = None
    """Wall-clock cap: the VAE may use 40% and the transformer 45% of it (steps stop early; not
    reproducible, for probes only)."""

    eval_one_object: Annotated[int, Field(ge=0)] = 48
    """Held-out one-object captions of the quality check."""
    eval_two_object: Annotated[int, Field(ge=0)] = 16
    """Held-out two-object captions of the quality check."""
    eval_sample_seeds: Annotated[int, Field(ge=1)] = 2
    """Teacher samples per caption (noise seeds)."""
    num_inference_steps: Annotated[int, Field(ge=1)] = 25
    guidance_scale: Annotated[float, Field(ge=1)] = 3.0
    """Classifier-free guidance of the headline samples."""
    guidance_sweep: tuple[Annotated[float, Field(ge=1)], ...] = (2.0, 3.0, 5.0)
    """Guidance scales at which the quality check also samples the same captions and seeds."""

    @property
    def world_style(self) -> WorldStyle:
        """The procedural world of the training and held-out clips."""
        return WorldStyle(self.background, self.radius_fraction, self.layout, self.lane_shrink, self.shapes)

    @model_validator(mode="after")
    def _wan_shapes(self) -> TeacherConfig:
        if (self.frames - 1) % 4:
            raise ValueError(f"frames must be 4k+1 for the Wan VAE (e.g. 9, 13, 17); got {self.frames}")
        unit = 4 * self.patch_size
        if self.height % unit or self.width % unit:
            raise ValueError(
                f"height and width must be multiples of {unit} (4× VAE × patch {self.patch_size}); "
                f"got {self.height}×{self.width}"
            )
        if self.vae_crop > min(self.height, self.width) or self.vae_crop % 16:
            raise ValueError(
                f"vae_crop must be a multiple of 16 no larger than height/width; got {self.vae_crop}"
            )
        self.world_style  # noqa: B018 -- WorldStyle checks its own ranges
        if self.eval_one_object + self.eval_two_object == 0:
            raise ValueError("eval_one_object + eval_two_object must be at least 1")
        return self


VAE_FIELDS = ("seed", "world_seed", "frames", "height", "width", "max_objects", "background",
              "radius_fraction", "layout", "lane_shrink", "shapes", "vae_z_dim", "vae_image_steps",
              "vae_image_batch_size", "vae_lr", "vae_steps", "vae_batch_size", "vae_clip_lr", "vae_crop",
              "vae_clips", "vae_shape_weight", "vae_kl_weight", "minutes")  # fmt: skip
"""Fields that define the VAE phase (its identity in `work_dir`)."""
VAE_FINETUNE_FIELDS = (*VAE_FIELDS, "vae_finetune_steps", "vae_finetune_lr")
"""Fields that define the fine-tuned VAE."""
SHARD_FIELDS = (
    *VAE_FINETUNE_FIELDS,
    "vae_from",
    "text_length",
    "text_steps",
    "text_lr",
    "text_batch_size",
    "num_clips",
)
"""Fields that define the latent shards."""
TRANSFORMER_FIELDS = (*SHARD_FIELDS, "patch_size", "num_heads", "num_layers", "ffn_dim", "steps", "batch_size", "lr", "warmup_steps",
                      "caption_dropout", "ema_decay", "train_flow_shift")  # fmt: skip
"""Fields that define the trained transformer (stage 1)."""
FINETUNE_FIELDS = (*TRANSFORMER_FIELDS, "finetune_steps", "finetune_lr", "finetune_flow_shift")
"""Fields that define the transformer after its second stage."""
DECODER_FIELDS = (*VAE_FINETUNE_FIELDS, "vae_decoder_steps", "vae_decoder_lr", "vae_edge_weight")
"""Fields that define the final VAE decoder."""
EVAL_FIELDS = frozenset(
    {"eval_seed", "eval_one_object", "eval_two_object", "eval_sample_seeds", "num_inference_steps",
     "guidance_scale", "guidance_sweep"}
)  # fmt: skip
"""Fields that only the quality check reads (what `reevaluate_teacher` may change)."""


LEGACY_VALUES: dict[str, object] = {
    "background": "textured", "radius_fraction": [0.12, 0.17], "layout": "random", "vae_z_dim": 16,
    "num_layers": 2, "ffn_dim": 256, "text_length": 16, "vae_from": None, "num_heads": 2, "lane_shrink": 0.75,
    "shapes": "outline", "text_steps": 0,
}  # fmt: skip
"""What a teacher trained before these fields existed used (its report's config lacks them)."""


UNHASHED_DEFAULTS: dict[str, object] = {
    "shapes": "outline",
    "text_steps": 0,
    "text_lr": 1e-3,
    "text_batch_size": 64,
}
"""Fields that `digest` leaves out while they hold these values (they postdate the first work dirs)."""


def report_config(config: dict[str, object]) -> dict[str, object]:
    """A training report's config with the fields it predates filled in with the values it was trained with."""
    return {**LEGACY_VALUES, **config}


def recipe_of(folder: str | Path) -> dict[str, object]:
    """The config that teacher `folder` was trained with (its report's, with the fields it predates filled
    in), less the machine-specific `out` and `work_dir`: what `qvgen train-teacher --recipe-of` retrains.
    A `vae_from` recorded inside qvgen.demo's assets (a path in a checkout) that does not exist from here is
    read as this installation's copy of the same asset."""
    path = Path(folder) / REPORT_NAME
    try:
        config = json.loads(path.read_text())["config"]
        if not isinstance(config, dict):
            raise TypeError(f"its config is a {type(config).__name__}, not a mapping")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a teacher training report with a config ({e})") from e
    recipe = {k: v for k, v in report_config(config).items() if k not in ("out", "work_dir")}
    if isinstance(recipe.get("vae_from"), str):
        recipe["vae_from"] = str(_installed_asset(Path(str(recipe["vae_from"]))))
    return recipe


def _installed_asset(path: Path) -> Path:
    assets = DEFAULT_TEACHER_DIR.parent  # …/qvgen/demo/assets
    parts = path.parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == ("qvgen", "demo", "assets") and not path.exists():
            return assets.joinpath(*parts[i + 3 :])
    return path


def digest(cfg: TeacherConfig, fields: tuple[str, ...]) -> str:
    """Short hash of some config fields: the identity of a phase's output in `work_dir`."""
    values = json.loads(cfg.model_dump_json(include=set(fields)))
    # Fields added after work dirs were first hashed count only away from their default, so the
    # identities of earlier runs (and the shards they left) stay the same.
    values = {k: v for k, v in values.items() if UNHASHED_DEFAULTS.get(k, object()) != v}
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]
