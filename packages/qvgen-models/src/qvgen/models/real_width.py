"""The paper's models at their released width with only the depth reduced: random weights, built offline.

`build_real_width("wan2.1-t2v-1.3b", num_layers=2)` gives the five pipeline components of Wan2.1-T2V-1.3B
with every transformer dimension of the released config (`REAL_MODELS[name].transformer`: hidden size,
heads, head dim, FFN, text dim, patch sizes, channels, norms, RoPE / positional settings) except
`num_layers`; the VAE at the released config (`AutoencoderKLWan()` / `AutoencoderKLCogVideoX()` with their
default arguments, which are the released Wan 2.1 and CogVideoX-2B VAE configs); the text encoder of the
released class at the released output width (UMT5-XXL / T5-v1.1-XXL encoder: d_model 4096, 64 heads × 64,
FFN 10240, gated-GELU) with `text_layers` blocks and the in-process tokenizer's small vocabulary (the
vocabulary is not a width anything downstream sees); the released scheduler. `save_real_width` writes them
as a diffusers folder, so users and benchmarks reach them through the ordinary `from_pretrained` of a
folder (`FAMILIES[family].load(path)`, `qvgen-train precompute`, `load_pipeline`).

Deterministic from `seed` (each module is built right after `torch.manual_seed(seed)`). This is for catching
shape, dtype, group-size and memory problems at the real width on a CPU in minutes; it says nothing about
quality.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import torch
from diffusers.models.autoencoders.autoencoder_kl_cogvideox import AutoencoderKLCogVideoX
from diffusers.models.autoencoders.autoencoder_kl_wan import AutoencoderKLWan
from diffusers.models.transformers.cogvideox_transformer_3d import CogVideoXTransformer3DModel
from diffusers.models.transformers.transformer_wan import WanTransformer3DModel
from diffusers.schedulers.scheduling_ddim_cogvideox import CogVideoXDDIMScheduler
from diffusers.schedulers.scheduling_unipc_multistep import UniPCMultistepScheduler
from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

from qvgen.models import checkpoint as ckpt
from qvgen.models.cogvideox import COG_SCHEDULER_CONFIG, CogVideoXFamily
from qvgen.models.family import Components
from qvgen.models.real_models import get_real_model
from qvgen.models.tokenizer import make_t5_tokenizer
from qvgen.models.wan import WAN_MAX_TEXT_LENGTH, WAN_NUM_TRAIN_TIMESTEPS, WanFamily

REAL_WIDTH_MODELS: Final = ("wan2.1-t2v-1.3b", "cogvideox-2b")
"""The models `build_real_width` knows: the two whose VAE is the diffusers class default (CogVideoX-5B's VAE
differs in its scaling factor, and the 14B transformers do not fit a CPU box at any useful depth)."""

_XXL_ENCODER: Final[Mapping[str, Any]] = MappingProxyType(
    {
        "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_heads": 64,
        "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
        "feed_forward_proj": "gated-gelu", "dropout_rate": 0.0, "layer_norm_epsilon": 1e-6,
        "tie_word_embeddings": False, "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0,
    }
)  # fmt: skip
"""google/umt5-xxl and google/t5-v1_1-xxl encoder widths (they share them; 24 layers in the release)."""
REAL_TEXT_ENCODERS: Final[Mapping[str, Mapping[str, Any]]] = MappingProxyType(
    {"wan": {**_XXL_ENCODER, "is_encoder_decoder": True}, "cogvideox": dict(_XXL_ENCODER)}
)
"""Text encoder config per family at the released width (`num_layers` set by `build_real_width`)."""
REAL_TEXT_LENGTH: Final[Mapping[str, int]] = MappingProxyType({"wan": WAN_MAX_TEXT_LENGTH, "cogvideox": 226})
"""Tokenizer length per family as released: Wan pads to 512, CogVideoX-2B to `max_text_seq_length` 226."""


def build_real_width(
    name: str,
    *,
    num_layers: int = 2,
    text_layers: int = 1,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> Components:
    """The components of REAL_MODELS[`name`] at the released width with `num_layers` transformer blocks and
    `text_layers` text-encoder blocks, random weights from `seed` (see the module docstring).
    `device="meta"` builds the three models without memory or weights (shapes, configs, memory plans)."""
    if name not in REAL_WIDTH_MODELS:
        raise ValueError(f"build_real_width knows {', '.join(REAL_WIDTH_MODELS)}; got {name!r}")
    if num_layers < 1 or text_layers < 1:
        raise ValueError(f"num_layers and text_layers must be ≥ 1; got {num_layers}, {text_layers}")
    real = get_real_model(name)
    transformer_config = {**real.transformer, "num_layers": num_layers}
    tokenizer = make_t5_tokenizer(model_max_length=REAL_TEXT_LENGTH[real.family], seed=seed)
    text = {**REAL_TEXT_ENCODERS[real.family], "num_layers": text_layers, "vocab_size": len(tokenizer)}
    wan = real.family == "wan"
    text_cls: Any = (UMT5EncoderModel, UMT5Config) if wan else (T5EncoderModel, T5Config)
    transformer_cls: Any = WanTransformer3DModel if wan else CogVideoXTransformer3DModel
    vae_cls: Any = AutoencoderKLWan if wan else AutoencoderKLCogVideoX
    with torch.device(device):
        torch.manual_seed(seed)
        text_encoder = text_cls[0](text_cls[1](**text)).eval()
        torch.manual_seed(seed)
        transformer = transformer_cls(**transformer_config).eval()
        torch.manual_seed(seed)
        vae = vae_cls().eval()  # the class defaults are the released VAE configs
    scheduler: Any = (
        UniPCMultistepScheduler(
            num_train_timesteps=WAN_NUM_TRAIN_TIMESTEPS, **real.sampling.scheduler_overrides
        )
        if wan
        else CogVideoXDDIMScheduler(**COG_SCHEDULER_CONFIG)
    )
    return Components(transformer, vae, text_encoder, tokenizer, scheduler)


def save_real_width(
    name: str, out_dir: str | Path, *, num_layers: int = 2, text_layers: int = 1, seed: int = 0
) -> Path:
    """`build_real_width(...)` written as a diffusers folder at `out_dir` (atomic); returns the folder."""
    components = build_real_width(name, num_layers=num_layers, text_layers=text_layers, seed=seed)
    family = WanFamily() if get_real_model(name).family == "wan" else CogVideoXFamily()
    return ckpt.save_pipeline_atomic(family.pipeline(components), out_dir)
