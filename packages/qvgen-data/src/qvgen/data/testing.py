"""Fakes for any package's tests: a deterministic `VideoEncoder` with no weights to load."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from qvgen.data.encoder import LatentMoments, TextEmbeddings


def _word_seed(word: str) -> int:
    return int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little") & ((1 << 63) - 1)


class FakeEncoder:
    """A deterministic stand-in for a family's VAE + text encoder (implements `VideoEncoder`).

    Videos (B, 3, F, H, W) → moments (B, `latent_channels`, (F-1)//t+1, H/s, W/s): every t-th frame,
    s×s average pooling, then a fixed channel mix; logvar is a fixed affine function of the mean.
    Prompts → one fixed random vector per lower-cased word (seeded by the word's sha256), zero-padded
    to `max_length`; length = number of words (capped at `max_length`).
    """

    def __init__(
        self,
        *,
        latent_channels: int = 16,
        temporal_stride: int = 4,
        spatial_stride: int = 8,
        max_length: int = 16,
        text_dim: int = 32,
        with_logvar: bool = True,
    ) -> None:
        self.latent_channels = latent_channels
        self.temporal_stride = temporal_stride
        self.spatial_stride = spatial_stride
        self.max_length = max_length
        self.text_dim = text_dim
        self.with_logvar = with_logvar
        self.mix = torch.randn(latent_channels, 3, generator=torch.Generator().manual_seed(1234))
        self.name = (
            f"fake-encoder(c={latent_channels},t={temporal_stride},s={spatial_stride},"
            f"L={max_length},D={text_dim},logvar={with_logvar})"
        )

    def encode_videos(self, videos: Tensor) -> LatentMoments:
        if videos.ndim != 5 or videos.shape[1] != 3:
            raise ValueError(f"FakeEncoder expects videos (B, 3, F, H, W); got {tuple(videos.shape)}")
        b, _, _, h, w = videos.shape
        s = self.spatial_stride
        if h % s or w % s:
            raise ValueError(f"FakeEncoder needs H and W divisible by {s}; got {h}×{w}")
        x = videos.float()[:, :, :: self.temporal_stride]
        frames = x.shape[2]
        x = F.avg_pool2d(x.permute(0, 2, 1, 3, 4).reshape(b * frames, 3, h, w), s)
        x = x.reshape(b, frames, 3, h // s, w // s).permute(0, 2, 1, 3, 4)
        mean = torch.einsum("oc,bcfhw->bofhw", self.mix, x)
        logvar = -4.0 + 0.25 * torch.tanh(mean) if self.with_logvar else None
        return LatentMoments(mean=mean, logvar=logvar)

    def encode_prompts(self, prompts: Sequence[str]) -> TextEmbeddings:
        out = torch.zeros(len(prompts), self.max_length, self.text_dim)
        lengths = torch.zeros(len(prompts), dtype=torch.int64)
        for i, prompt in enumerate(prompts):
            words = prompt.lower().split()[: self.max_length]
            for j, word in enumerate(words):
                gen = torch.Generator().manual_seed(_word_seed(word))
                out[i, j] = torch.randn(self.text_dim, generator=gen)
            lengths[i] = len(words)
        return TextEmbeddings(embeddings=out, lengths=lengths)
