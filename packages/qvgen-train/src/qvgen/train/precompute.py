"""`qvgen-train precompute`: a family's VAE + text encoder wired into qvgen-data's shard writer."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from qvgen.data import IngestConfig, WriterConfig
from qvgen.models import ModelSpec
from qvgen.train.config import ConfigError, parse_override, set_dotted


class PrecomputeConfig(BaseModel):
    """Which videos to encode, with which model's encoders, into which shard folder."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    schema_version: Literal[1] = 1
    model: ModelSpec
    """The family and local checkpoint whose VAE and text encoder produce the latents."""
    ingest: IngestConfig
    writer: WriterConfig = WriterConfig()
    out_dir: Path
    """The shard folder (manifest.json, shard-*.tar, empty_prompt.safetensors)."""


def load_precompute_config(path: str | Path, overrides: Sequence[str] = ()) -> PrecomputeConfig:
    """Read and validate a precompute YAML, then apply `--set` overrides; errors name the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config file: {e.strerror or e}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a precompute config is a YAML mapping (model:, ingest:, out_dir:)")
    try:
        cfg = PrecomputeConfig.model_validate(data)
        if overrides:
            tree = cfg.model_dump(mode="json")
            for item in overrides:
                key, value = parse_override(item)
                set_dotted(tree, key, value, str(path))
            cfg = PrecomputeConfig.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(f"{path}: invalid precompute config\n{e}") from e
    return cfg


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
