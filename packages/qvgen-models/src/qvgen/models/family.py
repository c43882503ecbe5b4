"""The `ModelFamily` Protocol and the tensor bundles that cross it (`Components`, `NoisedInputs`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from qvgen.data import VideoEncoder
from qvgen.models.spec import DType, FamilyName, ModelSpec
from qvgen.quant import LayerRole


@dataclass(frozen=True, slots=True)
class Components:
    """The five diffusers/transformers objects of a text-to-video checkpoint."""

    transformer: nn.Module
    vae: nn.Module
    text_encoder: nn.Module
    tokenizer: Any
    scheduler: Any
    pipeline_config: Mapping[str, Any] = field(default_factory=dict)
    """The pipeline's own registered settings from model_index.json (Wan 2.2 TI2V: ``expand_timesteps``)."""

    def as_dict(self) -> dict[str, Any]:
        """Keyword arguments for the family's diffusers pipeline constructor."""
        return {
            "transformer": self.transformer,
            "vae": self.vae,
            "text_encoder": self.text_encoder,
            "tokenizer": self.tokenizer,
            "scheduler": self.scheduler,
            **self.pipeline_config,
        }


@dataclass(frozen=True, slots=True)
class NoisedInputs:
    """One noised training batch, in the family's transformer layout.

    `target` is the data target in the transformer's output space, so that
    ``mse(predict(...), target)`` is the plain denoising loss: Wan's flow velocity ε − x0, CogVideoX's
    v = √ᾱ·ε − √(1−ᾱ)·x0 (docs/method.md §7.1 shows the x0-space loss weighted by 1/(1−ᾱ) equals this).
    Exactly one of `sigma` (Wan, flow matching) and `alpha_bar` (CogVideoX, DDPM) is set, shape (B,);
    for a Wan 2.2 TI2V model (``expand_timesteps``) `timestep` and `sigma` are per latent token, (B, S).
    """

    hidden_states: Tensor
    timestep: Tensor
    target: Tensor
    sigma: Tensor | None = None
    alpha_bar: Tensor | None = None


class ModelFamily(Protocol):
    """Everything qvgen needs to know about one diffusers video model family.

    `spec`, where a method takes one, must be this family's spec (None means the spec defaults).
    """

    @property
    def name(self) -> FamilyName:
        """The registry key: "wan" or "cogvideox"."""
        ...

    @property
    def num_train_timesteps(self) -> int:
        """T: training timesteps lie in [0, T] (CogVideoX's integers stop at T − 1, Wan's σ·T reaches T at
        σ = 1, which quant's `bin` groups put in the last group); quant and the student manifest use it."""
        ...

    @property
    def default_fps(self) -> int:
        """Frame rate of the official sampling scripts' videos (written mp4s use it unless told otherwise)."""
        ...

    def checkpoint_fps(self, path: str | Path) -> int:
        """The frame rate for a local diffusers folder, read from its config (Wan 2.2 TI2V: 24)."""
        ...

    def components_fps(self, components: Components) -> int:
        """The frame rate of loaded components' videos, from their pipeline config (Wan 2.2 TI2V: 24)."""
        ...

    @property
    def layer_roles(self) -> Mapping[str, LayerRole]:
        """fnmatch glob over transformer module names → role; matches fused ``to_qkv``/``to_kv`` too."""
        ...

    @property
    def keep_high_precision(self) -> tuple[str, ...]:
        """Globs quantization leaves alone. Empty: the official recipe quantizes every Linear."""
        ...

    @property
    def latent_layout(self) -> str:
        """Layout of normalised latents as the transformer takes them: "BCFHW" (Wan) or "BFCHW" (CogVideoX)."""
        ...

    def load(self, path: str | Path, dtype: DType | torch.dtype = "float32") -> Components:
        """All components from a local diffusers folder."""
        ...

    def load_transformer(self, path: str | Path, dtype: DType | torch.dtype = "float32") -> nn.Module:
        """Only the transformer, from a diffusers folder or its ``transformer/`` subfolder."""
        ...

    def encoder(self, components: Components, spec: ModelSpec | None = None) -> VideoEncoder:
        """qvgen.data's `VideoEncoder` over this checkpoint's VAE and text encoder."""
        ...

    def normalize_latents(self, z: Tensor, vae_config: Mapping[str, Any] | None = None) -> Tensor:
        """Raw VAE latents (B, C, F, H, W) → normalised latents in `latent_layout`."""
        ...

    def denormalize_latents(self, z: Tensor, vae_config: Mapping[str, Any] | None = None) -> Tensor:
        """Inverse of `normalize_latents`: back to raw VAE latents (B, C, F, H, W)."""
        ...

    def sample_timesteps(
        self, batch_size: int, generator: torch.Generator | None = None, spec: ModelSpec | None = None
    ) -> Tensor:
        """Training timesteps (B,) in the units the transformer takes."""
        ...

    def noised_inputs(
        self, latents: Tensor, noise: Tensor, timesteps: Tensor, spec: ModelSpec | None = None
    ) -> NoisedInputs:
        """Noise normalised latents to `timesteps` and state the data target; `spec` (the run's model)
        selects the checkpoint's own timestep convention (Wan 2.2 TI2V: one timestep per latent token)."""
        ...

    def predict(
        self,
        transformer: nn.Module,
        x: NoisedInputs,
        text_embeddings: Tensor,
        text_lengths: Tensor | None = None,
    ) -> Tensor:
        """The transformer's raw output for `x` (what the distillation loss compares)."""
        ...

    def pipeline(self, components: Components, spec: ModelSpec | None = None) -> Any:
        """The diffusers sampling pipeline over `components`."""
        ...

    def sample_kwargs(self, components: Components, **overrides: Any) -> dict[str, Any]:
        """Default keyword arguments for calling `pipeline(...)`, updated with `overrides`."""
        ...

    def build_tiny_components(self, seed: int = 0) -> Components:
        """A tiny, randomly initialised, architecturally faithful checkpoint, built offline."""
        ...

    def save_tiny(self, out_dir: str | Path, seed: int = 0) -> Path:
        """Write `build_tiny_components(seed)` as a diffusers folder (atomically); return its path."""
        ...

    def real_transformer_config(self) -> dict[str, Any]:
        """Constructor arguments of the real transformer (Wan2.1-T2V-1.3B / CogVideoX-2B)."""
        ...

    def build_transformer_on_meta(self, config: Mapping[str, Any] | None = None) -> nn.Module:
        """The transformer for `config` (default: the real one) on the meta device, without memory."""
        ...


def check_noising_batch(family: str, latents: Tensor, noise: Tensor, timesteps: Tensor) -> None:
    """Shape checks shared by the families' `noised_inputs`."""
    if latents.ndim != 5 or noise.shape != latents.shape:
        raise ValueError(
            f"{family}: latents and noise must share one 5-D shape; got {tuple(latents.shape)} and "
            f"{tuple(noise.shape)}"
        )
    if timesteps.shape != (latents.shape[0],):
        raise ValueError(
            f"{family}: timesteps must be ({latents.shape[0]},), one per sample; got {tuple(timesteps.shape)}"
        )
