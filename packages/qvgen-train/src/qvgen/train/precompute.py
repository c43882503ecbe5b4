"""`qvgen-train precompute`: a family's VAE + text encoder wired into qvgen-data's shard writer."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from qvgen import core
from qvgen.core import Frozen
from qvgen.data import IngestConfig, WriterConfig
from qvgen.models import ModelSpec


class PrecomputeConfig(Frozen):
    """Which videos to encode, with which model's encoders, into which shard folder."""

    schema_version: Literal[1] = 1
    model: ModelSpec
    """The family and local checkpoint whose VAE and text encoder produce the latents."""
    ingest: IngestConfig
    writer: WriterConfig = WriterConfig()
    out_dir: Path
    """The shard folder (manifest.json, shard-*.tar, empty_prompt.safetensors)."""


def load_precompute_config(path: str | Path, overrides: Sequence[str] = ()) -> PrecomputeConfig:
    """Read a precompute YAML with `--set` overrides (`qvgen.core.load_config`); errors name the file."""
    return core.load_config(PrecomputeConfig, path, overrides)


def precompute(cfg: PrecomputeConfig) -> Path:
    """Encode every clip of `cfg.ingest` into latent shards (resumable, one rank's share per process).

    Also writes the empty prompt's embedding next to the shards, for caption dropout during training.
    """
    import torch
    from accelerate import PartialState

    from qvgen.data import read_caption_table, write_shards
    from qvgen.models import get_family, load_components
    from qvgen.train.prompts import EMPTY_PROMPT_FILE, save_empty_prompt

    state = PartialState()
    family = get_family(cfg.model.family)
    components = load_components(cfg.model)
    components.vae.to(state.device)
    components.text_encoder.to(state.device)
    encoder = family.encoder(components, cfg.model)
    writer_cfg = (
        cfg.writer if cfg.writer.family else cfg.writer.model_copy(update={"family": cfg.model.family})
    )
    write_shards(
        read_caption_table(cfg.ingest),
        cfg.out_dir,
        writer_cfg,
        encoder,
        rank=state.process_index,
        world_size=state.num_processes,
    )
    if state.is_main_process:
        with torch.no_grad():
            empty = encoder.encode_prompts([""])
        save_empty_prompt(Path(cfg.out_dir) / EMPTY_PROMPT_FILE, empty.embeddings, empty.lengths)
    state.wait_for_everyone()
    return Path(cfg.out_dir)
