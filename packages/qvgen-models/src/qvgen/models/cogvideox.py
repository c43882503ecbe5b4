"""CogVideoX 1.0 (2B, 5B) and 1.5 (5B): v-prediction on a zero-terminal-SNR DDPM schedule, frames-first
(B, F, C, H, W). 5B and 1.5 use 3D rotary embeddings, 1.5 also temporal patches (`patch_size_t`): `predict`
builds both inputs exactly as diffusers' CogVideoXPipeline does."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal, cast

import torch
from diffusers.models.autoencoders.autoencoder_kl_cogvideox import AutoencoderKLCogVideoX
from diffusers.models.embeddings import get_3d_rotary_pos_embed
from diffusers.models.transformers.cogvideox_transformer_3d import CogVideoXTransformer3DModel
from diffusers.pipelines.cogvideo.pipeline_cogvideox import CogVideoXPipeline, get_resize_crop_region_for_grid
from diffusers.schedulers.scheduling_ddim_cogvideox import CogVideoXDDIMScheduler
from torch import Tensor, nn
from transformers import T5Config, T5EncoderModel

from qvgen.models import checkpoint as ckpt
from qvgen.models.encoder import PipelineEncoder, encoder_identity
from qvgen.models.family import Components, NoisedInputs, check_noising_batch
from qvgen.models.spec import CogVideoXSpec, DType, ModelSpec, to_torch_dtype
from qvgen.models.tokenizer import make_t5_tokenizer
from qvgen.quant import LayerRole

COG_LAYER_ROLES: Final[Mapping[str, LayerRole]] = MappingProxyType(
    {
        "patch_embed.text_proj": LayerRole.text_proj,
        "patch_embed.proj": LayerRole.patch_embed,  # a Linear only with temporal patches (CogVideoX 1.5)
        "time_embedding.linear_*": LayerRole.time_embed,
        "ofs_embedding.linear_*": LayerRole.time_embed,
        "transformer_blocks.*.norm1.linear": LayerRole.modulation,
        "transformer_blocks.*.norm2.linear": LayerRole.modulation,
        "norm_out.linear": LayerRole.modulation,
        "transformer_blocks.*.attn1.to_q": LayerRole.attn_q,
        "transformer_blocks.*.attn1.to_k": LayerRole.attn_k,
        "transformer_blocks.*.attn1.to_v": LayerRole.attn_v,
        "transformer_blocks.*.attn1.to_qkv": LayerRole.attn_qkv,
        "transformer_blocks.*.attn1.to_out.0": LayerRole.attn_out,
        "transformer_blocks.*.ff.net.0.proj": LayerRole.ffn_up,
        "transformer_blocks.*.ff.net.2": LayerRole.ffn_down,
        "proj_out": LayerRole.proj_out,
    }
)

# CogVideoX-2B (diffusers `scripts/convert_cogvideox_to_diffusers.py`: the class defaults).
COG_REAL_TRANSFORMER: Final[Mapping[str, Any]] = MappingProxyType(
    {
        "num_attention_heads": 30,
        "attention_head_dim": 64,
        "in_channels": 16,
        "out_channels": 16,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "time_embed_dim": 512,
        "text_embed_dim": 4096,
        "num_layers": 30,
        "dropout": 0.0,
        "attention_bias": True,
        "sample_width": 90,
        "sample_height": 60,
        "sample_frames": 49,
        "patch_size": 2,
        "temporal_compression_ratio": 4,
        "max_text_seq_length": 226,
        "activation_fn": "gelu-approximate",
        "timestep_activation_fn": "silu",
        "norm_elementwise_affine": True,
        "norm_eps": 1e-5,
        "spatial_interpolation_scale": 1.875,
        "temporal_interpolation_scale": 1.0,
        "use_rotary_positional_embeddings": False,
        "use_learned_positional_embeddings": False,
    }
)
# Hidden 128 (must be a multiple of 16 for the 3D sincos table); latent 8×8 → 64×64 px, 9 frames.
COG_TINY_TRANSFORMER: Final[Mapping[str, Any]] = MappingProxyType(
    {
        **COG_REAL_TRANSFORMER,
        "num_attention_heads": 2,
        "time_embed_dim": 64,
        "text_embed_dim": 64,
        "num_layers": 2,
        "sample_width": 8,
        "sample_height": 8,
        "sample_frames": 9,
        "max_text_seq_length": 16,
    }
)
CogTinyVariant = Literal["2b", "5b", "1.5"]
"""Tiny CogVideoX shaped like 2B (sincos positions), 5B (3D RoPE) or 1.5 (RoPE + temporal patches of 2)."""
COG_TINY_VARIANTS: Final[Mapping[str, Mapping[str, Any]]] = MappingProxyType(
    {
        "2b": COG_TINY_TRANSFORMER,
        "5b": {**COG_TINY_TRANSFORMER, "use_rotary_positional_embeddings": True},
        # As CogVideoX1.5-5B: no patch bias; sample_height/width (8 → RoPE max grid 4×4) bound the size.
        "1.5": {
            **COG_TINY_TRANSFORMER,
            "use_rotary_positional_embeddings": True,
            "patch_size_t": 2,
            "patch_bias": False,
        },
    }
)
# Real CogVideoX-2B VAE: block_out_channels (128, 256, 256, 512), layers_per_block 3, 32 groups.
COG_TINY_VAE: Final[Mapping[str, Any]] = MappingProxyType(
    {
        "in_channels": 3, "out_channels": 3,
        "down_block_types": ("CogVideoXDownBlock3D",) * 4, "up_block_types": ("CogVideoXUpBlock3D",) * 4,
        "block_out_channels": (8, 8, 8, 8), "latent_channels": 16, "layers_per_block": 1,
        "norm_num_groups": 2, "temporal_compression_ratio": 4, "scaling_factor": 1.15258426,
    }
)  # fmt: skip
# T5 v1.1 (real: t5-v1_1-xxl encoder, d_model 4096, 24 layers): 2 layers of width 64, same class and norms.
COG_TINY_TEXT_ENCODER: Final[Mapping[str, Any]] = MappingProxyType(
    {
        "d_model": 64, "d_kv": 32, "d_ff": 128, "num_layers": 2, "num_heads": 2,
        "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
        "feed_forward_proj": "gated-gelu", "dropout_rate": 0.0, "layer_norm_epsilon": 1e-6,
        "tie_word_embeddings": False, "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0,
    }
)  # fmt: skip
# CogVideoX-2b scheduler_config (convert_cogvideox_to_diffusers.py); also the training schedule.
COG_SCHEDULER_CONFIG: Final[Mapping[str, Any]] = MappingProxyType(
    {
        "snr_shift_scale": 3.0, "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
        "clip_sample": False, "num_train_timesteps": 1000, "prediction_type": "v_prediction",
        "rescale_betas_zero_snr": True, "set_alpha_to_one": True, "timestep_spacing": "trailing",
    }
)  # fmt: skip
COG_SCALING_FACTOR: Final = 1.15258426
"""CogVideoX-2B VAE scaling factor (CogVideoX-5B uses 0.7: pass its VAE config)."""


def _spec(spec: ModelSpec | None) -> CogVideoXSpec:
    if spec is None:
        return CogVideoXSpec()
    if not isinstance(spec, CogVideoXSpec):
        raise TypeError(f"the cogvideox family needs a CogVideoXSpec; got family {spec.family!r}")
    return spec


@functools.cache
def _train_scheduler() -> CogVideoXDDIMScheduler:
    return CogVideoXDDIMScheduler(**COG_SCHEDULER_CONFIG)


def _check_supported(config: Mapping[str, Any], where: object) -> None:
    """Text-to-video CogVideoX only: image-to-video checkpoints need inputs the T2V pipeline lacks."""
    ckpt.refuse_image_to_video(
        config, where, family="CogVideoX", supported="text-to-video CogVideoX (2B, 5B, 1.5-5B)",
        markers={"ofs_embed_dim": "CogVideoX1.5 image-to-video, which needs an `ofs` input"},
    )  # fmt: skip


def frame_padding(config: Any, latent_frames: int) -> int:
    """Latent frames CogVideoXPipeline prepends so that `patch_size_t` divides the frame count (1.5)."""
    p_t = config.patch_size_t
    return 0 if p_t is None or latent_frames % p_t == 0 else p_t - latent_frames % p_t


def rotary_embeddings(
    config: Any, latent_frames: int, latent_height: int, latent_width: int, device: torch.device | None = None
) -> tuple[Tensor, Tensor] | None:
    """(cos, sin) of CogVideoXPipeline._prepare_rotary_positional_embeddings for this latent grid (frames
    already padded), or None without RoPE. The pipeline's pixel size // (VAE factor × patch) is the latent
    size // patch, so the latent grid suffices."""
    if not config.use_rotary_positional_embeddings:
        return None
    p, p_t = config.patch_size, config.patch_size_t
    grid = (latent_height // p, latent_width // p)
    base_width, base_height = config.sample_width // p, config.sample_height // p
    if p_t is None:  # CogVideoX 1.0 (5B)
        crops = get_resize_crop_region_for_grid(grid, base_width, base_height)
        cos, sin = get_3d_rotary_pos_embed(
            embed_dim=config.attention_head_dim,
            crops_coords=crops,
            grid_size=grid,
            temporal_size=latent_frames,
            device=device,
        )
    else:  # CogVideoX 1.5
        if grid[0] > base_height or grid[1] > base_width:
            raise ValueError(
                f"cogvideox: a latent grid of {grid[0]}×{grid[1]} tokens exceeds this transformer's RoPE "
                f"table of {base_height}×{base_width} (sample_height={config.sample_height}, "
                f"sample_width={config.sample_width} latent pixels, patch_size={p})"
            )
        cos, sin = get_3d_rotary_pos_embed(
            embed_dim=config.attention_head_dim,
            crops_coords=None,
            grid_size=grid,
            temporal_size=(latent_frames + p_t - 1) // p_t,
            grid_type="slice",
            max_size=(base_height, base_width),
            device=device,
        )
    return cos, sin


def _scaling_factor(vae_config: Mapping[str, Any] | None) -> float:
    return float(vae_config["scaling_factor"]) if vae_config is not None else COG_SCALING_FACTOR


class CogVideoXFamily:
    """CogVideoX 1.0 / 1.5 text-to-video: CogVideoXTransformer3DModel, AutoencoderKLCogVideoX, T5 v1.1,
    v-prediction."""

    name: Final = "cogvideox"
    num_train_timesteps: Final = int(COG_SCHEDULER_CONFIG["num_train_timesteps"])
    default_fps: Final = 8
    layer_roles: Final[Mapping[str, LayerRole]] = COG_LAYER_ROLES
    keep_high_precision: Final[tuple[str, ...]] = ()
    latent_layout: Final = "BFCHW"

    # -- loading ---------------------------------------------------------------------------------------
    def load(self, path: str | Path, dtype: DType | torch.dtype = "float32") -> Components:
        root = ckpt.check_folder(path)
        torch_dtype = to_torch_dtype(dtype)
        transformer = ckpt.load_model(CogVideoXTransformer3DModel, root, "transformer", torch_dtype)
        _check_supported(transformer.config, root / "transformer")
        return Components(
            transformer=transformer,
            vae=ckpt.load_model(AutoencoderKLCogVideoX, root, "vae", torch_dtype),
            text_encoder=ckpt.load_model(T5EncoderModel, root, "text_encoder", torch_dtype),
            tokenizer=ckpt.load_tokenizer(root),
            scheduler=ckpt.load_scheduler(root),
        )

    def load_transformer(self, path: str | Path, dtype: DType | torch.dtype = "float32") -> nn.Module:
        root, sub = ckpt.transformer_root(path)
        model = CogVideoXTransformer3DModel.from_pretrained(root, subfolder=sub, dtype=to_torch_dtype(dtype))
        _check_supported(model.config, root if sub is None else root / sub)
        return model.eval()

    # -- data ------------------------------------------------------------------------------------------
    def max_text_length(self, components: Components, spec: ModelSpec | None = None) -> int:
        """The transformer's max_text_seq_length; a spec value must equal it."""
        config: Any = components.transformer.config
        own = int(config.max_text_seq_length)
        wanted = _spec(spec).max_text_length
        if wanted is not None and wanted != own:
            raise ValueError(
                f"CogVideoXSpec.max_text_length={wanted} differs from the transformer's "
                f"max_text_seq_length={own}; CogVideoX text must be exactly that long (leave it unset)"
            )
        return own

    def encoder(self, components: Components, spec: ModelSpec | None = None) -> PipelineEncoder:
        length = self.max_text_length(components, spec)
        digest = encoder_identity(components.vae, components.text_encoder)
        return PipelineEncoder(
            name=f"cogvideox:vae+t5@{digest}:L{length}", pipeline=self.pipeline(components), max_length=length
        )

    def normalize_latents(self, z: Tensor, vae_config: Mapping[str, Any] | None = None) -> Tensor:
        """z · scaling_factor, then (B, C, F, H, W) → (B, F, C, H, W) as the transformer takes it."""
        if z.ndim != 5:
            raise ValueError(f"cogvideox latents must be (B, C, F, H, W); got {tuple(z.shape)}")
        return (z * _scaling_factor(vae_config)).permute(0, 2, 1, 3, 4).contiguous()

    def denormalize_latents(self, z: Tensor, vae_config: Mapping[str, Any] | None = None) -> Tensor:
        if z.ndim != 5:
            raise ValueError(f"cogvideox latents must be (B, F, C, H, W); got {tuple(z.shape)}")
        return (z / _scaling_factor(vae_config)).permute(0, 2, 1, 3, 4).contiguous()

    # -- training --------------------------------------------------------------------------------------
    def sample_timesteps(
        self, batch_size: int, generator: torch.Generator | None = None, spec: ModelSpec | None = None
    ) -> Tensor:
        """Integer t ∈ [0, 999] (B,), uniform (docs/method.md §7.1)."""
        _spec(spec)
        device = generator.device if generator is not None else torch.device("cpu")
        return torch.randint(0, self.num_train_timesteps, (batch_size,), generator=generator, device=device)

    def checkpoint_fps(self, path: str | Path) -> int:
        """The frame rate of a folder's videos: `default_fps` for every CogVideoX 1.0 folder."""
        return self.default_fps

    def components_fps(self, components: Components) -> int:
        """`default_fps`: every CogVideoX 1.0 pipeline samples at 8 fps."""
        return self.default_fps

    def noised_inputs(
        self, latents: Tensor, noise: Tensor, timesteps: Tensor, spec: ModelSpec | None = None
    ) -> NoisedInputs:
        """x_t = √ᾱ·x0 + √(1−ᾱ)·ε; target v = √ᾱ·ε − √(1−ᾱ)·x0 (the scheduler's get_velocity)."""
        _spec(spec)
        check_noising_batch("cogvideox", latents, noise, timesteps)
        if timesteps.dtype.is_floating_point:
            raise TypeError(f"cogvideox timesteps must be integers in [0, 999]; got {timesteps.dtype}")
        sched = _train_scheduler()
        t = cast(torch.IntTensor, timesteps.long())  # diffusers' hint; it indexes with any int tensor
        return NoisedInputs(
            hidden_states=sched.add_noise(latents, noise, t),
            timestep=t,
            target=sched.get_velocity(latents, noise, t),
            alpha_bar=sched.alphas_cumprod.to(device=t.device, dtype=torch.float32)[t],
        )

    def predict(
        self,
        transformer: nn.Module,
        x: NoisedInputs,
        text_embeddings: Tensor,
        text_lengths: Tensor | None = None,
    ) -> Tensor:
        """v-prediction (B, F, C, H, W). Text is used as the pipeline uses it (`text_lengths` unused:
        CogVideoX attends to the T5 outputs of pad tokens too) and must be max_text_seq_length long.

        With RoPE (5B, 1.5) the pipeline's 3D rotary embeddings are passed. With temporal patches (1.5)
        and F not divisible by patch_size_t, the missing frames are filled in front (where the pipeline puts
        its padding frames) with copies of the first noised frame and their outputs are dropped again, so
        the result always has F frames."""
        config: Any = transformer.config
        expected = config.max_text_seq_length
        if text_embeddings.shape[1] != expected:
            raise ValueError(
                f"cogvideox text embeddings have {text_embeddings.shape[1]} tokens; this transformer "
                f"needs exactly max_text_seq_length={expected}"
            )
        hidden = x.hidden_states
        height, width = hidden.shape[-2:]
        if height % config.patch_size or width % config.patch_size:
            raise ValueError(
                f"cogvideox latents of {height}×{width} are not divisible by the transformer's "
                f"patch_size={config.patch_size}"
            )
        pad = frame_padding(config, hidden.shape[1])
        if pad:
            hidden = torch.cat([hidden[:, :1].expand(-1, pad, -1, -1, -1), hidden], dim=1)
        out = transformer(
            hidden_states=hidden,
            timestep=x.timestep,
            encoder_hidden_states=text_embeddings,
            image_rotary_emb=rotary_embeddings(config, hidden.shape[1], height, width, hidden.device),
            return_dict=False,
        )
        return out[0][:, pad:]

    # -- sampling --------------------------------------------------------------------------------------
    def pipeline(self, components: Components, spec: ModelSpec | None = None) -> CogVideoXPipeline:
        _spec(spec)
        pipe = CogVideoXPipeline(**components.as_dict())
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def sample_kwargs(self, components: Components, **overrides: Any) -> dict[str, Any]:
        """The transformer's sample size (480×720, 49 frames for 2B / 5B; as the pipeline, sample_height ×
        VAE factor for 1.5, whose native 768×1360 must be passed), 50 steps, CFG 6 dynamic + `overrides`."""
        cfg: Any = components.transformer.config
        vae_config: Any = components.vae.config
        spatial = 2 ** (len(vae_config.block_out_channels) - 1)
        defaults: dict[str, Any] = {
            "height": cfg.sample_height * spatial,
            "width": cfg.sample_width * spatial,
            "num_frames": cfg.sample_frames,
            "num_inference_steps": 50,
            "guidance_scale": 6.0,
            "use_dynamic_cfg": True,
            "max_sequence_length": cfg.max_text_seq_length,
        }
        merged = {**defaults, **overrides}
        if merged["max_sequence_length"] != cfg.max_text_seq_length:
            raise ValueError(
                f"CogVideoX max_sequence_length must equal transformer.config.max_text_seq_length="
                f"{cfg.max_text_seq_length}; got {merged['max_sequence_length']}"
            )
        unit = spatial * cfg.patch_size
        for key, limit in (("height", cfg.sample_height), ("width", cfg.sample_width)):
            size = merged[key]
            if size is None:
                continue
            if size % unit:
                raise ValueError(
                    f"CogVideoX {key}={size} must be a multiple of {unit} (VAE {spatial} × patch)"
                )
            if cfg.patch_size_t is not None and size > limit * spatial:
                raise ValueError(
                    f"CogVideoX 1.5 {key}={size} exceeds the RoPE table: at most sample_{key}={limit} "
                    f"× VAE {spatial} = {limit * spatial}"
                )
        return merged

    # -- tiny and real configs -------------------------------------------------------------------------
    def build_tiny_components(self, seed: int = 0, variant: CogTinyVariant = "2b") -> Components:
        """Hidden 128 (2×64), 2 blocks, time/text dim 64, FFN 512; T5 2×64; in-process tokenizer; DDIM.
        `variant` "5b" adds 3D RoPE, "1.5" RoPE and temporal patches of 2 (COG_TINY_VARIANTS)."""
        if variant not in COG_TINY_VARIANTS:
            raise ValueError(
                f"unknown tiny CogVideoX variant {variant!r}; known: {', '.join(COG_TINY_VARIANTS)}"
            )
        text_length = int(COG_TINY_TRANSFORMER["max_text_seq_length"])
        tokenizer = make_t5_tokenizer(model_max_length=text_length, seed=seed)
        text_config = T5Config(vocab_size=len(tokenizer), **COG_TINY_TEXT_ENCODER)
        torch.manual_seed(seed)
        text_encoder = T5EncoderModel(text_config).eval()
        torch.manual_seed(seed)
        transformer = CogVideoXTransformer3DModel(**COG_TINY_VARIANTS[variant]).eval()
        torch.manual_seed(seed)
        vae = AutoencoderKLCogVideoX(**COG_TINY_VAE).eval()
        scheduler = CogVideoXDDIMScheduler(**COG_SCHEDULER_CONFIG)
        return Components(transformer, vae, text_encoder, tokenizer, scheduler)

    def save_tiny(self, out_dir: str | Path, seed: int = 0, variant: CogTinyVariant = "2b") -> Path:
        components = self.build_tiny_components(seed, variant)
        return ckpt.save_pipeline_atomic(self.pipeline(components), out_dir)

    def real_transformer_config(self) -> dict[str, Any]:
        """CogVideoX-2B transformer constructor arguments."""
        return dict(COG_REAL_TRANSFORMER)

    def build_transformer_on_meta(self, config: Mapping[str, Any] | None = None) -> nn.Module:
        with torch.device("meta"):
            return CogVideoXTransformer3DModel(**(config if config is not None else COG_REAL_TRANSFORMER))
