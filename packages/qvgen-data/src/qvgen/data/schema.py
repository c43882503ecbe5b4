"""What lives on disk (the pydantic shard manifest) and what the loader yields (`LatentBatch`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import torch
from pydantic import Field, ValidationError
from torch import Tensor

from qvgen.core import Frozen, validation_summary

MANIFEST_NAME = "manifest.json"
"""File name of the dataset manifest inside a shard directory."""

TensorDType = Literal["bfloat16", "float16", "float32"]

# Entry names inside one webdataset sample: "<key>.<ext>".
TENSORS_EXT = "safetensors"
META_EXT = "json"
MEAN_KEY = "latents_mean"
LOGVAR_KEY = "latents_logvar"
TEXT_KEY = "text_embeddings"


class ShardFormatError(ValueError):
    """A shard or manifest on disk is missing, truncated, corrupted or disagrees with the manifest."""


Shape3 = tuple[int, int, int]
Shape4 = tuple[int, int, int, int]


class BucketStats(Frozen):
    """One resolution bucket: the video shape that was encoded and the latent shape it produced."""

    video_shape: Shape3
    """(frames, height, width) of the pixels fed to the encoder."""
    latent_shape: Shape4
    """(channels, frames, height, width) of the stored latent mean (and logvar)."""
    num_samples: Annotated[int, Field(ge=0)]


class ShardInfo(Frozen):
    """One finished shard: its file name, content hash and what it holds."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\.tar$")]
    """File name inside the shard directory, e.g. "shard-000003.tar": a bare name, never a path, so an
    edited manifest cannot point the reader at files elsewhere."""
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    num_bytes: Annotated[int, Field(ge=0)]
    num_samples: Annotated[int, Field(ge=0)]
    first_index: Annotated[int, Field(ge=0)]
    """Global index of the first source sample assigned to this shard."""
    num_skipped: Annotated[int, Field(ge=0)] = 0


class SkippedSample(Frozen):
    """A source sample left out under `on_error="skip"`, with the reason."""

    index: int
    source_id: str
    reason: str


class ShardManifest(Frozen):
    """The dataset manifest (`manifest.json`) written next to the shards."""

    schema_version: Literal[1] = 1
    family: str | None
    """Model family whose encoder produced the latents ("wan", "cogvideox"), if known."""
    encoder: str
    """`VideoEncoder.name` of the encoder that produced the latents."""
    has_logvar: bool
    latent_dtype: TensorDType
    text_dtype: TensorDType
    text_shape: tuple[int, int]
    """(max tokens L, embedding width D) of the stored text embeddings."""
    samples_per_shard: Annotated[int, Field(ge=1)]
    num_samples: Annotated[int, Field(ge=0)]
    num_skipped: Annotated[int, Field(ge=0)]
    buckets: tuple[BucketStats, ...]
    shards: tuple[ShardInfo, ...]
    skipped: tuple[SkippedSample, ...] = ()


def read_manifest(directory: str | Path) -> ShardManifest:
    """Load and validate `<directory>/manifest.json`; errors name the file."""
    path = Path(directory) / MANIFEST_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise ShardFormatError(
            f"{path}: no shard manifest; write the shards with qvgen.data.write_shards first"
        ) from e
    except UnicodeDecodeError as e:
        raise ShardFormatError(f"{path}: invalid shard manifest: not UTF-8 text (byte {e.start})") from e
    try:
        return ShardManifest.model_validate(json.loads(text))
    except ValidationError as e:  # one line, each field named
        raise ShardFormatError(f"{path}: invalid shard manifest: {validation_summary(e)}") from e
    except (ValueError, RecursionError) as e:  # JSONDecodeError, a 5000-digit int, deep nesting
        raise ShardFormatError(f"{path}: invalid shard manifest: {type(e).__name__}: {e}") from e


@dataclass(frozen=True, slots=True)
class LatentBatch:
    """A training/evaluation batch decoded from latent shards (all samples share one bucket)."""

    latents_mean: Tensor
    """(B, C, F, H, W) raw posterior mean, not normalised."""
    latents_logvar: Tensor | None
    """(B, C, F, H, W) raw posterior log-variance, or None for mean-only shards."""
    text_embeddings: Tensor
    """(B, L, D) padded prompt embeddings."""
    text_lengths: Tensor
    """(B,) int64 valid token counts."""
    captions: tuple[str, ...]
    ids: tuple[str, ...]

    @property
    def batch_size(self) -> int:
        return self.latents_mean.shape[0]

    def sample_latents(self, generator: torch.Generator | None = None) -> Tensor:
        """Draw z = mean + exp(logvar / 2) · ε in float32 (or return the mean if there is no logvar).

        Use one generator per rank (seed + rank) so ranks draw different noise (docs/method.md B3).
        The result is still un-normalised: the family applies its latent normalisation (docs/method.md B7).
        """
        mean = self.latents_mean.float()
        if self.latents_logvar is None:
            return mean
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=torch.float32)
        return mean + torch.exp(0.5 * self.latents_logvar.float()) * eps

    def to(self, device: torch.device | str, *, non_blocking: bool = False) -> LatentBatch:
        """The same batch with every tensor moved to `device`."""

        def move(t: Tensor) -> Tensor:
            return t.to(device, non_blocking=non_blocking)

        return LatentBatch(
            latents_mean=move(self.latents_mean),
            latents_logvar=None if self.latents_logvar is None else move(self.latents_logvar),
            text_embeddings=move(self.text_embeddings),
            text_lengths=move(self.text_lengths),
            captions=self.captions,
            ids=self.ids,
        )

    def pin_memory(self) -> LatentBatch:
        """Page-locked copy; `torch.utils.data.DataLoader(pin_memory=True)` calls this."""
        return LatentBatch(
            latents_mean=self.latents_mean.pin_memory(),
            latents_logvar=None if self.latents_logvar is None else self.latents_logvar.pin_memory(),
            text_embeddings=self.text_embeddings.pin_memory(),
            text_lengths=self.text_lengths.pin_memory(),
            captions=self.captions,
            ids=self.ids,
        )
