"""`ModelSpec`: which model family to load, from which local folder, in which dtype (pydantic boundary)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import torch
from pydantic import Field

from qvgen.core import Frozen

FamilyName = Literal["wan", "cogvideox"]
"""The registered model families (`qvgen.models.FAMILIES` keys); a new family adds one member here."""

DType = Literal["float32", "bfloat16", "float16"]
"""Names of the dtypes a model may be loaded in."""

TORCH_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def to_torch_dtype(dtype: DType | torch.dtype) -> torch.dtype:
    """``"bfloat16"`` -> ``torch.bfloat16``; a `torch.dtype` passes through."""
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return TORCH_DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(TORCH_DTYPES)}") from None


class WanSpec(Frozen):
    """Wan 2.1 text-to-video (WanTransformer3DModel + AutoencoderKLWan + UMT5)."""

    family: Literal["wan"] = "wan"
    checkpoint: Path | None = None
    """Local diffusers folder (model_index.json, transformer/, vae/, text_encoder/, tokenizer/, scheduler/)."""
    dtype: DType = "bfloat16"
    """Dtype of the transformer and text encoder; the Wan VAE always runs in float32."""
    max_text_length: Annotated[int, Field(ge=1)] | None = None
    """Prompt length in tokens; None means 512, capped by the tokenizer's own model_max_length."""
    train_flow_shift: Annotated[float, Field(gt=0)] = 1.0
    """Shift of the flow-matching sigmas drawn for training (the official recipe uses 1.0)."""
    sample_flow_shift: Annotated[float, Field(gt=0)] = 3.0
    """Flow shift of the sampling scheduler (3.0 for 480p, 5.0 for 720p)."""
    image_to_video: bool = False
    """Wan 2.2 TI2V folders only (``expand_timesteps`` in model_index.json): train in the image-to-video mode
    of `WanImageToVideoPipeline`, the first latent frame's tokens clean at t = 0; False trains text-to-video
    (every token at the sample's t). A folder without ``expand_timesteps`` refuses True."""


class CogVideoXSpec(Frozen):
    """CogVideoX 1.0 (CogVideoXTransformer3DModel + AutoencoderKLCogVideoX + T5 v1.1)."""

    family: Literal["cogvideox"] = "cogvideox"
    checkpoint: Path | None = None
    """Local diffusers folder (model_index.json, transformer/, vae/, text_encoder/, tokenizer/, scheduler/)."""
    dtype: DType = "bfloat16"
    """Dtype of the transformer, VAE and text encoder."""
    max_text_length: Annotated[int, Field(ge=1)] | None = None
    """Prompt length in tokens; None means the transformer's max_text_seq_length (226 for CogVideoX-2B).
    Any other value must equal it: the text tokens share the transformer's positional table."""


ModelSpec = Annotated[WanSpec | CogVideoXSpec, Field(discriminator="family")]
"""A model to load, tagged by `family`."""
