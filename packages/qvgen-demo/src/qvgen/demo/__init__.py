"""The `qvgen` command: QVGen end to end on the embedded tiny default, and the teacher factory.

The teacher's public API (what benchmarks and the demo flow use): its folder and config, the world it was
trained on, its components, sampling and quality check.
"""

from qvgen.demo.evaluation import evaluate_teacher, heldout_captions, sample_teacher
from qvgen.demo.teacher import reevaluate_teacher, train_teacher
from qvgen.demo.teacher_config import CARD_NAME, DEFAULT_TEACHER_DIR, REPORT_NAME, TeacherConfig
from qvgen.demo.vae_training import TEACHER_VAE, build_teacher_components
from qvgen.demo.world import (
    ClipShape,
    balanced_captions,
    heldout_clips,
    unit_frames,
    world_clip,
    write_world_shards,
)

__all__ = [
    "CARD_NAME",
    "DEFAULT_TEACHER_DIR",
    "REPORT_NAME",
    "TEACHER_VAE",
    "ClipShape",
    "TeacherConfig",
    "balanced_captions",
    "build_teacher_components",
    "evaluate_teacher",
    "heldout_captions",
    "heldout_clips",
    "reevaluate_teacher",
    "sample_teacher",
    "train_teacher",
    "unit_frames",
    "world_clip",
    "write_world_shards",
]

# The demo flow and its table (flow.py, table.py): what benchmarks/paper_table.py builds on.
from qvgen.demo.flow import (
    DATA_WORLD_SEED,
    PROMPT_WORLD_SEED,
    DemoConfig,
    DemoResult,
    Method,
    TrainBudget,
    TrainedVariant,
    build_shards,
    decay_period,
    decay_steps,
    held_out_clips,
    held_out_prompts,
    run_config,
    run_demo,
    teacher_clip_shape,
    teacher_fingerprint,
    teacher_sampling,
    teacher_world_style,
    train_variant,
)
from qvgen.demo.lora_training import (
    LORA_WEIGHTS_NAME,
    LORA_WORLD_SEED,
    LoraTrainConfig,
    lora_clips,
    recolour,
    train_colour_lora,
)
from qvgen.demo.table import Evaluation, Row, evaluate, format_table

__all__ += [
    "DATA_WORLD_SEED",
    "LORA_WEIGHTS_NAME",
    "LORA_WORLD_SEED",
    "PROMPT_WORLD_SEED",
    "DemoConfig",
    "DemoResult",
    "Evaluation",
    "LoraTrainConfig",
    "Method",
    "Row",
    "TrainBudget",
    "TrainedVariant",
    "build_shards",
    "decay_period",
    "decay_steps",
    "evaluate",
    "format_table",
    "held_out_clips",
    "held_out_prompts",
    "lora_clips",
    "recolour",
    "run_config",
    "run_demo",
    "teacher_clip_shape",
    "teacher_fingerprint",
    "teacher_sampling",
    "teacher_world_style",
    "train_colour_lora",
    "train_variant",
]
