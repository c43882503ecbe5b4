"""Shared fixtures: a small procedural video dataset on disk and latent shards written from it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from qvgen.data import (
    Bucket,
    EncodedSample,
    IngestConfig,
    WriterConfig,
    read_caption_table,
    write_procedural_dataset,
    write_shards,
)
from qvgen.data.testing import FakeEncoder

FRAMES, SIZE = 9, 32
BUCKET = Bucket(frames=FRAMES, height=SIZE, width=SIZE)


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 procedural mp4 clips (9 frames, 32×32) + captions.csv."""
    out = tmp_path_factory.mktemp("videos")
    write_procedural_dataset(out, 6, seed=7, frames=FRAMES, height=SIZE, width=SIZE)
    return out


@pytest.fixture(scope="session")
def video_shards(video_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 6 clips encoded by FakeEncoder into shards of 2 samples."""
    out = tmp_path_factory.mktemp("shards")
    records = read_caption_table(IngestConfig(captions=video_dir / "captions.csv"))
    cfg = WriterConfig(buckets=(BUCKET,), samples_per_shard=2, encode_batch_size=2)
    write_shards(records, out, cfg, FakeEncoder())
    return out


@pytest.fixture
def make_samples() -> Callable[..., list[EncodedSample]]:
    """Factory of random float32 EncodedSamples (latents (4, F, H/8, W/8), text (6, 8))."""
    return _encoded_samples


def _encoded_samples(
    n: int, *, shapes: tuple[tuple[int, int, int], ...] = ((5, 16, 16),)
) -> list[EncodedSample]:
    gen = torch.Generator().manual_seed(n)
    out = []
    for i in range(n):
        f, h, w = shapes[i % len(shapes)]
        latent = (4, f, h // 8, w // 8)
        out.append(
            EncodedSample(
                id=f"clip/{i}.mp4",
                caption=f"caption number {i}",
                latents_mean=torch.randn(latent, generator=gen),
                latents_logvar=torch.randn(latent, generator=gen) - 3,
                text_embeddings=torch.randn(6, 8, generator=gen),
                text_length=i % 7,
                video_shape=(f, h, w),
            )
        )
    return out
