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
    """
    deploy = Path(deploy_dir)
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
