"""`qvgen-train precompute`: a family's VAE + text encoder wired into qvgen-data's shard writer.

The shard folder is claimed for this tool (never a folder the user or another tool filled, never one
overlapping the videos, the captions table or the model); each shard records its rows and the encoder,
so a rerun keeps unchanged shards and refuses (or, with `--overwrite`, rebuilds) the changed ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from qvgen import core
from qvgen.core import Frozen
from qvgen.data import IngestConfig, WriterConfig
from qvgen.models import ModelSpec

PRECOMPUTE_TOOL = "qvgen-train precompute"
"""The tool name that marks a shard folder written by `precompute` (and in each shard's provenance)."""


class PrecomputeConfig(Frozen):
    """Which videos to encode, with which model's encoders, into which shard folder."""

    schema_version: Literal[1] = 1
    model: ModelSpec
    """The family and local checkpoint whose VAE and text encoder produce the latents."""
    ingest: IngestConfig
    writer: WriterConfig = WriterConfig()
    out_dir: Path
    """The shard folder (manifest.json, shard-*.tar, empty_prompt.safetensors): new, empty, or written by
    an earlier precompute; never inside or around the videos, the captions table or the model folder.
    Shards whose inputs changed since are refused unless `writer.on_change: rebuild` (`--overwrite`)."""


def load_precompute_config(path: str | Path, overrides: Sequence[str] = ()) -> PrecomputeConfig:
    """Read a precompute YAML with `--set` overrides (`qvgen.core.load_config`); errors name the file."""
    return core.load_config(PrecomputeConfig, path, overrides)


def precompute(cfg: PrecomputeConfig) -> Path:
    """Encode every clip of `cfg.ingest` into latent shards (resumable, one rank's share per process).

    Also writes the empty prompt's embedding next to the shards, for caption dropout during training.
    A rerun keeps the shards whose rows and encoder are unchanged; changed ones raise
    `qvgen.core.ProvenanceMismatch` (each shard and fact named) unless `cfg.writer.on_change == "rebuild"`.
    """
    import torch
    from accelerate import PartialState

    from qvgen.data import claim_shard_dir, finalize_manifest, read_caption_table, write_shards
    from qvgen.models import get_family, load_components
    from qvgen.train.prompts import EMPTY_PROMPT_FILE, save_empty_prompt

    state = PartialState()
    inputs = _precompute_inputs(cfg)
    if state.is_main_process:  # refuse a wrong folder before loading any model
        claim_shard_dir(cfg.out_dir, PRECOMPUTE_TOOL, inputs, cfg.writer.on_change)
    state.wait_for_everyone()
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
        encoder_facts=_encoder_facts(cfg.model),
        tool=PRECOMPUTE_TOOL,
        inputs=inputs,
    )
    if state.is_main_process:
        with torch.no_grad():
            empty = encoder.encode_prompts([""])
        save_empty_prompt(Path(cfg.out_dir) / EMPTY_PROMPT_FILE, empty.embeddings, empty.lengths)
    state.wait_for_everyone()
    if state.is_main_process and state.num_processes > 1:  # all ranks done (old rank records may linger)
        finalize_manifest(cfg.out_dir)
    return Path(cfg.out_dir)


def _precompute_inputs(cfg: PrecomputeConfig) -> list[Path]:
    """What the shard folder must stay clear of: the videos folder, the captions table, the model folder."""
    videos = cfg.ingest.video_root if cfg.ingest.video_root is not None else cfg.ingest.captions.parent
    return [p for p in (videos, cfg.ingest.captions, cfg.model.checkpoint) if p is not None]


def _encoder_facts(spec: ModelSpec) -> dict[str, Any]:
    """What, besides the encoder's name (its config and weights digests and text length), makes the
    stored latents and embeddings what they are: the family, the dtype, the text length setting, the
    tokenizer files."""
    facts: dict[str, Any] = {
        "model.family": spec.family,
        "model.dtype": spec.dtype,
        "model.max_text_length": spec.max_text_length,
    }
    tokenizer = None if spec.checkpoint is None else spec.checkpoint / "tokenizer"
    if tokenizer is not None and tokenizer.is_dir():
        facts["model.tokenizer"] = core.tree_fingerprint(tokenizer)
    return facts
