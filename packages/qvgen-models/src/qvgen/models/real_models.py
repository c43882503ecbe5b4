"""The paper's real models as data: transformer configs (built on the meta device) and sampling settings.

Transformer configs are the diffusers `transformer/config.json` values of the released checkpoints
(`scripts/convert_wan_to_diffusers.py` "Wan-T2V-1.3B" / "Wan-T2V-14B"; THUDM CogVideoX-2b / -5b /
CogVideoX1.5-5B). Sampling settings follow the reference's inference scripts (ModelTC/QVGen
`inference/ddp_wan_t2v.py`, `inference/ddp_cogvideox_t2v.py`): resolution map, frames, fps, scheduler.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Any, Final, Literal

from pydantic import Field
from torch import nn

from qvgen.core import Frozen
from qvgen.models.cogvideox import COG_REAL_TRANSFORMER
from qvgen.models.registry import get_family
from qvgen.models.spec import FamilyName
from qvgen.models.wan import WAN_REAL_TRANSFORMER


class SamplingSettings(Frozen):
    """How the paper samples a model (one prompt → one clip)."""

    height: Annotated[int, Field(ge=16)]
    width: Annotated[int, Field(ge=16)]
    num_frames: Annotated[int, Field(ge=1)]
    fps: Annotated[int, Field(ge=1)]
    num_inference_steps: Annotated[int, Field(ge=1)] = 50
    guidance_scale: Annotated[float, Field(ge=1)]
    scheduler: Literal["UniPCMultistepScheduler", "CogVideoXDDIMScheduler", "CogVideoXDPMScheduler"]
    scheduler_overrides: dict[str, Any] = Field(default_factory=dict)
    """Keyword overrides applied to the checkpoint's scheduler config (`from_config(..., **overrides)`)."""
    use_dynamic_cfg: bool = False
    """CogVideoX's dynamic guidance (the reference passes True)."""
    guidance_scale_2: Annotated[float, Field(ge=1)] | None = None
    """Two-expert Wan 2.2 (A14B): the low-noise expert's guidance (`WanPipeline`'s `guidance_scale_2`);
    `guidance_scale` is then the high-noise expert's."""
    boundary_ratio: Annotated[float, Field(gt=0, lt=1)] | None = None
    """Two-expert Wan 2.2 (A14B): the pipeline's `boundary_ratio`; steps with t >= ratio * T run
    `transformer` (the high-noise expert), the later ones `transformer_2` (the low-noise expert)."""
    expand_timesteps: bool = False
    """Wan 2.2 TI2V: the pipeline passes one timestep per latent token (`[B, S]`)."""


class RealModel(Frozen):
    """One released model: its family, hub id, transformer config and sampling settings."""

    name: str
    family: FamilyName
    hub_id: str
    transformer: dict[str, Any]
    sampling: SamplingSettings
    trainable: bool
    """Whether its family can load, train and sample it (the five text-to-video models can; Wan I2V's entry
    is for roles, memory plans and PTQ of its transformer only: its family refuses the folder on load).
    Wan 2.2 TI2V-5B trains (per-token timesteps, text- or image-to-video mode) and T2V-A14B trains both
    experts in one run (`RunConfig.expert: both`); I2V-A14B is for roles and memory plans only (its family
    refuses image-to-video folders on load)."""
    experts: Annotated[int, Field(ge=1, le=2)] = 1
    """Transformers of this config in the checkpoint: 2 for Wan 2.2 A14B (`transformer` = high-noise expert,
    `transformer_2` = low-noise expert, same architecture); `transformer` is one expert's config."""


