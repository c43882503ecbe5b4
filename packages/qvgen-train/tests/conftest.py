"""Fixtures for qvgen-train tests: tiny latent shards that fit the tiny Wan / CogVideoX checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from qvgen.data import EncodedSample, WriterConfig, write_shards


def write_tiny_shards(out: Path, family: str, n: int = 8, seed: int = 0) -> Path:
    """n random samples shaped for the tiny `family`: raw latents (16, 3, 8, 8), text (16, 64)."""
    g = torch.Generator().manual_seed(seed)
    samples = [
        EncodedSample(
            id=f"s{i}",
            caption=f"clip {i}",
            latents_mean=torch.randn(16, 3, 8, 8, generator=g),
            latents_logvar=torch.full((16, 3, 8, 8), -3.0),
            text_embeddings=torch.randn(16, 64, generator=g),
            text_length=4 + i % 8,
            video_shape=(9, 64, 64),
        )
        for i in range(n)
    ]
    cfg = WriterConfig(samples_per_shard=4, family=family, latent_dtype="float32", text_dtype="float32")
    write_shards(samples, out, cfg, encoder_name=f"test-{family}")
    return out


@pytest.fixture(scope="session")
def wan_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_shards(tmp_path_factory.mktemp("wan-shards"), "wan")


@pytest.fixture(scope="session")
def cog_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_shards(tmp_path_factory.mktemp("cog-shards"), "cogvideox")


def _run_dict(family: str, shards: Path, out: Path, **sections: Any) -> dict[str, Any]:
    """A small valid RunConfig as a dict (tiny checkpoint, QVGen Φ with a 2-step period)."""
    from qvgen.models.testing import tiny_checkpoint

    cfg: dict[str, Any] = {
        "model": {"family": family, "checkpoint": str(tiny_checkpoint(family)), "dtype": "float32"},
        "aux": {"decay": {"initial_rank": 4, "period": 2}},
        "data": {"shards": str(shards), "batch_size": 2, "num_workers": 0, "shuffle_buffer": 4},
        "train": {"max_steps": 7, "caption_dropout": 0.0, "seed": 3},
        "logging": {"progress_bar": False},
        "checkpoint": {"every_n_steps": None},
        "output_dir": str(out),
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


@pytest.fixture(scope="session")
def run_dict() -> Any:
    """`run_dict(family, shards, out, **sections)` → a small valid RunConfig dict."""
    return _run_dict
