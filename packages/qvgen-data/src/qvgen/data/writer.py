"""Shard writer: source clips → encoder → webdataset tar shards + per-shard records + manifest.

Sample i of the input goes to shard i // samples_per_shard; shard k is written by rank k % world_size.
Each shard is streamed to a temp file and renamed when complete, then its record (`shard-K.json`,
with the sha256 and the provenance of its inputs, see `shard_inputs`) is written the same way. A re-run
keeps every shard whose record matches its file and its current inputs, writes the missing ones (so a crash
loses and duplicates nothing), and refuses shards whose inputs changed (or, with `on_change="rebuild"`,
rewrites only those). The rank that finishes last writes the manifest.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Literal, TypeAlias, TypeVar

import safetensors.torch
import torch
import webdataset as wds
from pydantic import BaseModel, ValidationError
from torch import Tensor

from qvgen.core import Frozen, Provenance, atomic_write, atomic_write_text, remove_stale_temps
from qvgen.data.config import WriterConfig
from qvgen.data.encoder import VideoEncoder
from qvgen.data.ingest import BadSampleError, VideoRecord, nearest_bucket, read_video, video_size
from qvgen.data.schema import (
    LOGVAR_KEY,
    MANIFEST_NAME,
    MEAN_KEY,
    META_EXT,
    TENSORS_EXT,
    TEXT_KEY,
    BucketStats,
    ShardFormatError,
    ShardInfo,
    ShardManifest,
    SkippedSample,
    TensorDType,
)
from qvgen.data.shard_inputs import (
    SHARD_TOOL,
    WRITER_RECORD,
    claim_shard_dir,
    run_facts,
    shard_mismatch,
    shard_provenance,
)

logger = logging.getLogger(__name__)

_M = TypeVar("_M", bound=BaseModel)
_DTYPES: dict[TensorDType, torch.dtype] = {
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float32": torch.float32,
}


@dataclass(frozen=True, slots=True)
class EncodedSample:
    """A sample whose latents and text embeddings were computed elsewhere (no batch dimension)."""

    id: str
    caption: str
    latents_mean: Tensor
    """(C, F, H, W) raw posterior mean."""
    latents_logvar: Tensor | None
    text_embeddings: Tensor
    """(L, D) padded prompt embedding."""
    text_length: int
    video_shape: tuple[int, int, int]
    """(frames, height, width) of the pixels that were encoded."""


SourceSample: TypeAlias = VideoRecord | EncodedSample


@dataclass(frozen=True, slots=True)
class WriteSummary:
    """What one `write_shards` call did."""

    out_dir: Path
    written: tuple[str, ...]
    """Shards written by this call."""
    kept: tuple[str, ...]
    """Shards of this rank found finished on disk and kept (resume)."""
    num_samples: int
    """Samples written by this call."""
    skipped: tuple[SkippedSample, ...]
    """Samples this call skipped under `on_error="skip"`."""
    manifest: ShardManifest | None
    """The dataset manifest, once every rank has finished (None while others still write)."""
    rebuilt: tuple[str, ...] = ()
    """Shards of `written` that replaced a shard made from other inputs (`on_change="rebuild"`)."""


class _WriterRecord(Frozen):
    schema_version: Literal[1] = 1
    config: WriterConfig
    encoder: str
    world_size: int
    inputs: Provenance | None = None
    """The run-wide facts (encoder, writer settings); None in folders written before shards had provenance."""


class _ShardRecord(Frozen):
    schema_version: Literal[1] = 1
    info: ShardInfo
    text_shape: tuple[int, int] | None
    buckets: tuple[BucketStats, ...]
    skipped: tuple[SkippedSample, ...]
    inputs: Provenance | None = None
    """What the shard was made from (`shard_inputs.shard_provenance`); None in older folders."""


class _RankRecord(Frozen):
    schema_version: Literal[1] = 1
    num_source_samples: int
    num_shards: int


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


def write_shards(
    samples: Iterable[SourceSample],
    out_dir: str | Path,
    cfg: WriterConfig,
    encoder: VideoEncoder | None = None,
    *,
    encoder_name: str | None = None,
    rank: int = 0,
    world_size: int = 1,
    encoder_facts: Mapping[str, Any] | None = None,
    tool: str = SHARD_TOOL,
    inputs: Iterable[str | Path | None] = (),
) -> WriteSummary:
    """Encode and write this rank's shards of `samples` into `out_dir` (resumes a crashed run).

    `samples` must come in the same order on every rank and every re-run. `VideoRecord`s need `encoder`;
    `EncodedSample`s need `encoder_name` (the encoder identity recorded in the manifest) when `encoder`
    is None. Every rank passes the full sequence: other ranks' samples are skipped without decoding.

    `out_dir` is claimed for `tool` (`claim_shard_dir`: never a folder another tool or the user filled,
    never one overlapping `inputs`). Each shard records its inputs (rows, encoder name plus
    `encoder_facts`, writer settings); a finished shard is kept only if they are unchanged. Changed shards
    raise `qvgen.core.ProvenanceMismatch` naming each shard and fact, before any of them is touched, or are
    rewritten (only they) with `cfg.on_change="rebuild"`.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}); got {rank}")
    name = encoder.name if encoder is not None else encoder_name
    if not name:
        raise ValueError("write_shards needs `encoder` or, for EncodedSample input, `encoder_name`")
    out = claim_shard_dir(out_dir, tool, inputs, cfg.on_change)
    run = run_facts(cfg, name, encoder_facts)
    _check_writer_record(out, _WriterRecord(config=cfg, encoder=name, world_size=world_size,
                                            inputs=Provenance.of(tool, run)))  # fmt: skip

    written: list[str] = []
    kept: list[str] = []
    rebuilt: list[str] = []
    changed: list[tuple[str, list[str]]] = []
    skipped: list[SkippedSample] = []
    num_written = 0
    num_source = 0
    shard = 0
    stream = iter(samples)
    while chunk := list(islice(stream, cfg.samples_per_shard)):
        first = shard * cfg.samples_per_shard
        num_source = first + len(chunk)
        if shard % world_size == rank:
            expected = shard_provenance(tool, run, list(enumerate(chunk, start=first)))
            found = _finished_record(out, shard)
            changes = _changes(found, expected)
            if found is not None and not changes:
                kept.append(shard_name(shard))
            elif changes and cfg.on_change == "error":
                changed.append((shard_name(shard), changes))
            elif not changed:  # a refused rerun writes nothing after its first changed shard
                record = _write_shard(out, shard, first, chunk, cfg, encoder, expected)
                written.append(record.info.name)
                rebuilt += [record.info.name] if changes else []
                num_written += record.info.num_samples
                skipped += record.skipped
        shard += 1
    changed += _beyond_the_input(out, shard, rank, world_size, cfg.on_change == "rebuild")
    if changed:
        raise shard_mismatch(out, changed)
    atomic_write_text(
        out / f"rank-{rank:05d}-of-{world_size:05d}.json",
        _RankRecord(num_source_samples=num_source, num_shards=shard).model_dump_json(indent=1),
    )
    manifest = finalize_manifest(out) if _all_ranks_done(out, world_size) else None
    if skipped:
        logger.warning("%s: skipped %d bad sample(s) (see the manifest's `skipped`)", out, len(skipped))
    return WriteSummary(
        out, tuple(written), tuple(kept), num_written, tuple(skipped), manifest, rebuilt=tuple(rebuilt)
    )


