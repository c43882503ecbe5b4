import csv
import hashlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from qvgen.core import ProvenanceMismatch
from qvgen.data import (
    BadSampleError,
    Bucket,
    EncodedSample,
    IngestConfig,
    LoaderConfig,
    ShardFormatError,
    VideoRecord,
    WriterConfig,
    encode_mp4,
    finalize_manifest,
    make_loader,
    read_caption_table,
    read_manifest,
    read_video,
    write_shards,
)
from qvgen.data.testing import FakeEncoder

BUCKET = Bucket(frames=9, height=32, width=32)
Samples = Callable[..., list[EncodedSample]]


def _eval_batches(shards: Path, **kw: object) -> list:
    return list(make_loader(LoaderConfig(shards=shards, mode="eval", num_workers=0, **kw)))


def _by_id(shards: Path) -> dict:
    out = {}
    for b in _eval_batches(shards):
        for i, sid in enumerate(b.ids):
            assert sid not in out, f"duplicate {sid}"
            logvar = None if b.latents_logvar is None else b.latents_logvar[i]
            out[sid] = (
                b.latents_mean[i],
                logvar,
                b.text_embeddings[i],
                int(b.text_lengths[i]),
                b.captions[i],
            )
    return out


def test_video_to_shards_to_loader_round_trip_is_exact(video_dir: Path, video_shards: Path) -> None:
    records = read_caption_table(IngestConfig(captions=video_dir / "captions.csv"))
    loaded = _by_id(video_shards)
    assert sorted(loaded) == sorted(r.id for r in records)
    enc = FakeEncoder()
    for pair in (records[0:2], records[2:4], records[4:6]):  # the writer's encode batches
        videos = torch.stack([read_video(r.video, BUCKET) for r in pair])  # type: ignore[arg-type]
        moments, text = enc.encode_videos(videos), enc.encode_prompts([r.caption for r in pair])
        assert moments.logvar is not None
        for i, r in enumerate(pair):
            mean, logvar, emb, length, caption = loaded[r.id]
            assert mean.dtype == torch.bfloat16
            assert torch.equal(mean, moments.mean[i].to(torch.bfloat16))
            assert logvar is not None and torch.equal(logvar, moments.logvar[i].to(torch.bfloat16))
            assert torch.equal(emb, text.embeddings[i].to(torch.bfloat16))
            assert (length, caption) == (int(text.lengths[i]), r.caption)


def test_manifest_records_counts_shapes_encoder_and_shard_hashes(video_shards: Path) -> None:
    m = read_manifest(video_shards)
    assert (m.num_samples, m.num_skipped, len(m.shards)) == (6, 0, 3)
    assert m.encoder == FakeEncoder().name and m.has_logvar and m.latent_dtype == "bfloat16"
    assert m.text_shape == (16, 32)
    assert [(b.video_shape, b.latent_shape, b.num_samples) for b in m.buckets] == [
        ((9, 32, 32), (16, 3, 4, 4), 6)
    ]
    for shard in m.shards:
        data = (video_shards / shard.name).read_bytes()
        assert shard.sha256 == hashlib.sha256(data).hexdigest() and shard.num_bytes == len(data)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_encoded_samples_round_trip_bit_exactly_in_the_stored_dtype(
    tmp_path: Path, make_samples: Samples, dtype: str
) -> None:
    samples = make_samples(5)
    cfg = WriterConfig(samples_per_shard=2, latent_dtype=dtype, text_dtype=dtype)  # type: ignore[arg-type]
    write_shards(samples, tmp_path, cfg, encoder_name="precomputed")
    loaded = _by_id(tmp_path)
    torch_dtype = getattr(torch, dtype)
    for s in samples:
        mean, logvar, emb, length, caption = loaded[s.id]
        assert s.latents_logvar is not None and logvar is not None
        assert torch.equal(mean, s.latents_mean.to(torch_dtype))
        assert torch.equal(logvar, s.latents_logvar.to(torch_dtype))
        assert torch.equal(emb, s.text_embeddings.to(torch_dtype))
        assert (length, caption) == (s.text_length, s.caption)


def test_mean_only_shards_store_no_logvar(tmp_path: Path, make_samples: Samples) -> None:
    write_shards(make_samples(3), tmp_path, WriterConfig(store_logvar=False), encoder_name="x")
    assert not read_manifest(tmp_path).has_logvar
    (batch,) = _eval_batches(tmp_path, batch_size=3)
    assert batch.latents_logvar is None


