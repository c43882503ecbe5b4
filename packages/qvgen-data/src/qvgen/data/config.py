"""Pydantic boundary models: ingest, shard writing and loading."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from qvgen.core import Frozen
from qvgen.data.schema import TensorDType

OnError = Literal["raise", "skip"]
"""What to do with a bad sample: stop with an error naming it, or skip it and count it in the summary."""

OnChange = Literal["error", "rebuild"]
"""What a rerun does with a finished shard whose inputs changed (rows, encoder or writer settings): stop with
an error listing each changed shard and fact, or rewrite exactly those shards."""


class Bucket(Frozen):
    """A resolution bucket: clips are resized and centre-cropped to exactly frames × height × width."""

    frames: Annotated[int, Field(ge=1)]
    height: Annotated[int, Field(ge=8)]
    width: Annotated[int, Field(ge=8)]

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.frames, self.height, self.width)


class UniformSampling(Frozen):
    """Take `frames` indices spread evenly over the whole clip (the official QVGen prep)."""

    kind: Literal["uniform"] = "uniform"


class FpsSampling(Frozen):
    """Take frames at a fixed rate from the clip start (docs/method.md B14: Wan 16 fps, CogVideoX 8 fps)."""

    kind: Literal["fps"] = "fps"
    fps: Annotated[float, Field(gt=0)]
    pad: Literal["error", "repeat_last"] = "error"
    """A clip too short for `frames` at `fps`: raise, or repeat its last frame."""


FrameSampling = Annotated[UniformSampling | FpsSampling, Field(discriminator="kind")]


class IngestConfig(Frozen):
    """Where the source clips and their captions are."""

    captions: Path
    """Caption table, `.csv` or `.jsonl` (OpenVid-1M layout: one row per clip)."""
    video_root: Path | None = None
    """Folder the video column is relative to; default: the caption table's folder."""
    video_column: str = "video"
    caption_column: str = "caption"
    id_column: str | None = None
    """Column holding a stable sample id; default: the video column's value."""


class WriterConfig(Frozen):
    """How latent shards are written."""

    buckets: Annotated[tuple[Bucket, ...], Field(min_length=1)] = (Bucket(frames=49, height=480, width=832),)
    """Each video file goes to the bucket nearest its aspect ratio, then is resized and centre-cropped."""
    sampling: FrameSampling = UniformSampling()
    samples_per_shard: Annotated[int, Field(ge=1)] = 64
    """Bounds the shard size: samples_per_shard × per-sample bytes (Wan 1.3B, 49×480×832: ~9.4 MB/sample)."""
    store_logvar: bool = True
    """False stores only the posterior mean (half the latent bytes; training then uses the mean)."""
    latent_dtype: TensorDType = "bfloat16"
    text_dtype: TensorDType = "bfloat16"
    encode_batch_size: Annotated[int, Field(ge=1)] = 4
    family: str | None = None
    """Model family recorded in the manifest ("wan", "cogvideox")."""
    on_error: OnError = "raise"
    """Unreadable video, empty caption: stop naming the sample, or skip it and count it in the manifest."""
    on_change: OnChange = "error"
    """A rerun into the same folder whose inputs changed for some finished shards: refuse, listing what
    changed, or rebuild only those shards (`qvgen-train precompute --overwrite`). Unchanged shards are kept."""


class LoaderConfig(Frozen):
    """How latent shards are read back into `LatentBatch`es."""

    shards: Path
    """The shard directory (holds manifest.json and shard-*.tar)."""
    batch_size: Annotated[int, Field(ge=1)] = 1
    mode: Literal["train", "eval"] = "train"
    """train: resampled shards, infinite stream, shuffled; eval: every sample exactly once, in order."""
    shuffle_buffer: Annotated[int, Field(ge=0)] = 16
    """Samples held for shuffling in train mode, per worker (0: shards are still drawn at random).

    Memory: shuffle_buffer × sample bytes per worker (Wan 1.3B at 49×480×832: ~9.4 MB per sample)."""
    seed: int = 0
    num_workers: Annotated[int, Field(ge=0)] = 2
    prefetch_factor: Annotated[int, Field(ge=1)] = 2
    pin_memory: bool = False
    drop_last: bool = True
    """Drop each bucket's last incomplete batch (eval mode always keeps it so every sample is seen)."""
    verify_sha256: bool = False
    """Hash each shard against the manifest before reading it (reads every shard twice)."""
    on_error: OnError = "raise"

    @model_validator(mode="after")
    def _prefetch_needs_workers(self) -> LoaderConfig:
        if self.num_workers == 0 and self.prefetch_factor != 2:
            raise ValueError("prefetch_factor only applies with num_workers > 0; leave it at 2")
        return self