def finalize_manifest(out_dir: str | Path) -> ShardManifest:
    """Merge every rank's shard records into `manifest.json` (needs all ranks finished)."""
    out = Path(out_dir)
    run = _load(out / WRITER_RECORD, _WriterRecord)
    ranks = [
        _load(out / f"rank-{r:05d}-of-{run.world_size:05d}.json", _RankRecord) for r in range(run.world_size)
    ]
    totals = {(r.num_source_samples, r.num_shards) for r in ranks}
    if len(totals) != 1:
        raise ShardFormatError(
            f"{out}: ranks saw different inputs {sorted(totals)}; pass the same samples to all"
        )
    _, num_shards = totals.pop()
    records = [_load(out / shard_name(k).replace(".tar", ".json"), _ShardRecord) for k in range(num_shards)]

    text_shapes = {r.text_shape for r in records if r.text_shape is not None}
    if len(text_shapes) > 1:
        raise ShardFormatError(f"{out}: shards disagree on the text embedding shape: {sorted(text_shapes)}")
    buckets: dict[tuple[int, int, int], BucketStats] = {}
    for r in records:
        for b in r.buckets:
            prev = buckets.get(b.video_shape)
            if prev is not None and prev.latent_shape != b.latent_shape:
                raise ShardFormatError(
                    f"{out}/{r.info.name}: bucket {b.video_shape} has latent shape {b.latent_shape}, "
                    f"other shards {prev.latent_shape}"
                )
            n = b.num_samples + (prev.num_samples if prev else 0)
            buckets[b.video_shape] = b.model_copy(update={"num_samples": n})
    skipped = tuple(s for r in records for s in r.skipped)
    cfg = run.config
    manifest = ShardManifest(
        family=cfg.family,
        encoder=run.encoder,
        has_logvar=cfg.store_logvar,
        latent_dtype=cfg.latent_dtype,
        text_dtype=cfg.text_dtype,
        text_shape=text_shapes.pop() if text_shapes else (0, 0),
        samples_per_shard=cfg.samples_per_shard,
        num_samples=sum(r.info.num_samples for r in records),
        num_skipped=len(skipped),
        buckets=tuple(buckets[k] for k in sorted(buckets)),
        shards=tuple(r.info for r in records),
        skipped=skipped,
    )
    atomic_write_text(out / MANIFEST_NAME, manifest.model_dump_json(indent=1))
    return manifest


