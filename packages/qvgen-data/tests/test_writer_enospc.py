"""Issue 13, failure 5 and fault injection: a failed shard write (a bad sample, or ENOSPC, OSError 28, in
the middle of a shard) used to leave `.shard-000001.tar.<pid>.tmp` behind. Now no temp file is left, the
shards finished before stay intact, the error names the shard, and a re-run completes the dataset."""

import errno
import hashlib
import json
from pathlib import Path

import pytest

from qvgen.core import MARKER_NAME
from qvgen.data import EncodedSample, LoaderConfig, WriterConfig, make_loader, read_manifest, write_shards
from qvgen.data import writer as writer_module
from qvgen.data.ingest import BadSampleError

CFG = WriterConfig(samples_per_shard=4)


def _debris(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith(".") and p.name != MARKER_NAME)


def _intact(out: Path, name: str) -> bool:
    record = json.loads((out / name.replace(".tar", ".json")).read_text())
    return record["info"]["sha256"] == hashlib.sha256((out / name).read_bytes()).hexdigest()


def test_enospc_mid_shard_leaves_no_temp_keeps_finished_shards_and_resumes(
    tmp_path, make_samples, monkeypatch
):
    samples = make_samples(8)
    out = tmp_path / "shards"
    real = writer_module._serialize

    def disk_full_at_sample_6(sample, index, cfg):
        if index == 6:  # two samples of shard 1 are already in its tar
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(sample, index, cfg)

    monkeypatch.setattr(writer_module, "_serialize", disk_full_at_sample_6)
    with pytest.raises(OSError, match=r"shard-000001\.tar") as info:
        write_shards(samples, out, CFG, encoder_name="x")
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert _debris(out) == []
    assert not (out / "shard-000001.tar").exists() and _intact(out, "shard-000000.tar")
    summary = write_shards(samples, out, CFG, encoder_name="x")
    assert summary.kept == ("shard-000000.tar",) and summary.written == ("shard-000001.tar",)
    assert read_manifest(out).num_samples == 8
    loader = make_loader(LoaderConfig(shards=out, batch_size=8, num_workers=0, mode="eval"))
    assert sum(len(b.ids) for b in loader) == 8


def test_bad_sample_stopping_the_run_leaves_no_temp(tmp_path, make_samples):
    samples = make_samples(8)
    samples[5] = EncodedSample(**{**{f: getattr(samples[5], f) for f in samples[5].__slots__}, "caption": ""})
    with pytest.raises(BadSampleError, match=r"sample 5"):
        write_shards(samples, tmp_path / "shards", CFG, encoder_name="x")
    assert _debris(tmp_path / "shards") == []
    assert _intact(tmp_path / "shards", "shard-000000.tar")
