from pathlib import Path

import pytest
import torch

from qvgen.data import LatentBatch, ShardFormatError, read_manifest


def _batch(logvar: bool) -> LatentBatch:
    mean = torch.randn(2, 4, 3, 5, 5).to(torch.bfloat16)
    return LatentBatch(
        latents_mean=mean,
        latents_logvar=torch.full_like(mean, -2.0) if logvar else None,
        text_embeddings=torch.zeros(2, 6, 8),
        text_lengths=torch.tensor([3, 6]),
        captions=("a", "b"),
        ids=("0", "1"),
    )


def test_sample_latents_is_mean_plus_std_times_noise_from_the_generator() -> None:
    batch = _batch(logvar=True)
    z = batch.sample_latents(torch.Generator().manual_seed(5))
    eps = torch.randn(batch.latents_mean.shape, generator=torch.Generator().manual_seed(5))
    expected = batch.latents_mean.float() + torch.exp(torch.tensor(-1.0)) * eps
    assert z.dtype == torch.float32
    torch.testing.assert_close(z, expected, atol=0, rtol=0)


def test_sample_latents_differs_between_generators_and_returns_mean_without_logvar() -> None:
    batch = _batch(logvar=True)
    a = batch.sample_latents(torch.Generator().manual_seed(0))
    b = batch.sample_latents(torch.Generator().manual_seed(1))
    assert not torch.equal(a, b)
    plain = _batch(logvar=False)
    assert torch.equal(plain.sample_latents(torch.Generator()), plain.latents_mean.float())


def test_latent_batch_to_moves_every_tensor_and_keeps_strings() -> None:
    moved = _batch(logvar=True).to("meta")
    assert moved.latents_mean.is_meta and moved.latents_logvar is not None and moved.latents_logvar.is_meta
    assert moved.text_lengths.is_meta and moved.captions == ("a", "b") and moved.batch_size == 2


def test_read_manifest_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ShardFormatError, match=r"manifest\.json: no shard manifest"):
        read_manifest(tmp_path)


def test_read_manifest_rejects_unknown_schema_version(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text('{"schema_version": 2}')
    with pytest.raises(ShardFormatError, match=r"manifest\.json: invalid shard manifest"):
        read_manifest(tmp_path)
