"""Wan 2.1 text-to-video: flow matching in (B, C, F, H, W), UMT5 text, per-channel latent statistics."""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal

import torch
from diffusers.models.autoencoders.autoencoder_kl_wan import AutoencoderKLWan
from diffusers.models.transformers.transformer_wan import WanTransformer3DModel
from diffusers.pipelines.wan.pipeline_wan import WanPipeline, prompt_clean
from diffusers.schedulers.scheduling_flow_match_euler_discrete import FlowMatchEulerDiscreteScheduler
from diffusers.schedulers.scheduling_unipc_multistep import UniPCMultistepScheduler
from torch import Tensor, nn
from transformers import UMT5Config, UMT5EncoderModel

from qvgen.models import checkpoint as ckpt
from qvgen.models.encoder import PipelineEncoder, encoder_identity
from qvgen.models.family import Components, NoisedInputs, check_noising_batch
from qvgen.models.spec import DType, ModelSpec, WanSpec, to_torch_dtype
from qvgen.models.tokenizer import make_t5_tokenizer
from qvgen.quant import LayerRole

WAN_LAYER_ROLES: Final[Mapping[str, LayerRole]] = MappingProxyType(
    {
        "condition_embedder.time_embedder.linear_*": LayerRole.time_embed,
        "condition_embedder.time_proj": LayerRole.modulation,
        "condition_embedder.text_embedder.linear_*": LayerRole.text_proj,
        "blocks.*.attn1.to_q": LayerRole.attn_q,
        "blocks.*.attn1.to_k": LayerRole.attn_k,
        "blocks.*.attn1.to_v": LayerRole.attn_v,
        "blocks.*.attn1.to_qkv": LayerRole.attn_qkv,
        "blocks.*.attn1.to_out.0": LayerRole.attn_out,
        "blocks.*.attn2.to_q": LayerRole.cross_q,
        "blocks.*.attn2.to_k": LayerRole.cross_k,
        "blocks.*.attn2.to_v": LayerRole.cross_v,
        "blocks.*.attn2.to_kv": LayerRole.cross_kv,
        "blocks.*.attn2.to_out.0": LayerRole.cross_out,
        "blocks.*.attn2.add_k_proj": LayerRole.image_k,
        "blocks.*.attn2.add_v_proj": LayerRole.image_v,
        "blocks.*.attn2.to_added_kv": LayerRole.image_kv,
        "condition_embedder.image_embedder.ff.net.*": LayerRole.image_proj,
        "blocks.*.ffn.net.0.proj": LayerRole.ffn_up,
        "blocks.*.ffn.net.2": LayerRole.ffn_down,
        "proj_out": LayerRole.proj_out,
    }
)


def check_text_to_video(config: Mapping[str, Any], where: object) -> None:
    """Text-to-video Wan only: an image-to-video transformer needs image tokens and concatenated image
    latents that qvgen's text-to-video recipe and `WanPipeline` do not provide."""
    ckpt.refuse_image_to_video(
        config, where, family="Wan", supported="text-to-video Wan (1.3B, 14B)",
        markers={"image_dim": "Wan image-to-video (image-encoder tokens)",
                 "added_kv_proj_dim": "Wan image-to-video (image key/value projections)"},
    )  # fmt: skip


# Wan2.1-T2V-1.3B (diffusers `scripts/convert_wan_to_diffusers.py`, "Wan-T2V-1.3B").
WAN_REAL_TRANSFORMER: Final[Mapping[str, Any]] = MappingProxyType(
    {
        "patch_size": (1, 2, 2),
        "num_attention_heads": 12,
        "attention_head_dim": 128,
        "in_channels": 16,
        "out_channels": 16,
        "text_dim": 4096,
        "freq_dim": 256,
        "ffn_dim": 8960,
        "num_layers": 30,
        "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads",
        "eps": 1e-6,
        "image_dim": None,
        "added_kv_proj_dim": None,
        "rope_max_seq_len": 1024,
    }
)

