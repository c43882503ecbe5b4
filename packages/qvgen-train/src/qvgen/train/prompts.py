"""The empty-prompt embedding used by caption dropout: precomputed next to the shards, or encoded once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from qvgen.core import atomic_write
from qvgen.data import read_manifest

EMPTY_PROMPT_FILE = "empty_prompt.safetensors"
"""Written by `qvgen-train precompute` into the shard folder: `embeddings` (1, L, D), `lengths` (1,)."""


def save_empty_prompt(path: Path, embeddings: Tensor, lengths: Tensor) -> None:
    """Write the empty prompt's embedding atomically (`qvgen.core.atomic_write`)."""
    tensors = {"embeddings": embeddings.detach().cpu().contiguous(), "lengths": lengths.detach().cpu()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))


def empty_prompt(cfg: Any, family: Any) -> tuple[Tensor, Tensor]:
    """("" embedding (1, L, D) float32, its length (1,) int64) for `cfg.data.shards`.

    Read from `<shards>/empty_prompt.safetensors` when precompute wrote it; otherwise encoded once with the
    family's text encoder from `cfg.model.checkpoint`. Its (L, D) must match the shards' text shape.
    """
    shards = Path(cfg.data.shards)
    expected = tuple(read_manifest(shards).text_shape)
    path = shards / EMPTY_PROMPT_FILE
    if path.is_file():
        tensors = load_file(str(path))
        embeddings, lengths = tensors["embeddings"], tensors["lengths"]
        source = str(path)
    else:
        with torch.no_grad():
            components = family.load(cfg.model.checkpoint, dtype=cfg.model.dtype)
            text = family.encoder(components, cfg.model).encode_prompts([""])
        embeddings, lengths = text.embeddings.cpu(), text.lengths.cpu()
        source = f"the text encoder of {cfg.model.checkpoint}"
    if tuple(embeddings.shape[1:]) != expected:
        raise ValueError(
            f"the empty-prompt embedding from {source} has shape {tuple(embeddings.shape[1:])}, but the shards in "
            f"{shards} hold text of shape {expected}; re-run `qvgen-train precompute` with the same model"
        )
    return embeddings.float(), lengths.to(torch.int64)
