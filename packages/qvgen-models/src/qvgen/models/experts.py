"""Two-expert Wan 2.2 (A14B): `transformer` (high noise) and `transformer_2` (low noise) split at a boundary.

diffusers' `WanPipeline` (0.42.1) registers ``boundary_ratio`` in model_index.json and, at each sampling step
``t``, calls ``transformer`` when ``t >= boundary_ratio · scheduler.config.num_train_timesteps`` and
``transformer_2`` otherwise. qvgen follows exactly that rule: training an expert samples its timesteps inside
its own side of the boundary (`expert_timestep_mask`), and a quantized two-expert folder holds one ordinary
qvgen export per expert:

    <folder>/experts_manifest.json     ExpertsManifest: the experts, the boundary, what the subfolders hold
    <folder>/transformer/              a qvgen.quant deploy export (or a fake-quant student) of each expert
    <folder>/transformer_2/

`load_pipeline(base, deploy)` reads such a deploy folder (`qvgen.models.pipeline`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Final, Literal

import torch
from diffusers.models.transformers.transformer_wan import WanTransformer3DModel
from diffusers.pipelines.wan.pipeline_wan import WanPipeline
from pydantic import Field, ValidationError
from torch import Tensor

from qvgen.core import Frozen, atomic_dir, atomic_write_text
from qvgen.models import checkpoint as ckpt
from qvgen.models.wan import WanFamily

ExpertName = Literal["transformer", "transformer_2"]
"""A Wan 2.2 A14B expert: the pipeline component's name (high-noise, low-noise)."""
EXPERTS: Final[tuple[ExpertName, ExpertName]] = ("transformer", "transformer_2")
EXPERTS_MANIFEST: Final = "experts_manifest.json"
A14B_BOUNDARY_RATIO: Final = 0.875
"""Wan2.2-T2V-A14B's ``boundary_ratio`` (Wan-Video/Wan2.2 `wan/configs/wan_t2v_A14B.py`, ``boundary``)."""


class ExpertsManifest(Frozen):
    """The top-level record of a two-expert folder; each expert's subfolder carries its own manifest."""

    schema_version: Literal[1] = 1
    content: Literal["deploy", "fake_quant"]
    """What each expert subfolder holds: a `qvgen.quant.save_quantized` export or a `save_student` folder."""
    experts: tuple[ExpertName, ExpertName] = EXPERTS
    boundary_ratio: Annotated[float, Field(gt=0, lt=1)]
    """The base pipeline's ``boundary_ratio`` the experts were trained for."""
    num_train_timesteps: Annotated[int, Field(ge=1)] = 1000


def read_experts_manifest(folder: str | Path) -> ExpertsManifest | None:
    """The folder's `ExpertsManifest`, or None for a one-transformer folder; errors name the file."""
    path = Path(folder).expanduser() / EXPERTS_MANIFEST
    if not path.is_file():
        return None
    try:
        return ExpertsManifest.model_validate_json(path.read_text())
    except (OSError, ValidationError) as e:
        raise ValueError(f"{path}: not a valid two-expert manifest: {e}") from e


def boundary_ratio_of(base_dir: str | Path) -> float | None:
    """The ``boundary_ratio`` of a diffusers folder's model_index.json (None: one transformer)."""
    path = Path(base_dir).expanduser() / "model_index.json"
    if not path.is_file():
        return None
    value = json.loads(path.read_text()).get("boundary_ratio")
    return None if value is None else float(value)


def has_transformer_2(base_dir: str | Path) -> bool:
    """Whether a diffusers folder's model_index.json names a ``transformer_2`` component."""
    path = Path(base_dir).expanduser() / "model_index.json"
    if not path.is_file():
        return False
    entry = json.loads(path.read_text()).get("transformer_2")
    return isinstance(entry, list) and entry[0] is not None


def expert_timestep_mask(
    timesteps: Tensor, expert: ExpertName, boundary_ratio: float, num_train_timesteps: int
) -> Tensor:
    """Which `timesteps` `WanPipeline` gives to `expert`: ``transformer`` for t ≥ boundary_ratio·T,
    ``transformer_2`` below it."""
    high = timesteps >= boundary_ratio * num_train_timesteps
    return high if expert == "transformer" else ~high


def write_experts_folder(
    out_dir: str | Path, parts: Mapping[ExpertName, Path], manifest: ExpertsManifest
) -> Path:
    """Assemble a two-expert folder atomically: each part's files hard-linked (copied where links fail) into
    ``out_dir/<expert>/``, then `EXPERTS_MANIFEST`."""
    missing = [e for e in manifest.experts if e not in parts or not Path(parts[e]).is_dir()]
    if missing:
        raise FileNotFoundError(f"{out_dir}: no export for expert(s) {missing} (got {dict(parts)})")

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    def fill(tmp: Path) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        for expert in manifest.experts:
            shutil.copytree(parts[expert], tmp / expert, copy_function=link_or_copy)
        atomic_write_text(tmp / EXPERTS_MANIFEST, manifest.model_dump_json(indent=2) + "\n")

    return atomic_dir(Path(out_dir).expanduser(), fill)


# -- tiny two-expert Wan 2.2 (A14B-shaped) ------------------------------------------------------------


def build_tiny_two_expert(seed: int = 0, boundary_ratio: float = A14B_BOUNDARY_RATIO) -> WanPipeline:
    """The tiny Wan (`WanFamily.build_tiny_components(seed)`) plus a second expert of the same shape
    (initialised from ``seed + 1``), as a `WanPipeline` with ``transformer_2`` and ``boundary_ratio``."""
    comps = WanFamily().build_tiny_components(seed)
    torch.manual_seed(seed + 1)
    transformer_2 = WanTransformer3DModel.from_config(comps.transformer.config).eval()
    pipe = WanPipeline(
        **{**comps.as_dict(), "transformer_2": transformer_2, "boundary_ratio": boundary_ratio}
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_tiny_two_expert(
    out_dir: str | Path, seed: int = 0, boundary_ratio: float = A14B_BOUNDARY_RATIO
) -> Path:
    """`build_tiny_two_expert` saved as a diffusers folder (offline, seeded, atomic)."""
    return ckpt.save_pipeline_atomic(build_tiny_two_expert(seed, boundary_ratio), out_dir)