def test_store_logvar_with_a_mean_only_encoder_is_an_error(video_dir: Path, tmp_path: Path) -> None:
    records = read_caption_table(IngestConfig(captions=video_dir / "captions.csv"))
    with pytest.raises(ValueError, match=r"gave no logvar; set WriterConfig\.store_logvar=False"):
        write_shards(records[:1], tmp_path, WriterConfig(buckets=(BUCKET,)), FakeEncoder(with_logvar=False))


def test_rerun_keeps_finished_shards_and_rewrites_nothing(tmp_path: Path, make_samples: Samples) -> None:
    samples, cfg = make_samples(5), WriterConfig(samples_per_shard=2)
    first = write_shards(samples, tmp_path, cfg, encoder_name="x")
    stamps = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("shard-*.tar")}
    again = write_shards(samples, tmp_path, cfg, encoder_name="x")
    assert first.written == again.kept == ("shard-000000.tar", "shard-000001.tar", "shard-000002.tar")
    assert again.written == () and again.manifest == first.manifest
    assert stamps == {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("shard-*.tar")}


def test_resume_with_another_config_is_refused_naming_the_shard_and_setting(
    tmp_path: Path, make_samples: Samples
) -> None:
    write_shards(make_samples(2), tmp_path, WriterConfig(samples_per_shard=2), encoder_name="x")
    with pytest.raises(ProvenanceMismatch, match=r"shard-000000\.tar: writer\.samples_per_shard: 2 → 1\)"):
        write_shards(make_samples(2), tmp_path, WriterConfig(samples_per_shard=1), encoder_name="x")
    assert sorted(p.name for p in tmp_path.glob("shard-*.tar")) == ["shard-000000.tar"]


def test_two_ranks_write_disjoint_shards_and_the_last_writes_the_manifest(
    tmp_path: Path, make_samples: Samples
) -> None:
    samples, cfg = make_samples(7), WriterConfig(samples_per_shard=2)
    r1 = write_shards(samples, tmp_path, cfg, encoder_name="x", rank=1, world_size=2)
    assert r1.manifest is None and not (tmp_path / "manifest.json").exists()
    with pytest.raises(ShardFormatError, match=r"rank-00000-of-00002\.json: missing"):
        finalize_manifest(tmp_path)
    with pytest.raises(ShardFormatError, match="no shard manifest"):
        _eval_batches(tmp_path)
    r0 = write_shards(samples, tmp_path, cfg, encoder_name="x", rank=0, world_size=2)
    assert r0.written == ("shard-000000.tar", "shard-000002.tar") and r1.written == (
        "shard-000001.tar",
        "shard-000003.tar",
    )
    assert r0.manifest is not None and r0.manifest.num_samples == 7
    assert sorted(_by_id(tmp_path)) == sorted(s.id for s in samples)


_CRASHING_WRITER = textwrap.dedent(
    """
    import os, signal, sys, torch
    from qvgen.data import VideoRecord, WriterConfig, write_shards
    from qvgen.data.testing import FakeEncoder

    class DiesOnCall(FakeEncoder):
        calls = 0
        def encode_videos(self, videos):
            DiesOnCall.calls += 1
            if DiesOnCall.calls == int(sys.argv[2]):
                os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no finally
            return super().encode_videos(videos)

    gen = torch.Generator().manual_seed(0)
    records = [VideoRecord(f"v{i}", f"clip {i}", torch.rand(3, 5, 16, 16, generator=gen) * 2 - 1) for i in range(10)]
    cfg = WriterConfig(samples_per_shard=3, encode_batch_size=1)
    write_shards(records, sys.argv[1], cfg, DiesOnCall())
    """
)


def test_writer_killed_mid_shard_resumes_without_losing_or_duplicating(tmp_path: Path) -> None:
    run = [sys.executable, "-c", _CRASHING_WRITER, str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = subprocess.run([*run, "8"], env=env, capture_output=True, check=False)  # dies in shard 2
    assert killed.returncode == -9, killed.stderr.decode()
    assert sorted(p.name for p in tmp_path.glob("shard-*.tar")) == ["shard-000000.tar", "shard-000001.tar"]
    assert list(tmp_path.glob(".shard-000002.tar.tmp-*")), "the unfinished shard's temp file should remain"
    assert not (tmp_path / "manifest.json").exists()
    stamps = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("shard-*.tar")}

    subprocess.run([*run, "0"], env=env, check=True)
    assert not list(tmp_path.glob(".*.tmp-*"))
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("shard-00000[01].tar")} == stamps
    ids = [sid for b in _eval_batches(tmp_path, batch_size=4) for sid in b.ids]
    assert sorted(ids) == sorted(f"v{i}" for i in range(10)) and len(ids) == 10