# Same module names and per-block structure as the real model; every Linear in_features in {64..256}.
WAN_TINY_TRANSFORMER: Final[Mapping[str, Any]] = MappingProxyType(
    {
        **WAN_REAL_TRANSFORMER,
        "num_attention_heads": 2,
        "attention_head_dim": 64,
        "text_dim": 64,
        "ffn_dim": 256,
        "num_layers": 2,
        "rope_max_seq_len": 32,
    }
)
# Real AutoencoderKLWan: base_dim 96, dim_mult [1, 2, 4, 4], num_res_blocks 2; the tiny keeps 8x/4x.
WAN_TINY_VAE: Final[Mapping[str, Any]] = MappingProxyType(
    {"base_dim": 8, "z_dim": 16, "dim_mult": [1, 1, 1, 1], "num_res_blocks": 1,
     "temperal_downsample": [False, True, True]}
)  # fmt: skip
# UMT5 (real: umt5-xxl encoder, d_model 4096, 24 layers): 2 layers of width 64, same class and norms.
WAN_TINY_TEXT_ENCODER: Final[Mapping[str, Any]] = MappingProxyType(
    {
        "d_model": 64, "d_kv": 32, "d_ff": 128, "num_layers": 2, "num_heads": 2,
        "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
        "feed_forward_proj": "gated-gelu", "dropout_rate": 0.0, "layer_norm_epsilon": 1e-6,
        "is_encoder_decoder": True, "tie_word_embeddings": False,
        "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0,
    }
)  # fmt: skip
# Wan 2.2 TI2V-5B: 48 latent channels; its VAE (diffusers' conversion script, "Wan2.2" VAE) patchifies 2x2
# pixels into 12 channels, is residual and compresses 16x spatially (4x in time); real base_dim 160, decoder 256.
WAN22_TI2V_TINY_TRANSFORMER: Final[Mapping[str, Any]] = MappingProxyType(
    {**WAN_TINY_TRANSFORMER, "in_channels": 48, "out_channels": 48}
)
WAN22_TI2V_TINY_VAE: Final[Mapping[str, Any]] = MappingProxyType(
    {"base_dim": 8, "decoder_base_dim": 8, "z_dim": 48, "dim_mult": [1, 1, 1, 1], "num_res_blocks": 1,
     "temperal_downsample": [False, True, True], "is_residual": True, "in_channels": 12, "out_channels": 12,
     "patch_size": 2, "scale_factor_spatial": 16, "scale_factor_temporal": 4,
     "latents_mean": [0.0] * 48, "latents_std": [1.0] * 48}
)  # fmt: skip
WanTinyVariant = Literal["t2v", "ti2v"]
"""Tiny Wan shapes: "t2v" (Wan 2.1 T2V) or "ti2v" (Wan 2.2 TI2V-5B: 48-channel VAE, ``expand_timesteps``)."""
WAN_FPS: Final = 16
"""Wan 2.1's sampling frame rate (`generate.py`'s default)."""
WAN22_TI2V_FPS: Final = 24
"""Wan 2.2 TI2V-5B's sampling frame rate (Wan-Video/Wan2.2 `wan/configs/wan_ti2v_5B.py`, ``sample_fps``)."""
WAN_TINY_TEXT_LENGTH: Final = 16
WAN_MAX_TEXT_LENGTH: Final = 512

_VAE_DEFAULTS = inspect.signature(AutoencoderKLWan.__init__).parameters
WAN_LATENTS_MEAN: Final[tuple[float, ...]] = tuple(_VAE_DEFAULTS["latents_mean"].default)
"""Wan 2.1 VAE per-channel latent mean (AutoencoderKLWan's default config)."""
WAN_LATENTS_STD: Final[tuple[float, ...]] = tuple(_VAE_DEFAULTS["latents_std"].default)


def _spec(spec: ModelSpec | None) -> WanSpec:
    if spec is None:
        return WanSpec()
    if not isinstance(spec, WanSpec):
        raise TypeError(f"the wan family needs a WanSpec; got family {spec.family!r}")
    return spec


WAN_NUM_TRAIN_TIMESTEPS: Final = 1000
"""T of Wan's flow-matching schedule: the transformer takes t = σ·T."""


@functools.cache
def _train_sigmas(shift: float) -> Tensor:
    """σ ∈ {1.0, 0.999, …, 0.001} (shifted), the training scheduler's table (docs/method.md §7.1)."""
    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=WAN_NUM_TRAIN_TIMESTEPS, shift=shift
    ).sigmas.clone()


def wan_pipeline_config(path: str | Path) -> dict[str, Any]:
    """The settings a diffusers folder's model_index.json registers for `WanPipeline` that qvgen follows:
    ``expand_timesteps`` (Wan 2.2 TI2V) when set; empty for a Wan 2.1 folder or a bare transformer folder.
    `path` is the pipeline folder or its ``transformer/`` subfolder."""
    root = Path(path).expanduser()
    index = root / "model_index.json"
    if not index.is_file() and root.name == "transformer":
        index = root.parent / "model_index.json"
    if not index.is_file():
        return {}
    config = json.loads(index.read_text())
    return {"expand_timesteps": True} if config.get("expand_timesteps") else {}


