"""Loader: latent shards → webdataset pipeline → bucketed `LatentBatch`es.

train mode: `wds.ResampledShards` seeded per (seed, rank, worker), an infinite stream, webdataset's
shuffle buffer. eval mode: this rank's slice of the shard list, `wds.split_by_worker`, every sample
exactly once, no shuffling. Both check each shard's sample count (and optionally its sha256) against
the manifest and each sample's shapes and dtypes, so truncated or corrupted shards never pass silently.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
import webdataset as wds
from torch import Tensor
from webdataset.tariterators import group_by_keys, tar_file_expander

from qvgen.data.config import LoaderConfig, OnError
from qvgen.data.schema import (
    LOGVAR_KEY,
    MEAN_KEY,
    META_EXT,
    TENSORS_EXT,
    TEXT_KEY,
    LatentBatch,
    ShardFormatError,
    ShardManifest,
    read_manifest,
)

logger = logging.getLogger(__name__)


def make_loader(cfg: LoaderConfig, *, rank: int = 0, world_size: int = 1) -> Iterable[LatentBatch]:
    """Batches for one rank: a `wds.WebLoader` over `cfg.num_workers` workers (in-process when 0)."""
    pipeline = make_pipeline(cfg, rank=rank, world_size=world_size)
    if cfg.num_workers == 0:
        return pipeline
    return wds.WebLoader(
        pipeline,
        batch_size=None,
        num_workers=cfg.num_workers,
        prefetch_factor=cfg.prefetch_factor,
        pin_memory=cfg.pin_memory,
        persistent_workers=cfg.mode == "train",
    )


def make_pipeline(cfg: LoaderConfig, *, rank: int = 0, world_size: int = 1) -> wds.DataPipeline:
    """The webdataset pipeline behind `make_loader` (iterate it directly for in-process loading)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}); got {rank}")
    manifest = read_manifest(cfg.shards)
    root = Path(cfg.shards)
    shards = [s for s in manifest.shards if s.num_samples > 0]
    if not shards:
        raise ShardFormatError(f"{root}: the manifest lists no samples")
    urls = [str(root / s.name) for s in shards]
    expected = {str(root / s.name): (s.num_samples, s.sha256) for s in shards}
    errors = _Errors(cfg.on_error)
    stages: list[Any]
    if cfg.mode == "train":
        seed_fn = functools.partial(_worker_seed, cfg.seed, rank)
        stages = [wds.ResampledShards(urls, seed=cfg.seed, worker_seed=seed_fn, deterministic=True)]
    else:
        mine = urls[rank::world_size]
        if not mine:
            raise ValueError(
                f"{root}: rank {rank} of {world_size} gets no shard (eval splits whole shards and there are "
                f"{len(urls)}); write smaller shards (WriterConfig.samples_per_shard) or use fewer ranks"
            )
        stages = [wds.SimpleShardList(mine), wds.split_by_worker]
    stages.append(functools.partial(_read_shards, expected=expected, verify=cfg.verify_sha256, errors=errors))
    if cfg.mode == "train" and cfg.shuffle_buffer > 0:
        stages.append(functools.partial(_shuffle, bufsize=cfg.shuffle_buffer, seed=cfg.seed, rank=rank))
    stages.append(functools.partial(_decode, manifest=manifest, errors=errors))
    keep_partial = cfg.mode == "eval" or not cfg.drop_last
    stages.append(functools.partial(_bucket_batches, batch_size=cfg.batch_size, keep_partial=keep_partial))
    return wds.DataPipeline(*stages)


def _worker_seed(seed: int, rank: int) -> int:
    info = torch.utils.data.get_worker_info()
    return hash((seed, rank, info.id if info is not None else 0)) & 0x7FFFFFFF


def _shuffle(
    src: Iterator[dict[str, Any]], *, bufsize: int, seed: int, rank: int
) -> Iterator[dict[str, Any]]:
    rng = random.Random(_worker_seed(seed, rank))
    yield from wds.shuffle(bufsize, initial=bufsize, rng=rng)(src)


@dataclass
class _Errors:
    """Raise on bad data, or (on_error="skip") log, count and continue; logs a summary per pass."""

    policy: OnError
    counts: dict[str, int] = field(default_factory=dict)

    def bad(self, kind: str, message: str, n: int = 1) -> None:
        if self.policy == "raise":
            raise ShardFormatError(message)
        self.counts[kind] = self.counts.get(kind, 0) + n
        logger.warning("skipping: %s", message)

    def summary(self) -> None:
        if self.counts:
            logger.warning(
                "loader skipped %s this pass", ", ".join(f"{n} {k}" for k, n in self.counts.items())
            )
            self.counts.clear()


