"""The QVGen distillation recipe (QAT with Phi and rank decay) on accelerate.

Importing this package is light: `run` (accelerate, the model families) and the reference importer
(`import_reference`, `ReferenceImportError`, `infer_weight_bits`) are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qvgen.train.config import (
    CheckpointConfig,
    ConfigError,
    ExportConfig,
    LearningRates,
    LoggingConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    ValidationConfig,
    apply_overrides,
    load_config,
)
from qvgen.train.loss import distill_loss
from qvgen.train.optim import build_optimizer, build_scheduler, lr_multiplier, param_groups
from qvgen.train.precompute import PrecomputeConfig, load_precompute_config, precompute

if TYPE_CHECKING:
    from qvgen.train.recipe import RunResult, run
    from qvgen.train.reference import ReferenceImportError, import_reference, infer_weight_bits

__all__ = [
    "CheckpointConfig",
    "ConfigError",
    "ExportConfig",
    "LearningRates",
    "LoggingConfig",
    "OptimConfig",
    "PrecomputeConfig",
    "ReferenceImportError",
    "RunConfig",
    "RunResult",
    "TrainConfig",
    "ValidationConfig",
    "apply_overrides",
    "build_optimizer",
    "build_scheduler",
    "distill_loss",
    "import_reference",
    "infer_weight_bits",
    "load_config",
    "load_precompute_config",
    "lr_multiplier",
    "param_groups",
    "precompute",
    "run",
]


def __getattr__(name: str) -> Any:
    if name in ("run", "RunResult"):
        from qvgen.train import recipe

        return getattr(recipe, name)
    if name in ("import_reference", "ReferenceImportError", "infer_weight_bits"):
        from qvgen.train import reference

        return getattr(reference, name)
    raise AttributeError(f"module 'qvgen.train' has no attribute {name!r}")