def token_timesteps(timesteps: Tensor, latent_shape: tuple[int, ...], *, first_frame_clean: bool) -> Tensor:
    """`WanPipeline`'s ``expand_timesteps`` timestep, (B,) → (B, S): the latent mask's patch grid
    (``mask[:, ::2, ::2]``, frame-major as the transformer flattens its tokens) times each sample's t; with
    `first_frame_clean` (image-to-video) the first latent frame's tokens are at t = 0."""
    _, _, frames, height, width = latent_shape
    if height % 2 or width % 2:
        raise ValueError(f"wan: per-token timesteps need even latent height and width; got {latent_shape}")
    mask = torch.ones(frames, height, width, dtype=torch.float32, device=timesteps.device)
    if first_frame_clean:
        mask[0] = 0
    return mask[None, :, ::2, ::2].flatten(1) * timesteps.to(torch.float32)[:, None]


def _expands_timesteps(spec: WanSpec) -> bool:
    expands = spec.checkpoint is not None and bool(wan_pipeline_config(spec.checkpoint))
    if spec.image_to_video and not expands:
        raise ValueError(
            f"wan: image_to_video=True needs a Wan 2.2 TI2V folder (expand_timesteps in model_index.json); "
            f"{spec.checkpoint} is not one: set model.image_to_video to false"
        )
    return expands


def _latent_stats(z: Tensor, vae_config: Mapping[str, Any] | None) -> tuple[Tensor, Tensor]:
    mean = vae_config["latents_mean"] if vae_config is not None else WAN_LATENTS_MEAN
    std = vae_config["latents_std"] if vae_config is not None else WAN_LATENTS_STD
    if z.ndim != 5 or z.shape[1] != len(mean):
        raise ValueError(f"wan latents must be (B, {len(mean)}, F, H, W); got {tuple(z.shape)}")
    shape = (1, len(mean), 1, 1, 1)
    return (
        torch.tensor(mean, dtype=z.dtype, device=z.device).view(shape),
        torch.tensor(std, dtype=z.dtype, device=z.device).view(shape),
    )


