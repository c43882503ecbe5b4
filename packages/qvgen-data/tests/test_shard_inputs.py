"""Issue 32, failure 2: a rerun into a shard folder used to keep shards made from other inputs (a changed
caption: exit 0, shard-000000.tar unchanged, sample 0 still carrying the old caption and embedding). Now
each shard records its inputs; a changed shard is refused naming the shard, the row and the fact, or with
`on_change="rebuild"` only that shard is rewritten. Shard folders are claimed (`claim_shard_dir`)."""

import csv
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from qvgen.core import MARKER_NAME, ProvenanceMismatch
from qvgen.data import (
    Bucket,
    IngestConfig,
    LoaderConfig,
    ShardFormatError,
    WriterConfig,
    make_loader,
    read_caption_table,
    read_manifest,
    write_shards,
)
from qvgen.data.testing import FakeEncoder

CFG = WriterConfig(buckets=(Bucket(frames=9, height=32, width=32),), samples_per_shard=2, encode_batch_size=2)


@pytest.fixture
def videos(video_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the 6-clip dataset (the tests edit its captions and videos)."""
    return Path(shutil.copytree(video_dir, tmp_path / "videos"))


def _records(videos: Path) -> list:
    return read_caption_table(IngestConfig(captions=videos / "captions.csv"))


def _set_caption(videos: Path, row: int, caption: str) -> str:
    table = videos / "captions.csv"
    rows = list(csv.DictReader(table.read_text().splitlines()))
    old, rows[row]["caption"] = rows[row]["caption"], caption
    with table.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return old


def _stamps(out: Path) -> dict[str, tuple[str, int]]:
    return {
        p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(out.glob("shard-*.tar"))
    }


def _sample(out: Path, index: int) -> tuple[str, torch.Tensor]:
    for batch in make_loader(LoaderConfig(shards=out, mode="eval", batch_size=1, num_workers=0)):
        if batch.ids[0] == f"videos/{index:06d}.mp4":
            return batch.captions[0], batch.text_embeddings[0]
    raise AssertionError(f"sample {index} not found")


def test_rerun_after_a_caption_change_is_refused_naming_shard_row_and_caption(
    videos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "shards"
    write_shards(_records(videos), out, CFG, FakeEncoder())
    before = _stamps(out)
    old = _set_caption(videos, 0, "a green square moves up")
    with pytest.raises(ProvenanceMismatch) as info:
        write_shards(_records(videos), out, CFG, FakeEncoder())
    message = str(info.value)
    assert f"shard-000000.tar: row 0 caption: {old} → a green square moves up" in message
    assert "shard-000001" not in message and "writer.on_change: rebuild" in message
    assert _stamps(out) == before and _sample(out, 0)[0] == old


def test_rebuild_rewrites_only_the_changed_shard_and_sample_0_carries_the_new_caption(
    videos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "shards"
    write_shards(_records(videos), out, CFG, FakeEncoder())
    before = _stamps(out)
    _set_caption(videos, 0, "a green square moves up")
    summary = write_shards(
        _records(videos), out, CFG.model_copy(update={"on_change": "rebuild"}), FakeEncoder()
    )
    assert summary.written == summary.rebuilt == ("shard-000000.tar",)
    assert summary.kept == ("shard-000001.tar", "shard-000002.tar")
    after = _stamps(out)
    assert after["shard-000000.tar"][0] != before["shard-000000.tar"][0]
    assert {k: v for k, v in after.items() if k != "shard-000000.tar"} == {
        k: v for k, v in before.items() if k != "shard-000000.tar"
    }
    caption, embedding = _sample(out, 0)
    expected = FakeEncoder().encode_prompts(["a green square moves up"]).embeddings[0].to(torch.bfloat16)
    assert caption == "a green square moves up" and torch.equal(embedding, expected)
    manifest = read_manifest(out)
    assert manifest.shards[0].sha256 == after["shard-000000.tar"][0]
    write_shards(_records(videos), out, CFG, FakeEncoder())  # now current: kept, no error


def test_a_changed_video_file_is_refused_naming_its_row(videos: Path, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    write_shards(_records(videos), out, CFG, FakeEncoder())
    shutil.copyfile(videos / "videos/000000.mp4", videos / "videos/000003.mp4")
    with pytest.raises(
        ProvenanceMismatch, match=r"\(shard-000001\.tar: row 3 video: sha256:\w+ → sha256:\w+\)"
    ):
        write_shards(_records(videos), out, CFG, FakeEncoder())


def test_a_changed_encoder_is_refused_for_every_shard_before_anything_is_encoded(
    videos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "shards"
    write_shards(_records(videos), out, CFG, FakeEncoder(), encoder_facts={"dtype": "float32"})
    before = _stamps(out)

    class MustNotEncode(FakeEncoder):
        def encode_videos(self, videos: torch.Tensor):  # type: ignore[no-untyped-def]
            raise AssertionError("a refused rerun encoded a video")

    with pytest.raises(ProvenanceMismatch) as info:
        write_shards(_records(videos), out, CFG, MustNotEncode(), encoder_facts={"dtype": "bfloat16"})
    assert "shard-000000.tar, shard-000001.tar, shard-000002.tar: encoder.dtype: float32 → bfloat16" in str(
        info.value
    )
    with pytest.raises(ProvenanceMismatch, match=r"encoder: fake-encoder\(.*L=16.* → fake-encoder\(.*L=8"):
        write_shards(
            _records(videos), out, CFG, FakeEncoder(max_length=8), encoder_facts={"dtype": "float32"}
        )
    assert _stamps(out) == before


def test_shards_past_a_shortened_input_are_refused_or_removed_on_rebuild(
    videos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "shards"
    write_shards(_records(videos), out, CFG, FakeEncoder())
    with pytest.raises(ProvenanceMismatch, match=r"shard-000002\.tar: its rows are no longer in the input"):
        write_shards(_records(videos)[:4], out, CFG, FakeEncoder())
    rebuild = CFG.model_copy(update={"on_change": "rebuild"})
    summary = write_shards(_records(videos)[:4], out, rebuild, FakeEncoder())
    assert summary.written == () and summary.manifest is not None and summary.manifest.num_samples == 4
    assert sorted(p.name for p in out.glob("shard-*")) == [
        f"shard-00000{k}.{e}" for k in (0, 1) for e in ("json", "tar")
    ]


def test_a_non_empty_folder_not_written_by_the_writer_is_refused_and_left_alone(
    videos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "mine"
    (out / "sub").mkdir(parents=True)
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match=r"is not empty and was not written by qvgen\.data\.write_shards"):
        write_shards(_records(videos), out, CFG, FakeEncoder())
    assert sorted(p.name for p in out.rglob("*")) == ["notes.txt", "sub"]
    write_shards(_records(videos)[:2], tmp_path / "a", CFG, FakeEncoder(), tool="one tool")
    with pytest.raises(ValueError, match=r"was written by one tool, not another tool"):
        write_shards(_records(videos)[:2], tmp_path / "a", CFG, FakeEncoder(), tool="another tool")


@pytest.mark.parametrize("where", ["videos/videos/shards", "videos", "."])
def test_a_shard_folder_overlapping_an_input_is_refused(videos: Path, tmp_path: Path, where: str) -> None:
    with pytest.raises(
        ValueError, match=r"shard folder .* (lies inside|is also|contains) the input|is also an input"
    ):
        write_shards(_records(videos), tmp_path / where, CFG, FakeEncoder(), inputs=[videos / "videos"])
    assert not (tmp_path / "videos/videos/shards").exists() and not (tmp_path / MARKER_NAME).exists()


def test_a_folder_written_before_shards_recorded_inputs_is_refused_then_rebuilt_on_request(
    videos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "shards"
    write_shards(_records(videos), out, CFG, FakeEncoder())
    (out / MARKER_NAME).unlink()  # what the writer left before issue 32: no marker, no `inputs`
    for record in [out / "writer.json", *out.glob("shard-*.json")]:
        data = json.loads(record.read_text())
        del data["inputs"]
        record.write_text(json.dumps(data))
    with pytest.raises(
        ShardFormatError, match=r"written by an older qvgen .*\(`qvgen-train precompute --overwrite`\)"
    ):
        write_shards(_records(videos), out, CFG, FakeEncoder())
    summary = write_shards(
        _records(videos), out, CFG.model_copy(update={"on_change": "rebuild"}), FakeEncoder()
    )
    assert summary.rebuilt == ("shard-000000.tar", "shard-000001.tar", "shard-000002.tar")
    assert write_shards(_records(videos), out, CFG, FakeEncoder()).kept == summary.rebuilt