# Checked 2026-11-27 against copies of the released transformer configs (the hub files themselves were not
# reachable here); test_real_models.py pins every field below on the built model's config.
# - Wan2.1-T2V-14B: 40 heads × 128 = dim 5120, ffn 13824, 40 layers, text 4096, freq 256, eps 1e-6 (Wan's own
#   t2v-14B config as copied in public loaders; diffusers `convert_wan_to_diffusers.py` "Wan-T2V-14B").
# - CogVideoX-5b: 48 heads, 42 layers, RoPE, patch_bias true, no patch_size_t, 49/60/90, max_text_seq_length
#   226 (THUDM/CogVideoX-5b transformer/config.json, copied in thu-ml/CogVideoX-RIFLEx-diffusers).
# - CogVideoX1.5-5B: as 5b plus patch_size_t 2, patch_bias false, sample 81/300/300, max_text_seq_length 226.
#   300×300 is the RoPE table that 1.5 slices (diffusers maintainer, huggingface/finetrainers#121). 226: every
#   public copy of the 1.5 T2V/I2V config found has it, svg-project/Sparse-VideoGen#2 reads it off the hub
#   config ("for CogVideoX1.5, 226 is the max length for text input"), and diffusers' CogVideoXPipeline pads to
#   226. The diffusers PR adding 1.5 (huggingface/diffusers#9877) asked "226 or 224?"; 226 is what shipped.
_WAN_14B = {**WAN_REAL_TRANSFORMER, "num_attention_heads": 40, "ffn_dim": 13824, "num_layers": 40}
_COG_5B = {
    **COG_REAL_TRANSFORMER,
    "num_attention_heads": 48,
    "num_layers": 42,
    "use_rotary_positional_embeddings": True,
}
_COG15_5B = {
    **_COG_5B,
    "patch_size_t": 2,
    "patch_bias": False,
    "sample_frames": 81,
    "sample_height": 300,
    "sample_width": 300,
}
# - Wan2.1-I2V-14B-480P: the 14B transformer plus image conditioning: in_channels 36 (16 noise + 4 mask + 16
#   image latents), image_dim 1280 (CLIP ViT-H/14 features), added_kv_proj_dim 5120 (diffusers
#   `convert_wan_to_diffusers.py` "Wan-I2V-14B-480p"; Wan's own i2v-14B config has the 14B's dim/ffn/heads/layers).
_WAN_I2V_14B = {**_WAN_14B, "in_channels": 36, "image_dim": 1280, "added_kv_proj_dim": 5120}
# Wan 2.2 (diffusers `convert_wan_to_diffusers.py` "Wan2.2-TI2V-5B" / "Wan2.2-T2V-A14B" / "Wan2.2-I2V-14B-720p",
# matching Wan-Video/Wan2.2 `wan/configs/`): TI2V-5B is dim 3072 (24 heads x 128), ffn 14336, 30 layers, 48
# latent channels (the 16x16-compressing Wan 2.2 VAE); each A14B expert has the 2.1 14B architecture, I2V with
# in_channels 36 (noise + mask + image latents) and no CLIP image tokens (no image_dim / added_kv_proj_dim).
# Sampling from Wan's configs: TI2V-5B 704x1280, 121 frames, 24 fps, 50 steps, guidance 5, shift 5;
# T2V-A14B 720x1280, 81 frames, 16 fps, 40 steps, guidance 4 (high noise) / 3 (low noise), shift 12,
# boundary 0.875; I2V-A14B the same size, guidance 3.5 / 3.5, shift 5, boundary 0.9 (diffusers' conversion
# writes boundary_ratio 0.875 / 0.9 and expand_timesteps into model_index.json).
_WAN22_TI2V_5B = {
    **WAN_REAL_TRANSFORMER,
    "num_attention_heads": 24,
    "ffn_dim": 14336,
    "in_channels": 48,
    "out_channels": 48,
}
_WAN22_A14B = dict(_WAN_14B)
_WAN22_I2V_A14B = {**_WAN_14B, "in_channels": 36}
_WAN_SAMPLING = {"num_frames": 81, "fps": 16, "guidance_scale": 5.0, "scheduler": "UniPCMultistepScheduler"}
_UNIPC = {"prediction_type": "flow_prediction", "use_flow_sigmas": True}
_COG_SAMPLING = {
    "guidance_scale": 6.0,
    "use_dynamic_cfg": True,
    "scheduler_overrides": {"timestep_spacing": "trailing"},
}