# ---------------------------------------------------------------- one shard


def _write_shard(
    out: Path,
    shard: int,
    first: int,
    chunk: list[SourceSample],
    cfg: WriterConfig,
    encoder: VideoEncoder | None,
    inputs: Provenance,
) -> _ShardRecord:
    name = shard_name(shard)
    remove_stale_temps(out / name)
    skipped: list[SkippedSample] = []
    latent_of: dict[tuple[int, int, int], tuple[int, ...]] = {}  # video bucket -> latent shape
    counts: Counter[tuple[int, int, int]] = Counter()
    text_shape: tuple[int, ...] | None = None

    def write_tar(tmp: Path) -> None:
        nonlocal text_shape
        with tmp.open("wb") as f, wds.TarWriter(f, encoder=False, mtime=0) as tar:
            for start in range(0, len(chunk), cfg.encode_batch_size):
                indexed = list(enumerate(chunk[start : start + cfg.encode_batch_size], start=first + start))
                for index, sample in _encode(indexed, cfg, encoder, skipped):
                    _check_sample(sample, index, cfg, latent_of.get(sample.video_shape), text_shape)
                    text_shape = tuple(sample.text_embeddings.shape)
                    latent_of[sample.video_shape] = tuple(sample.latents_mean.shape)
                    counts[sample.video_shape] += 1
                    tar.write(_serialize(sample, index, cfg))

    atomic_write(out / name, write_tar)
    with (out / name).open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    info = ShardInfo(
        name=name,
        sha256=digest,
        num_bytes=(out / name).stat().st_size,
        num_samples=counts.total(),
        first_index=first,
        num_skipped=len(skipped),
    )
    record = _ShardRecord(
        info=info,
        text_shape=text_shape,  # type: ignore[arg-type]
        buckets=tuple(
            BucketStats(video_shape=v, latent_shape=latent_of[v], num_samples=n)  # type: ignore[arg-type]
            for v, n in counts.items()
        ),
        skipped=tuple(skipped),
        inputs=inputs,
    )
    atomic_write_text(out / name.replace(".tar", ".json"), record.model_dump_json(indent=1))
    logger.info("%s: wrote %s (%d samples, %d skipped)", out, name, info.num_samples, len(skipped))
    return record


