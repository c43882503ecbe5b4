"""Tiny checkpoints for any package's tests: built offline once per process, saved as diffusers folders."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from qvgen.models.cogvideox import CogTinyVariant, CogVideoXFamily
from qvgen.models.experts import A14B_BOUNDARY_RATIO, save_tiny_two_expert
from qvgen.models.registry import get_family
from qvgen.models.spec import ModelSpec
from qvgen.models.wan import WanFamily, WanTinyVariant

_SPEC_ADAPTER: TypeAdapter[ModelSpec] = TypeAdapter(ModelSpec)


@functools.cache
def _cache_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="qvgen-tiny-models-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


@functools.cache
def tiny_checkpoint(family: str, seed: int = 0) -> Path:
    """The tiny `family` checkpoint as a diffusers folder, built on first use and cached for the process."""
    return get_family(family).save_tiny(_cache_root() / f"{family}-seed{seed}", seed=seed)


@functools.cache
def tiny_cogvideox_checkpoint(variant: CogTinyVariant, seed: int = 0) -> Path:
    """A tiny CogVideoX shaped like 2B, 5B (RoPE) or 1.5 (RoPE + temporal patches), cached like the others."""
    out = _cache_root() / f"cogvideox-{variant}-seed{seed}"
    return CogVideoXFamily().save_tiny(out, seed=seed, variant=variant)


@functools.cache
def tiny_wan_checkpoint(variant: WanTinyVariant, seed: int = 0) -> Path:
    """A tiny Wan shaped like 2.1 T2V ("t2v") or 2.2 TI2V-5B ("ti2v": 48-channel residual VAE,
    ``expand_timesteps``), cached like the others."""
    return WanFamily().save_tiny(_cache_root() / f"wan-{variant}-seed{seed}", seed=seed, variant=variant)


@functools.cache
def tiny_two_expert_checkpoint(seed: int = 0, boundary_ratio: float = A14B_BOUNDARY_RATIO) -> Path:
    """A tiny Wan 2.2 A14B-shaped folder: two experts (`transformer`, `transformer_2`) and ``boundary_ratio``
    (`qvgen.models.save_tiny_two_expert`), cached like the others."""
    out = _cache_root() / f"wan-two-expert-seed{seed}-b{boundary_ratio}"
    return save_tiny_two_expert(out, seed=seed, boundary_ratio=boundary_ratio)


def tiny_spec(family: str, **overrides: Any) -> ModelSpec:
    """A float32 `ModelSpec` pointing at `tiny_checkpoint(family)`; `overrides` set other spec fields."""
    data = {"family": family, "checkpoint": tiny_checkpoint(family), "dtype": "float32", **overrides}
    return _SPEC_ADAPTER.validate_python(data)
