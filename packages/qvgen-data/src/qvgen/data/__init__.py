"""WebDataset latent shards for video diffusion QAT: ingest, shard writer, loader."""

__all__: list[str] = []
