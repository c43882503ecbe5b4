"""WebDataset latent shards for video diffusion QAT: ingest, shard writer, loader."""

from qvgen.data.config import (
    Bucket,
    FpsSampling,
    IngestConfig,
    LoaderConfig,
    OnError,
    UniformSampling,
    WriterConfig,
)
from qvgen.data.encoder import LatentMoments, TextEmbeddings, VideoEncoder
from qvgen.data.schema import (
    BucketStats,
    LatentBatch,
    ShardFormatError,
    ShardInfo,
    ShardManifest,
    SkippedSample,
    read_manifest,
)

__all__ = [
    "Bucket",
    "BucketStats",
    "FpsSampling",
    "IngestConfig",
    "LatentBatch",
    "LatentMoments",
    "LoaderConfig",
    "OnError",
    "ShardFormatError",
    "ShardInfo",
    "ShardManifest",
    "SkippedSample",
    "TextEmbeddings",
    "UniformSampling",
    "VideoEncoder",
    "WriterConfig",
    "read_manifest",
]