def _read_shards(
    src: Iterator[dict[str, Any]],
    *,
    expected: dict[str, tuple[int, str]],
    verify: bool,
    errors: _Errors,
) -> Iterator[dict[str, Any]]:
    """Expand shard urls into raw samples with webdataset's tar reader, checking counts (and hashes)."""
    for item in src:
        url = item["url"]
        want, sha = expected[url]
        if verify:
            with open(url, "rb") as f:
                got = hashlib.file_digest(f, "sha256").hexdigest()
            if got != sha:
                errors.bad("samples in corrupted shards", f"{url}: sha256 {got} != manifest {sha}", want)
                continue
        problems: list[BaseException] = []

        def stop(exn: BaseException, problems: list[BaseException] = problems) -> bool:
            problems.append(exn)
            return False  # stop reading this shard

        n = 0
        with open(url, "rb") as stream:  # opened here (not by wds.url_opener) so it is always closed
            files = tar_file_expander(iter([{"url": url, "stream": stream}]), handler=stop)
            for sample in group_by_keys(files, handler=stop):
                if META_EXT in sample and TENSORS_EXT in sample:  # a cut-off last sample is not counted
                    n += 1
                    yield sample
        if problems or n != want:
            cause = f": {problems[0]}" if problems else ""
            errors.bad(
                "samples in truncated or corrupted shards",
                f"{url}: truncated or corrupted shard, read {n} of {want} samples{cause}",
                want - n,
            )


def _decode(
    src: Iterator[dict[str, Any]], *, manifest: ShardManifest, errors: _Errors
) -> Iterator[dict[str, Any]]:
    """Raw tar members → typed sample dicts, validated against the manifest."""
    latent_shapes = {b.video_shape: b.latent_shape for b in manifest.buckets}
    latent_dtype = getattr(torch, manifest.latent_dtype)
    text_dtype = getattr(torch, manifest.text_dtype)
    for raw in src:
        where = f"{raw.get('__url__')} sample {raw.get('__key__')}"
        try:
            meta = json.loads(raw[META_EXT])
            where += f" (id {meta['id']!r})"
            tensors = safetensors.torch.load(raw[TENSORS_EXT])
            mean, text = tensors[MEAN_KEY], tensors[TEXT_KEY]
            logvar = tensors.get(LOGVAR_KEY)
            video_shape = tuple(meta["video_shape"])
            want = latent_shapes.get(video_shape)  # type: ignore[call-overload]
            problem = None
            if want is None:
                problem = f"bucket {video_shape} is not in the manifest {sorted(latent_shapes)}"
            elif tuple(mean.shape) != want or (logvar is not None and tuple(logvar.shape) != want):
                problem = f"latent shape {tuple(mean.shape)} disagrees with the manifest's {want}"
            elif (logvar is not None) != manifest.has_logvar:
                problem = f"logvar {'present' if logvar is not None else 'missing'}; manifest has_logvar={manifest.has_logvar}"
            elif tuple(text.shape) != manifest.text_shape:
                problem = (
                    f"text shape {tuple(text.shape)} disagrees with the manifest's {manifest.text_shape}"
                )
            elif mean.dtype != latent_dtype or text.dtype != text_dtype:
                problem = f"dtypes {mean.dtype}/{text.dtype} disagree with the manifest's {latent_dtype}/{text_dtype}"
            elif not 0 <= int(meta["text_length"]) <= text.shape[0]:
                problem = f"text_length {meta['text_length']} outside [0, {text.shape[0]}]"
            sample = {
                "mean": mean,
                "logvar": logvar,
                "text": text,
                "text_length": int(meta["text_length"]),
                "caption": str(meta["caption"]),
                "id": str(meta["id"]),
            }
        except (
            KeyError,
            ValueError,
            TypeError,
            OverflowError,  # int(inf)
            RecursionError,  # deeply nested JSON
            safetensors.SafetensorError,
        ) as e:
            problem = f"unreadable sample: {type(e).__name__}: {e}"
        if problem is not None:
            errors.bad("bad samples", f"{where}: {problem}")
            continue
        yield sample
    errors.summary()


def _bucket_batches(
    src: Iterator[dict[str, Any]], *, batch_size: int, keep_partial: bool
) -> Iterator[LatentBatch]:
    """Group samples by latent shape and emit a batch whenever a bucket holds `batch_size` samples."""
    pending: dict[tuple[int, ...], list[dict[str, Any]]] = {}
    for sample in src:
        bucket = pending.setdefault(tuple(sample["mean"].shape), [])
        bucket.append(sample)
        if len(bucket) == batch_size:
            yield _collate(bucket)
            bucket.clear()
    if keep_partial:
        for bucket in pending.values():
            if bucket:
                yield _collate(bucket)


def _collate(samples: list[dict[str, Any]]) -> LatentBatch:
    def stack(key: str) -> Tensor:  # a batch of one is a view, not a copy
        return samples[0][key].unsqueeze(0) if len(samples) == 1 else torch.stack([s[key] for s in samples])

    return LatentBatch(
        latents_mean=stack("mean"),
        latents_logvar=stack("logvar") if samples[0]["logvar"] is not None else None,
        text_embeddings=stack("text"),
        text_lengths=torch.tensor([s["text_length"] for s in samples], dtype=torch.int64),
        captions=tuple(s["caption"] for s in samples),
        ids=tuple(s["id"] for s in samples),
    )
