"""The encoder Protocol that model families implement: videos → latent moments, prompts → embeddings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@dataclass(frozen=True, slots=True)
class LatentMoments:
    """Raw VAE posterior moments, (B, C, F', H', W') in the VAE's native layout, not normalised.

    The family normalises after sampling (docs/method.md B7); `logvar` is None for a mean-only encoder.
    """

    mean: Tensor
    logvar: Tensor | None

    def __post_init__(self) -> None:
        if self.mean.ndim != 5:
            raise ValueError(
                f"LatentMoments.mean must be (B, C, F, H, W); got shape {tuple(self.mean.shape)}"
            )
        if self.logvar is not None and self.logvar.shape != self.mean.shape:
            raise ValueError(
                f"LatentMoments.logvar shape {tuple(self.logvar.shape)} differs from mean "
                f"{tuple(self.mean.shape)}"
            )


@dataclass(frozen=True, slots=True)
class TextEmbeddings:
    """Padded prompt embeddings (B, L, D) and the number of valid tokens per prompt (B,) int64."""

    embeddings: Tensor
    lengths: Tensor

    def __post_init__(self) -> None:
        if self.embeddings.ndim != 3:
            raise ValueError(
                f"TextEmbeddings.embeddings must be (B, L, D); got shape {tuple(self.embeddings.shape)}"
            )
        if self.lengths.shape != (self.embeddings.shape[0],) or self.lengths.dtype != torch.int64:
            raise ValueError(
                f"TextEmbeddings.lengths must be int64 of shape ({self.embeddings.shape[0]},); "
                f"got {self.lengths.dtype} {tuple(self.lengths.shape)}"
            )


@runtime_checkable
class VideoEncoder(Protocol):
    """What the shard writer needs from a model family (the Wan and CogVideoX ones live in qvgen.models)."""

    name: str
    """Encoder identity recorded in the shard manifest, e.g. "wan2.1-vae+umt5-xxl@<revision>"."""

    def encode_videos(self, videos: Tensor) -> LatentMoments:
        """Encode float videos (B, 3, F, H, W) in [-1, 1] into raw posterior moments."""
        ...

    def encode_prompts(self, prompts: Sequence[str]) -> TextEmbeddings:
        """Encode prompts into padded embeddings (B, L, D) and valid lengths (B,)."""
        ...