REAL_MODELS: Final[Mapping[str, RealModel]] = MappingProxyType(
    {
        m.name: m
        for m in (
            RealModel(
                name="wan2.1-t2v-1.3b", family="wan", hub_id="Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
                transformer=dict(WAN_REAL_TRANSFORMER), trainable=True,
                sampling=SamplingSettings(height=480, width=832, **_WAN_SAMPLING,
                                          scheduler_overrides={**_UNIPC, "flow_shift": 3.0}),
            ),
            RealModel(
                name="wan2.1-t2v-14b", family="wan", hub_id="Wan-AI/Wan2.1-T2V-14B-Diffusers",
                transformer=_WAN_14B, trainable=True,
                sampling=SamplingSettings(height=720, width=1280, **_WAN_SAMPLING,
                                          scheduler_overrides={**_UNIPC, "flow_shift": 5.0}),
            ),
            RealModel(
                name="wan2.1-i2v-14b-480p", family="wan", hub_id="Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",
                transformer=_WAN_I2V_14B, trainable=False,
                sampling=SamplingSettings(height=480, width=832, **_WAN_SAMPLING,
                                          scheduler_overrides={**_UNIPC, "flow_shift": 3.0}),
            ),
            RealModel(
                name="wan2.2-ti2v-5b", family="wan", hub_id="Wan-AI/Wan2.2-TI2V-5B-Diffusers",
                transformer=_WAN22_TI2V_5B, trainable=True,
                sampling=SamplingSettings(height=704, width=1280, num_frames=121, fps=24, guidance_scale=5.0,
                                          scheduler="UniPCMultistepScheduler", expand_timesteps=True,
                                          scheduler_overrides={**_UNIPC, "flow_shift": 5.0}),
            ),
            RealModel(
                name="wan2.2-t2v-a14b", family="wan", hub_id="Wan-AI/Wan2.2-T2V-A14B-Diffusers",
                transformer=_WAN22_A14B, trainable=True, experts=2,
                sampling=SamplingSettings(height=720, width=1280, num_frames=81, fps=16, num_inference_steps=40,
                                          guidance_scale=4.0, guidance_scale_2=3.0, boundary_ratio=0.875,
                                          scheduler="UniPCMultistepScheduler",
                                          scheduler_overrides={**_UNIPC, "flow_shift": 12.0}),
            ),
            RealModel(
                name="wan2.2-i2v-a14b", family="wan", hub_id="Wan-AI/Wan2.2-I2V-A14B-Diffusers",
                transformer=_WAN22_I2V_A14B, trainable=False, experts=2,
                sampling=SamplingSettings(height=720, width=1280, num_frames=81, fps=16, num_inference_steps=40,
                                          guidance_scale=3.5, guidance_scale_2=3.5, boundary_ratio=0.9,
                                          scheduler="UniPCMultistepScheduler",
                                          scheduler_overrides={**_UNIPC, "flow_shift": 5.0}),
            ),
            RealModel(
                name="cogvideox-2b", family="cogvideox", hub_id="THUDM/CogVideoX-2b",
                transformer=dict(COG_REAL_TRANSFORMER), trainable=True,
                sampling=SamplingSettings(height=480, width=720, num_frames=49, fps=8,
                                          scheduler="CogVideoXDDIMScheduler", **_COG_SAMPLING),
            ),
            RealModel(
                name="cogvideox-5b", family="cogvideox", hub_id="THUDM/CogVideoX-5b",
                transformer=_COG_5B, trainable=True,
                sampling=SamplingSettings(height=480, width=720, num_frames=49, fps=8,
                                          scheduler="CogVideoXDDIMScheduler", **_COG_SAMPLING),
            ),
            RealModel(
                name="cogvideox1.5-5b", family="cogvideox", hub_id="THUDM/CogVideoX1.5-5B",
                transformer=_COG15_5B, trainable=True,
                sampling=SamplingSettings(height=768, width=1360, num_frames=81, fps=16,
                                          scheduler="CogVideoXDPMScheduler", **_COG_SAMPLING),
            ),
        )
    }
)  # fmt: skip
"""The paper's models by name (wan2.1-t2v-1.3b, wan2.1-t2v-14b, cogvideox-2b, cogvideox-5b, cogvideox1.5-5b),
and wan2.2-ti2v-5b (trainable), wan2.1-i2v-14b-480p, wan2.2-t2v-a14b, wan2.2-i2v-a14b (roles and memory
plans; not trainable here yet)."""


def get_real_model(name: str) -> RealModel:
    """The entry for `name`; a KeyError lists the known names."""
    try:
        return REAL_MODELS[name]
    except KeyError:
        raise KeyError(f"unknown real model {name!r}; known: {', '.join(REAL_MODELS)}") from None


def build_real_on_meta(name: str) -> nn.Module:
    """The real transformer of `name` on the meta device (no memory, no weights)."""
    model = get_real_model(name)
    family: Any = get_family(model.family)
    built: nn.Module = family.build_transformer_on_meta(model.transformer)
    return built
