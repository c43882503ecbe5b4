"""`load_pipeline(base_dir, deploy_dir)`: a stock diffusers pipeline around a real low-bit transformer.

The transformer comes from the deploy folder alone (`qvgen.quant.load_quantized(directory)`: class and
config from its manifest, parameters built on meta, packed tensors assigned), so the base checkpoint's
full-precision transformer is never read; everything else (VAE, text encoder, tokenizer, scheduler)
comes from the base diffusers folder.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import torch
from diffusers.models.transformers.cogvideox_transformer_3d import CogVideoXTransformer3DModel
from diffusers.models.transformers.transformer_wan import WanTransformer3DModel
from diffusers.pipelines.cogvideo.pipeline_cogvideox import CogVideoXPipeline
from diffusers.pipelines.wan.pipeline_wan import WanPipeline
from diffusers.utils import logging as diffusers_logging
from torch import nn
from transformers.utils import logging as transformers_logging

from qvgen import quant
from qvgen.models import checkpoint as ckpt
from qvgen.models.experts import (
    EXPERTS_MANIFEST,
    ExpertsManifest,
    boundary_ratio_of,
    has_transformer_2,
    read_experts_manifest,
)
from qvgen.models.lora import enable_lora_
from qvgen.models.spec import DType, to_torch_dtype

PIPELINES: Final[dict[str, tuple[type[nn.Module], type[Any]]]] = {
    "WanTransformer3DModel": (WanTransformer3DModel, WanPipeline),
    "CogVideoXTransformer3DModel": (CogVideoXTransformer3DModel, CogVideoXPipeline),
}
"""Deploy manifest's transformer class name → (transformer class, stock diffusers pipeline class)."""

BASE_COMPONENTS: Final = ("vae", "text_encoder", "tokenizer", "scheduler")
"""What `load_pipeline` reads from the base folder (not the transformer)."""


def progress_default(progress: bool | None) -> bool:
    """``progress`` itself, or when None: on only if stdout and stderr are both terminals."""
    if progress is not None:
        return progress
    return sys.stdout.isatty() and sys.stderr.isatty()


@contextmanager
def hf_progress_bars(enabled: bool) -> Iterator[None]:
    """diffusers' and transformers' loading bars on or off inside the block, restored afterwards."""
    before = (diffusers_logging.is_progress_bar_enabled(), transformers_logging.is_progress_bar_enabled())
    set_hf_progress_bars(enabled)
    try:
        yield
    finally:
        (diffusers_logging.enable_progress_bar if before[0] else diffusers_logging.disable_progress_bar)()
        (
            transformers_logging.enable_progress_bar
            if before[1]
            else transformers_logging.disable_progress_bar
        )()


def set_hf_progress_bars(enabled: bool) -> None:
    """Turn diffusers' and transformers' own progress bars (weight loading, pipeline loading) on or off."""
    for lib in (diffusers_logging, transformers_logging):
        (lib.enable_progress_bar if enabled else lib.disable_progress_bar)()