def _encode(
    indexed: list[tuple[int, SourceSample]],
    cfg: WriterConfig,
    encoder: VideoEncoder | None,
    skipped: list[SkippedSample],
) -> Iterator[tuple[int, EncodedSample]]:
    """Yield (index, EncodedSample) in input order; bad samples are raised or recorded in `skipped`."""
    ready: dict[int, EncodedSample] = {}
    videos: dict[tuple[int, int, int], list[tuple[int, VideoRecord, Tensor]]] = {}
    for index, sample in indexed:
        try:
            if not sample.caption.strip():
                raise BadSampleError("empty caption")
            if isinstance(sample, EncodedSample):
                ready[index] = sample
                continue
            if encoder is None:
                raise ValueError("write_shards got VideoRecord input but no encoder; pass `encoder`")
            pixels = _load_pixels(sample, cfg)
        except BadSampleError as e:  # the sample is named here, once (its reason does not repeat it)
            if cfg.on_error == "raise":
                raise BadSampleError(f"sample {index} (id {sample.id!r}): {e}") from e
            logger.warning("skipping sample %d (id %r): %s", index, sample.id, e)
            skipped.append(SkippedSample(index=index, source_id=sample.id, reason=str(e)))
            continue
        videos.setdefault(tuple(pixels.shape[1:]), []).append((index, sample, pixels))  # type: ignore[arg-type]
    for shape, group in videos.items():
        assert encoder is not None
        with torch.inference_mode():
            moments = encoder.encode_videos(torch.stack([p for _, _, p in group]))
            text = encoder.encode_prompts([s.caption for _, s, _ in group])
        n = len(group)
        if moments.mean.shape[0] != n or text.embeddings.shape[0] != n:
            raise ValueError(
                f"encoder {encoder.name!r} returned batch sizes {moments.mean.shape[0]} (latents) and "
                f"{text.embeddings.shape[0]} (text) for {n} inputs"
            )
        for i, (index, sample, _) in enumerate(group):
            ready[index] = EncodedSample(
                id=sample.id,
                caption=sample.caption,
                latents_mean=moments.mean[i],
                latents_logvar=None if moments.logvar is None else moments.logvar[i],
                text_embeddings=text.embeddings[i],
                text_length=int(text.lengths[i]),
                video_shape=shape,
            )
    for index, _ in indexed:
        if index in ready:
            yield index, ready[index]


def _load_pixels(sample: VideoRecord, cfg: WriterConfig) -> Tensor:
    if isinstance(sample.video, Tensor):
        v = sample.video
        if v.ndim != 4 or v.shape[0] != 3:
            raise BadSampleError(f"video tensor must be (3, F, H, W), got {tuple(v.shape)}")
        if not bool(torch.isfinite(v).all()) or float(v.abs().max()) > 1.0:
            raise BadSampleError("video tensor must be finite and in [-1, 1]")
        return v.float()
    if not sample.video.is_file():
        raise BadSampleError(f"{sample.video}: video file not found")
    height, width = video_size(sample.video)
    return read_video(sample.video, nearest_bucket(height, width, cfg.buckets), cfg.sampling)


def _check_sample(
    s: EncodedSample,
    index: int,
    cfg: WriterConfig,
    bucket_latent: tuple[int, ...] | None,
    text_shape: tuple[int, ...] | None,
) -> None:
    """Shapes that the manifest will promise: same per bucket, one text shape for the whole shard."""
    where = f"sample {index} (id {s.id!r})"
    if s.latents_mean.ndim != 4 or s.text_embeddings.ndim != 2:
        raise ValueError(
            f"{where}: latents must be (C, F, H, W) and text (L, D); got {tuple(s.latents_mean.shape)} "
            f"and {tuple(s.text_embeddings.shape)}"
        )
    if cfg.store_logvar and s.latents_logvar is None:
        raise ValueError(f"{where}: the encoder gave no logvar; set WriterConfig.store_logvar=False")
    if s.latents_logvar is not None and s.latents_logvar.shape != s.latents_mean.shape:
        raise ValueError(
            f"{where}: logvar shape {tuple(s.latents_logvar.shape)} != mean {tuple(s.latents_mean.shape)}"
        )
    if not 0 <= s.text_length <= s.text_embeddings.shape[0]:
        raise ValueError(f"{where}: text_length {s.text_length} outside [0, {s.text_embeddings.shape[0]}]")
    if text_shape is not None and tuple(s.text_embeddings.shape) != text_shape:
        raise ValueError(
            f"{where}: text embeddings {tuple(s.text_embeddings.shape)}, earlier samples {text_shape}"
        )
    if bucket_latent is not None and tuple(s.latents_mean.shape) != bucket_latent:
        raise ValueError(
            f"{where}: bucket {s.video_shape} gave latents {tuple(s.latents_mean.shape)}, "
            f"earlier samples {bucket_latent}"
        )