def test_empty_caption_raises_naming_the_sample_or_is_skipped_and_counted(
    tmp_path: Path, make_samples: Samples
) -> None:
    samples = make_samples(4)
    bad = EncodedSample(**{**{f: getattr(samples[2], f) for f in samples[2].__slots__}, "caption": "  "})
    samples[2] = bad
    with pytest.raises(BadSampleError, match=r"sample 2 \(id 'clip/2\.mp4'\): empty caption"):
        write_shards(samples, tmp_path / "a", WriterConfig(samples_per_shard=2), encoder_name="x")
    summary = write_shards(
        samples, tmp_path / "b", WriterConfig(samples_per_shard=2, on_error="skip"), encoder_name="x"
    )
    assert summary.manifest is not None
    assert (summary.manifest.num_samples, summary.manifest.num_skipped) == (3, 1)
    assert (
        summary.manifest.skipped[0].source_id == "clip/2.mp4"
        and "empty caption" in summary.manifest.skipped[0].reason
    )
    assert sorted(_by_id(tmp_path / "b")) == ["clip/0.mp4", "clip/1.mp4", "clip/3.mp4"]


def test_unreadable_or_missing_video_raises_naming_the_file_or_is_skipped_and_counted(
    video_dir: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00not a video" * 50)
    records = read_caption_table(IngestConfig(captions=video_dir / "captions.csv"))[:2]
    records += [
        VideoRecord("broken", "a red square moves left", broken),
        VideoRecord("gone", "x", tmp_path / "gone.mp4"),
    ]
    cfg = WriterConfig(buckets=(BUCKET,), samples_per_shard=4)
    with pytest.raises(BadSampleError, match=r"broken\.mp4: unreadable video"):
        write_shards(records, tmp_path / "a", cfg, FakeEncoder())
    summary = write_shards(
        records, tmp_path / "b", cfg.model_copy(update={"on_error": "skip"}), FakeEncoder()
    )
    assert summary.manifest is not None and summary.manifest.num_samples == 2
    assert [(s.index, s.source_id) for s in summary.skipped] == [(2, "broken"), (3, "gone")]
    assert "gone.mp4: video file not found" in summary.skipped[1].reason


def test_caption_table_to_shards_keeps_table_order_in_keys(video_dir: Path, video_shards: Path) -> None:
    rows = list(csv.DictReader((video_dir / "captions.csv").read_text().splitlines()))
    ids = [sid for b in _eval_batches(video_shards, batch_size=1) for sid in b.ids]
    assert ids == [r["video"] for r in rows]


def test_sample_disagreeing_with_earlier_samples_raises_naming_it(
    tmp_path: Path, make_samples: Samples
) -> None:
    samples = make_samples(3)
    s = samples[1]
    samples[1] = EncodedSample(
        s.id, s.caption, s.latents_mean, s.latents_logvar, torch.zeros(7, 8), s.text_length, s.video_shape
    )
    with pytest.raises(
        ValueError, match=r"sample 1 \(id 'clip/1\.mp4'\): text embeddings \(7, 8\), earlier samples \(6, 8\)"
    ):
        write_shards(samples, tmp_path, WriterConfig(), encoder_name="x")


def test_videos_go_to_the_bucket_nearest_their_aspect_ratio(video_dir: Path, tmp_path: Path) -> None:
    wide = tmp_path / "wide.mp4"
    wide.write_bytes(encode_mp4(torch.rand(3, 9, 32, 64) * 2 - 1))
    records = read_caption_table(IngestConfig(captions=video_dir / "captions.csv"))[:2]
    records.append(VideoRecord("wide", "a wide clip", wide))
    buckets = (BUCKET, Bucket(frames=5, height=16, width=48))
    summary = write_shards(records, tmp_path / "s", WriterConfig(buckets=buckets), FakeEncoder())
    assert summary.manifest is not None
    stats = {b.video_shape: (b.latent_shape, b.num_samples) for b in summary.manifest.buckets}
    assert stats == {(9, 32, 32): ((16, 3, 4, 4), 2), (5, 16, 48): ((16, 2, 2, 6), 1)}
