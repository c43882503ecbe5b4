"""What each latent shard was made from, and the check a rerun makes before it keeps a shard.

Every shard record (`shard-K.json`) carries a `qvgen.core.Provenance` of its inputs:
- run-wide facts, the same for every shard: `encoder` (the `VideoEncoder.name`), `encoder.*` (what the
  caller adds: the model's dtype, text length, tokenizer fingerprint, ...) and `writer.*` (each writer
  setting that changes what is stored: buckets, frame sampling, dtypes, samples per shard, ...);
- per row (the row's index in the input sequence, i.e. in the caption table): `row N id`, `row N caption`
  and `row N video` (the video file's `qvgen.core.file_fingerprint`, or the sha256 of a pixel tensor or of an
  `EncodedSample`'s tensors).

A rerun keeps a finished shard only when these facts are unchanged; a changed shard is an error listing the
shard and each changed fact, or (with `WriterConfig.on_change="rebuild"`) is rewritten, alone.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from qvgen.core import (
    Provenance,
    ProvenanceMismatch,
    check_disjoint,
    claim_output_dir,
    file_fingerprint,
    mark_output_dir,
    read_marker,
)
from qvgen.data.config import OnChange, WriterConfig
from qvgen.data.ingest import VideoRecord
from qvgen.data.schema import ShardFormatError

if TYPE_CHECKING:
    from qvgen.data.writer import SourceSample

SHARD_TOOL = "qvgen.data.write_shards"
"""The tool name `write_shards` marks its folders with unless the caller names another one."""

WRITER_RECORD = "writer.json"

REBUILD_HINT = (
    "to rebuild only the changed shards rerun with writer.on_change: rebuild "
    "(`qvgen-train precompute --overwrite`), or write into a new folder"
)

_WRITER_FACTS = (
    "buckets",
    "sampling",
    "samples_per_shard",
    "store_logvar",
    "latent_dtype",
    "text_dtype",
    "family",
    "on_error",
)
"""`WriterConfig` fields that change what a shard holds (not `encode_batch_size`, nor `on_change`)."""


def claim_shard_dir(
    out_dir: str | os.PathLike[str],
    tool: str = SHARD_TOOL,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    on_change: OnChange = "error",
) -> Path:
    """Make `out_dir` `tool`'s shard folder (`qvgen.core.claim_output_dir`) and return it resolved.

    Refused: a folder equal to, inside or containing one of `inputs`; a non-empty folder not written by
    `tool`. A shard folder written before shards recorded their inputs (a `writer.json` and no marker) is
    refused too, unless `on_change="rebuild"`: then it is taken over and every shard is rebuilt.
    """
    target = check_disjoint(out_dir, inputs, "shard folder")
    if (target / WRITER_RECORD).is_file() and read_marker(target) is None:
        if on_change != "rebuild":
            raise ShardFormatError(
                f"{target}: these shards were written by an older qvgen that did not record each shard's "
                "inputs, so they cannot be checked against the current captions, videos and encoder; rebuild "
                "them with writer.on_change: rebuild (`qvgen-train precompute --overwrite`), or write into a "
                "new folder"
            )
        mark_output_dir(target, tool)
    return claim_output_dir(target, tool, inputs, what="shard folder")


def run_facts(
    cfg: WriterConfig, encoder: str, encoder_facts: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The facts every shard of a run shares: the encoder's identity and the writer settings that matter."""
    facts: dict[str, Any] = {"encoder": encoder}
    facts |= {f"encoder.{k}": v for k, v in (encoder_facts or {}).items()}
    facts |= {f"writer.{k}": getattr(cfg, k) for k in _WRITER_FACTS}
    return facts


def shard_provenance(
    tool: str, run: Mapping[str, Any], rows: Sequence[tuple[int, SourceSample]]
) -> Provenance:
    """The provenance a shard of `rows` ((index, sample) pairs) written under `run` facts must carry."""
    facts = dict(run)
    for index, sample in rows:
        facts[f"row {index} id"] = sample.id
        facts[f"row {index} caption"] = sample.caption
        facts[f"row {index} video"] = _content_fingerprint(sample)
    return Provenance.of(tool, facts)


def shard_mismatch(out: Path, changed: Sequence[tuple[str, Sequence[str]]]) -> ProvenanceMismatch:
    """One error for every changed shard: shards with the same changes share one entry."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for shard, changes in changed:
        groups.setdefault(tuple(changes), []).append(shard)
    entries = []
    for changes, shards in groups.items():
        names = ", ".join(shards[:4]) + (f" and {len(shards) - 4} more" if len(shards) > 4 else "")
        facts = "; ".join(changes[:6]) + (f"; {len(changes) - 6} more fact(s)" if len(changes) > 6 else "")
        entries.append(f"{names}: {facts}")
    if len(entries) > 6:
        entries = [*entries[:6], f"{len(entries) - 6} more shard(s) or group(s) of shards"]
    return ProvenanceMismatch(out, entries, REBUILD_HINT)


def _content_fingerprint(sample: SourceSample) -> str:
    if isinstance(sample, VideoRecord):
        if isinstance(sample.video, Tensor):
            return "tensor:" + _tensors_sha256([sample.video])
        if not sample.video.is_file():
            return "missing"
        return file_fingerprint(sample.video)
    parts = [sample.latents_mean, sample.text_embeddings]
    parts += [] if sample.latents_logvar is None else [sample.latents_logvar]
    extra = f"{sample.text_length}:{sample.video_shape}:{sample.latents_logvar is None}"
    return "latents:" + _tensors_sha256(parts, extra)


def _tensors_sha256(tensors: Sequence[Tensor], extra: str = "") -> str:
    h = hashlib.sha256(extra.encode())
    for t in tensors:
        t = t.detach().to("cpu").contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