class WanFamily:
    """Wan 2.1 T2V (1.3B/14B): WanTransformer3DModel, AutoencoderKLWan, UMT5, flow matching."""

    name: Final = "wan"
    num_train_timesteps: Final = WAN_NUM_TRAIN_TIMESTEPS
    default_fps: Final = WAN_FPS
    layer_roles: Final[Mapping[str, LayerRole]] = WAN_LAYER_ROLES
    keep_high_precision: Final[tuple[str, ...]] = ()
    latent_layout: Final = "BCFHW"

    # -- loading ---------------------------------------------------------------------------------------
    def load(self, path: str | Path, dtype: DType | torch.dtype = "float32") -> Components:
        """All five components; the VAE stays float32 (as in the official sampling code)."""
        root = ckpt.check_folder(path)
        torch_dtype = to_torch_dtype(dtype)
        transformer = ckpt.load_model(WanTransformer3DModel, root, "transformer", torch_dtype)
        check_text_to_video(transformer.config, root / "transformer")
        return Components(
            transformer=transformer,
            vae=ckpt.load_model(AutoencoderKLWan, root, "vae", torch.float32),
            text_encoder=ckpt.load_model(UMT5EncoderModel, root, "text_encoder", torch_dtype),
            tokenizer=ckpt.load_tokenizer(root),
            scheduler=ckpt.load_scheduler(root),
            pipeline_config=wan_pipeline_config(root),
        )

    def load_transformer(self, path: str | Path, dtype: DType | torch.dtype = "float32") -> nn.Module:
        root, sub = ckpt.transformer_root(path)
        model = WanTransformer3DModel.from_pretrained(root, subfolder=sub, dtype=to_torch_dtype(dtype))
        check_text_to_video(model.config, root if sub is None else root / sub)
        return model.eval()

    # -- data ------------------------------------------------------------------------------------------
    def max_text_length(self, components: Components, spec: ModelSpec | None = None) -> int:
        """The spec's value, else 512 capped by the tokenizer's model_max_length (the tiny model's 16)."""
        wanted = _spec(spec).max_text_length
        return (
            wanted if wanted is not None else min(WAN_MAX_TEXT_LENGTH, components.tokenizer.model_max_length)
        )

    def encoder(self, components: Components, spec: ModelSpec | None = None) -> PipelineEncoder:
        length = self.max_text_length(components, spec)
        digest = encoder_identity(components.vae, components.text_encoder)
        return PipelineEncoder(
            name=f"wan:vae+umt5@{digest}:L{length}",
            pipeline=self.pipeline(components),
            max_length=length,
            clean_prompt=prompt_clean,
        )

    def normalize_latents(self, z: Tensor, vae_config: Mapping[str, Any] | None = None) -> Tensor:
        """(z − latents_mean) / latents_std per channel; layout stays (B, C, F, H, W)."""
        mean, std = _latent_stats(z, vae_config)
        return (z - mean) / std

    def denormalize_latents(self, z: Tensor, vae_config: Mapping[str, Any] | None = None) -> Tensor:
        mean, std = _latent_stats(z, vae_config)
        return z * std + mean

    # -- training --------------------------------------------------------------------------------------
    def sample_timesteps(
        self, batch_size: int, generator: torch.Generator | None = None, spec: ModelSpec | None = None
    ) -> Tensor:
        """σ·1000 as float (B,), σ drawn uniformly from the 1000 training sigmas (shift = spec.train_flow_shift)."""
        device = generator.device if generator is not None else torch.device("cpu")
        sigmas = _train_sigmas(_spec(spec).train_flow_shift).to(device)
        idx = torch.randint(0, sigmas.numel(), (batch_size,), generator=generator, device=device)
        return sigmas[idx] * float(WAN_NUM_TRAIN_TIMESTEPS)

    def checkpoint_fps(self, path: str | Path) -> int:
        """The frame rate of a folder's videos: 24 for a Wan 2.2 TI2V folder (``expand_timesteps`` in its
        model_index.json), else `default_fps`."""
        return WAN22_TI2V_FPS if wan_pipeline_config(path) else self.default_fps

    def components_fps(self, components: Components) -> int:
        """24 for components loaded from a Wan 2.2 TI2V folder (``expand_timesteps``), else `default_fps`."""
        return WAN22_TI2V_FPS if components.pipeline_config.get("expand_timesteps") else self.default_fps

    def noised_inputs(
        self, latents: Tensor, noise: Tensor, timesteps: Tensor, spec: ModelSpec | None = None
    ) -> NoisedInputs:
        """x_t = (1 − σ)·x0 + σ·ε with σ = t/1000; target ε − x0 (the flow velocity).

        A Wan 2.2 TI2V `spec` (its folder's model_index.json sets ``expand_timesteps``) turns (B,) timesteps
        into the pipeline's per-token (B, S) ones (`token_timesteps`; ``spec.image_to_video`` keeps the first
        latent frame clean at t = 0); (B, S) timesteps are taken as given. Each token is noised to its own σ.
        """
        if timesteps.ndim == 1 and spec is not None and _expands_timesteps(_spec(spec)):
            timesteps = token_timesteps(
                timesteps, tuple(latents.shape), first_frame_clean=_spec(spec).image_to_video
            )
        if timesteps.ndim == 2:
            return self._noised_per_token(latents, noise, timesteps)
        check_noising_batch("wan", latents, noise, timesteps)
        sigma = timesteps.to(torch.float32) / float(WAN_NUM_TRAIN_TIMESTEPS)
        s = sigma.to(latents.dtype).view(-1, 1, 1, 1, 1)
        return NoisedInputs(
            hidden_states=(1 - s) * latents + s * noise,
            timestep=timesteps.to(torch.float32),
            target=noise - latents,
            sigma=sigma,
        )

    def _noised_per_token(self, latents: Tensor, noise: Tensor, timesteps: Tensor) -> NoisedInputs:
        b, _, frames, height, width = latents.shape
        tokens = frames * (height // 2) * (width // 2)
        if noise.shape != latents.shape or timesteps.shape != (b, tokens) or height % 2 or width % 2:
            raise ValueError(
                f"wan: per-token timesteps must be (B, F·H/2·W/2) = ({b}, {tokens}) for latents "
                f"{tuple(latents.shape)} (even H, W) and noise of the same shape; got timesteps "
                f"{tuple(timesteps.shape)}, noise {tuple(noise.shape)}"
            )
        sigma = timesteps.to(torch.float32) / float(WAN_NUM_TRAIN_TIMESTEPS)
        grid = sigma.to(latents.dtype).view(b, 1, frames, height // 2, width // 2)
        s = grid.repeat_interleave(2, dim=3).repeat_interleave(2, dim=4)
        return NoisedInputs(
            hidden_states=(1 - s) * latents + s * noise,
            timestep=timesteps.to(torch.float32),
            target=noise - latents,
            sigma=sigma,
        )

    def predict(
        self,
        transformer: nn.Module,
        x: NoisedInputs,
        text_embeddings: Tensor,
        text_lengths: Tensor | None = None,
    ) -> Tensor:
        """Velocity prediction (B, C, F, H, W); tokens at or past `text_lengths` are zeroed like the pipeline."""
        if text_lengths is not None:
            keep = (
                torch.arange(text_embeddings.shape[1], device=text_embeddings.device) < text_lengths[:, None]
            )
            text_embeddings = text_embeddings * keep.unsqueeze(-1).to(text_embeddings.dtype)
        out = transformer(
            hidden_states=x.hidden_states,
            timestep=x.timestep,
            encoder_hidden_states=text_embeddings,
            return_dict=False,
        )
        return out[0]

    # -- sampling --------------------------------------------------------------------------------------
    def pipeline(self, components: Components, spec: ModelSpec | None = None) -> WanPipeline:
        """`WanPipeline`; with a spec, the scheduler's flow shift is set to spec.sample_flow_shift."""
        scheduler = components.scheduler
        if spec is not None:
            shift = _spec(spec).sample_flow_shift
            key = "flow_shift" if "flow_shift" in scheduler.config else "shift"
            scheduler = type(scheduler).from_config(scheduler.config, **{key: shift})
        pipe = WanPipeline(**{**components.as_dict(), "scheduler": scheduler})
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def sample_kwargs(self, components: Components, **overrides: Any) -> dict[str, Any]:
        """480×832, 81 frames, 50 steps, CFG 5.0 (the official Wan 2.1 1.3B settings) + `overrides`;
        704×1280, 121 frames for a Wan 2.2 TI2V checkpoint (``expand_timesteps``, `wan_ti2v_5B.py`)."""
        ti2v = bool(components.pipeline_config.get("expand_timesteps"))
        defaults: dict[str, Any] = {
            "height": 704 if ti2v else 480,
            "width": 1280 if ti2v else 832,
            "num_frames": 121 if ti2v else 81,
            "num_inference_steps": 50,
            "guidance_scale": 5.0,
            "max_sequence_length": self.max_text_length(components),
        }
        return {**defaults, **overrides}

    # -- tiny and real configs -------------------------------------------------------------------------
    def build_tiny_components(self, seed: int = 0, variant: WanTinyVariant = "t2v") -> Components:
        """Hidden 128 (2×64), 2 blocks, text dim 64, FFN 256; UMT5 2×64; in-process tokenizer; UniPC flow.

        ``variant="ti2v"``: Wan 2.2 TI2V-5B's shape: 48 latent channels, the residual 16×-compressing VAE
        (``is_residual``, ``patch_size`` 2, base dim 8) and ``expand_timesteps`` in the pipeline config."""
        ti2v = variant == "ti2v"
        tokenizer = make_t5_tokenizer(model_max_length=WAN_TINY_TEXT_LENGTH, seed=seed)
        text_config = UMT5Config(vocab_size=len(tokenizer), **WAN_TINY_TEXT_ENCODER)
        torch.manual_seed(seed)
        text_encoder = UMT5EncoderModel(text_config).eval()
        torch.manual_seed(seed)
        transformer = WanTransformer3DModel(
            **(WAN22_TI2V_TINY_TRANSFORMER if ti2v else WAN_TINY_TRANSFORMER)
        ).eval()
        torch.manual_seed(seed)
        vae = AutoencoderKLWan(**(WAN22_TI2V_TINY_VAE if ti2v else WAN_TINY_VAE)).eval()
        scheduler = UniPCMultistepScheduler(
            prediction_type="flow_prediction",
            use_flow_sigmas=True,
            num_train_timesteps=WAN_NUM_TRAIN_TIMESTEPS,
            flow_shift=3.0,
        )
        config = {"expand_timesteps": True} if ti2v else {}
        return Components(transformer, vae, text_encoder, tokenizer, scheduler, pipeline_config=config)

    def save_tiny(self, out_dir: str | Path, seed: int = 0, variant: WanTinyVariant = "t2v") -> Path:
        return ckpt.save_pipeline_atomic(self.pipeline(self.build_tiny_components(seed, variant)), out_dir)

    def real_transformer_config(self) -> dict[str, Any]:
        """Wan2.1-T2V-1.3B transformer constructor arguments."""
        return dict(WAN_REAL_TRANSFORMER)

    def build_transformer_on_meta(self, config: Mapping[str, Any] | None = None) -> nn.Module:
        with torch.device("meta"):
            return WanTransformer3DModel(**(config if config is not None else WAN_REAL_TRANSFORMER))