def _serialize(s: EncodedSample, index: int, cfg: WriterConfig) -> dict[str, object]:
    latent_dtype, text_dtype = _DTYPES[cfg.latent_dtype], _DTYPES[cfg.text_dtype]
    tensors = {
        MEAN_KEY: s.latents_mean.detach().to("cpu", latent_dtype).contiguous(),
        TEXT_KEY: s.text_embeddings.detach().to("cpu", text_dtype).contiguous(),
    }
    if cfg.store_logvar:
        assert s.latents_logvar is not None
        tensors[LOGVAR_KEY] = s.latents_logvar.detach().to("cpu", latent_dtype).contiguous()
    meta = {
        "id": s.id,
        "caption": s.caption,
        "index": index,
        "text_length": s.text_length,
        "video_shape": list(s.video_shape),
    }
    return {
        "__key__": f"{index:09d}",
        TENSORS_EXT: safetensors.torch.save(tensors),
        META_EXT: json.dumps(meta, ensure_ascii=False).encode(),
    }


# ---------------------------------------------------------------- records on disk


def _finished_record(out: Path, shard: int) -> _ShardRecord | None:
    """The record of shard `shard` when it and its tar exist and agree (sha256); None otherwise (a crash,
    or a damaged or deleted file: the shard is written again)."""
    name = shard_name(shard)
    record_path = out / name.replace(".tar", ".json")
    if not (out / name).is_file() or not record_path.is_file():
        return None
    try:
        record = _ShardRecord.model_validate_json(record_path.read_text())
    except ValidationError:
        return None
    with (out / name).open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return record if record.info.sha256 == digest else None


def _changes(found: _ShardRecord | None, expected: Provenance) -> list[str]:
    """How a finished shard's recorded inputs differ from `expected` (empty: unchanged or not finished)."""
    if found is None:
        return []
    if found.inputs is None:
        return ["no record of its inputs (written by an older qvgen)"]
    return found.inputs.changes(expected)


def _beyond_the_input(
    out: Path, num_shards: int, rank: int, world_size: int, remove: bool
) -> list[tuple[str, list[str]]]:
    """This rank's finished shards numbered past the current input (its rows are gone): removed when
    `remove` (rebuild), else reported as changed."""
    stale = []
    for index in _recorded_shards(out):
        if index < num_shards or index % world_size != rank:
            continue
        name = shard_name(index)
        if remove:
            (out / name).unlink(missing_ok=True)
            (out / name.replace(".tar", ".json")).unlink()
            logger.info("%s: removed %s (the input has %d shard(s) now)", out, name, num_shards)
        else:
            stale.append((name, [f"its rows are no longer in the input (which fills {num_shards} shard(s))"]))
    return stale


def _recorded_shards(out: Path) -> list[int]:
    """Indices of the shards that have a record in `out`, ascending."""
    stems = (p.stem.removeprefix("shard-") for p in out.glob("shard-*.json"))
    return sorted(int(s) for s in stems if s.isdigit())


def _check_writer_record(out: Path, record: _WriterRecord) -> None:
    """Refuse a rerun whose run-wide facts (encoder, writer settings) changed while finished shards exist,
    before anything is encoded (unless `on_change="rebuild"`); then record the current run."""
    path = out / WRITER_RECORD
    if path.is_file() and record.config.on_change == "error":
        found = _load(path, _WriterRecord)
        assert record.inputs is not None
        changes = [] if found.inputs is None else found.inputs.changes(record.inputs)
        finished = [shard_name(k) for k in _recorded_shards(out)]
        if changes and finished:
            raise shard_mismatch(out, [(s, changes) for s in finished])
    atomic_write_text(path, record.model_dump_json(indent=1))


def _all_ranks_done(out: Path, world_size: int) -> bool:
    return all((out / f"rank-{r:05d}-of-{world_size:05d}.json").is_file() for r in range(world_size))


def _load(path: Path, model: type[_M]) -> _M:
    try:
        return model.model_validate_json(path.read_text())
    except FileNotFoundError as e:
        raise ShardFormatError(f"{path}: missing; the writer for it has not finished (re-run it)") from e
    except ValidationError as e:
        raise ShardFormatError(f"{path}: invalid record: {e}") from e