def load_pipeline(
    base_dir: str | Path,
    deploy_dir: str | Path,
    *,
    dtype: DType | torch.dtype = "float32",
    progress: bool | None = None,
) -> Any:
    """The stock `WanPipeline` / `CogVideoXPipeline` of ``base_dir`` with the low-bit transformer of ``deploy_dir``.

    No full-precision transformer weights are read: ``base_dir/transformer`` may be absent. ``dtype`` applies
    to the text encoder and the VAE (Wan's VAE stays float32, as in the official code); the transformer keeps
    the dtypes it was saved with. ``progress`` (None: only on a terminal) covers loading and sampling bars.
    ``pipe.load_lora_weights(...)`` works on it (`qvgen.models.enable_lora_`; needs the ``lora`` extra).
    A two-expert deploy folder (`qvgen.models.ExpertsManifest`: ``transformer/`` + ``transformer_2/``) gives
    the Wan 2.2 A14B pipeline with both low-bit experts and the base folder's ``boundary_ratio``; neither
    ``base_dir/transformer`` nor ``base_dir/transformer_2`` is read. A two-expert base folder with a
    one-transformer deploy folder is refused (its full-precision ``transformer_2`` would be loaded).
    """
    deploy = Path(deploy_dir)
    experts = read_experts_manifest(deploy)
    if experts is not None:
        return _load_two_expert_pipeline(base_dir, deploy, experts, dtype=dtype, progress=progress)
    if has_transformer_2(base_dir):
        raise ValueError(
            f"{base_dir} is a two-expert Wan 2.2 folder (transformer_2 in model_index.json), but {deploy} holds "
            f"one transformer: pass a two-expert deploy folder ({EXPERTS_MANIFEST} + transformer/ + "
            "transformer_2/, written by a qvgen-train run with expert=both)"
        )
    manifest = quant.read_manifest(deploy)
    name = manifest.source.class_name
    if name not in PIPELINES:
        raise ValueError(
            f"{deploy / 'quant_manifest.json'}: saved from a {name}; load_pipeline knows {sorted(PIPELINES)}"
        )
    transformer_cls, pipeline_cls = PIPELINES[name]
    root = ckpt.check_folder(base_dir, BASE_COMPONENTS)
    show = progress_default(progress)
    torch_dtype = to_torch_dtype(dtype)
    with hf_progress_bars(show):
        transformer = enable_lora_(quant.load_quantized(deploy, model_class=transformer_cls))
        try:
            pipe = pipeline_cls.from_pretrained(root, transformer=transformer, dtype=torch_dtype)
        except (OSError, ValueError) as e:
            raise OSError(f"cannot load the {pipeline_cls.__name__} components from {root}: {e}") from e
    if pipeline_cls is WanPipeline and pipe.vae.dtype != torch.float32:
        pipe.vae.to(torch.float32)
    pipe.set_progress_bar_config(disable=not show)
    return pipe


def _load_two_expert_pipeline(
    base_dir: str | Path,
    deploy: Path,
    experts: ExpertsManifest,
    *,
    dtype: DType | torch.dtype,
    progress: bool | None,
) -> WanPipeline:
    """`WanPipeline` of a two-expert base folder with both low-bit experts of ``deploy``; the base folder's
    ``boundary_ratio`` is kept and must equal the one the experts were trained for."""
    where = deploy / EXPERTS_MANIFEST
    if experts.content != "deploy":
        raise ValueError(f"{where}: holds {experts.content!r} experts; load_pipeline needs a deploy folder")
    root = ckpt.check_folder(base_dir, BASE_COMPONENTS)
    boundary = boundary_ratio_of(root)
    if boundary is None or not has_transformer_2(root):
        raise ValueError(
            f"{where}: two experts, but {root / 'model_index.json'} has no transformer_2/boundary_ratio; "
            "pass the two-expert Wan 2.2 base folder they were quantized from"
        )
    if abs(boundary - experts.boundary_ratio) > 1e-9:
        raise ValueError(
            f"{where}: boundary_ratio {experts.boundary_ratio} (trained for) != {boundary} in "
            f"{root / 'model_index.json'}: each expert would be sampled outside the timesteps it was trained on"
        )
    show = progress_default(progress)
    with hf_progress_bars(show):
        loaded = {
            name: enable_lora_(quant.load_quantized(deploy / name, model_class=WanTransformer3DModel))
            for name in experts.experts
        }
        try:
            pipe = WanPipeline.from_pretrained(root, **loaded, dtype=to_torch_dtype(dtype))
        except (OSError, ValueError) as e:
            raise OSError(f"cannot load the WanPipeline components from {root}: {e}") from e
    if pipe.vae.dtype != torch.float32:
        pipe.vae.to(torch.float32)
    pipe.set_progress_bar_config(disable=not show)
    return pipe
