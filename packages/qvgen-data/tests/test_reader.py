import json
import logging
from collections.abc import Callable
from itertools import islice
from pathlib import Path

import pytest
import torch

from qvgen.data import EncodedSample, LoaderConfig, ShardFormatError, WriterConfig, make_loader, write_shards

Samples = Callable[..., list[EncodedSample]]
SHAPES = ((5, 16, 16), (9, 16, 32))


@pytest.fixture
def shards(tmp_path: Path, make_samples: Samples) -> Path:
    """10 samples in two buckets, 2 per shard (5 shards)."""
    write_shards(
        make_samples(10, shapes=SHAPES), tmp_path, WriterConfig(samples_per_shard=2), encoder_name="x"
    )
    return tmp_path


def _ids(loader: object) -> list[str]:
    return [sid for batch in loader for sid in batch.ids]  # type: ignore[attr-defined]


def test_eval_mode_two_nodes_two_workers_see_every_sample_exactly_once(shards: Path) -> None:
    cfg = LoaderConfig(shards=shards, mode="eval", batch_size=2, num_workers=2)
    per_rank = [_ids(make_loader(cfg, rank=r, world_size=2)) for r in range(2)]
    assert not set(per_rank[0]) & set(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == sorted(f"clip/{i}.mp4" for i in range(10))
    assert all(per_rank)


def test_eval_mode_single_process_keeps_partial_batches_and_file_order(shards: Path) -> None:
    batches = list(make_loader(LoaderConfig(shards=shards, mode="eval", batch_size=3, num_workers=0)))
    assert sum(b.batch_size for b in batches) == 10
    assert [i for b in batches for i in b.ids if b.latents_mean.shape[2] == 5] == [
        f"clip/{i}.mp4" for i in (0, 2, 4, 6, 8)
    ]


def test_batches_never_mix_buckets(shards: Path) -> None:
    for batch in make_loader(LoaderConfig(shards=shards, mode="eval", batch_size=4, num_workers=0)):
        assert batch.latents_logvar is not None and batch.latents_logvar.shape == batch.latents_mean.shape
        assert (
            batch.text_embeddings.shape == (batch.batch_size, 6, 8)
            and batch.text_lengths.dtype == torch.int64
        )
        frames = {2: 5, 4: 9}[batch.latents_mean.shape[-1]]
        assert batch.latents_mean.shape[2] == frames


def test_train_mode_is_infinite_shuffled_and_deterministic_per_seed_and_rank(shards: Path) -> None:
    cfg = LoaderConfig(shards=shards, mode="train", batch_size=2, num_workers=0, shuffle_buffer=4, seed=3)

    def first(n: int, rank: int, c: LoaderConfig = cfg) -> list[str]:
        return _ids(islice(make_loader(c, rank=rank, world_size=2), n))

    run = first(15, 0)
    assert len(run) == 30 and len(set(run)) == 10  # three epochs' worth from 10 samples
    assert run == first(15, 0)
    assert run != first(15, 1)
    assert run != first(15, 0, cfg.model_copy(update={"seed": 4}))


def test_train_mode_with_workers_drops_nothing_but_incomplete_batches(shards: Path) -> None:
    cfg = LoaderConfig(shards=shards, mode="train", batch_size=3, num_workers=2, shuffle_buffer=0)
    batches = list(islice(make_loader(cfg), 6))
    assert all(b.batch_size == 3 for b in batches)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_shard_raises_naming_the_shard(shards: Path) -> None:
    _truncate(shards / "shard-000003.tar")
    with pytest.raises(
        ShardFormatError, match=r"shard-000003\.tar: truncated or corrupted shard, read [01] of 2"
    ):
        list(make_loader(LoaderConfig(shards=shards, mode="eval", num_workers=0)))


def test_truncated_shard_is_skipped_and_counted_when_configured(
    shards: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _truncate(shards / "shard-000003.tar")
    cfg = LoaderConfig(shards=shards, mode="eval", num_workers=0, on_error="skip")
    with caplog.at_level(logging.WARNING, logger="qvgen.data.reader"):
        ids = _ids(make_loader(cfg))
    assert (
        {f"clip/{i}.mp4" for i in (0, 1, 2, 3, 4, 5, 8, 9)} <= set(ids) < {f"clip/{i}.mp4" for i in range(10)}
    )
    assert f"{10 - len(ids)} samples in truncated or corrupted shards" in caplog.text


def test_corrupted_shard_fails_its_sha256_check(shards: Path) -> None:
    path = shards / "shard-000001.tar"
    data = bytearray(path.read_bytes())
    data[2000] ^= 0xFF  # inside tensor bytes: only the hash can notice
    path.write_bytes(bytes(data))
    cfg = LoaderConfig(shards=shards, mode="eval", num_workers=0, verify_sha256=True)
    with pytest.raises(ShardFormatError, match=r"shard-000001\.tar: sha256 [0-9a-f]{64} != manifest"):
        list(make_loader(cfg))


def test_sample_shape_disagreeing_with_the_manifest_raises_naming_shard_and_sample(shards: Path) -> None:
    path = shards / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["buckets"][0]["latent_shape"] = [4, 2, 2, 3]
    path.write_text(json.dumps(manifest))
    with pytest.raises(
        ShardFormatError,
        match=r"shard-000000\.tar sample 000000000 \(id 'clip/0\.mp4'\): latent shape \(4, 5, 2, 2\) disagrees",
    ):
        list(make_loader(LoaderConfig(shards=shards, mode="eval", num_workers=0)))
    skipping = LoaderConfig(shards=shards, mode="eval", num_workers=0, on_error="skip")
    assert sorted(_ids(make_loader(skipping))) == sorted(f"clip/{i}.mp4" for i in (1, 3, 5, 7, 9))


def _rewrite_member(shard: Path, member: str, edit: Callable[[dict], None]) -> None:
    import io
    import tarfile

    with tarfile.open(shard) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    with tarfile.open(shard, "w") as tar:
        for name, data in members:
            if name == member:
                meta = json.loads(data)
                edit(meta)
                data = json.dumps(meta).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_sample_without_a_caption_is_refused_or_skipped_naming_it(shards: Path) -> None:
    _rewrite_member(shards / "shard-000000.tar", "000000001.json", lambda meta: meta.pop("caption"))
    with pytest.raises(ShardFormatError, match=r"shard-000000\.tar sample 000000001 .*KeyError: 'caption'"):
        list(make_loader(LoaderConfig(shards=shards, mode="eval", num_workers=0)))
    skipping = LoaderConfig(shards=shards, mode="eval", num_workers=0, on_error="skip")
    assert sorted(_ids(make_loader(skipping))) == sorted(f"clip/{i}.mp4" for i in range(10) if i != 1)


@pytest.mark.parametrize("name", ["../elsewhere.tar", "/tmp/x.tar", "sub/shard-000000.tar"])
def test_manifest_naming_a_shard_outside_its_folder_is_refused(shards: Path, name: str) -> None:
    path = shards / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["shards"][0]["name"] = name
    path.write_text(json.dumps(manifest))
    with pytest.raises((ShardFormatError, ValueError), match=r"manifest\.json"):
        list(make_loader(LoaderConfig(shards=shards, mode="eval", num_workers=0)))


def test_rank_outside_world_size_is_rejected(shards: Path) -> None:
    with pytest.raises(ValueError, match=r"rank must be in \[0, world_size=2\); got 2"):
        make_loader(LoaderConfig(shards=shards), rank=2, world_size=2)


def test_eval_mode_with_more_ranks_than_shards_says_how_to_fix_it(shards: Path) -> None:
    with pytest.raises(ValueError, match=r"rank 5 of 6 gets no shard .* write smaller shards"):
        make_loader(LoaderConfig(shards=shards, mode="eval"), rank=5, world_size=6)
