"""Issue 13, failure 6: the skip message repeated its prefix ("skipping sample 2 (id …): sample 2 (id …): …")."""

import logging
from pathlib import Path

import pytest

from qvgen.data import EncodedSample, WriterConfig, write_shards
from qvgen.data.ingest import BadSampleError


def _with_empty_caption(make_samples):
    samples = make_samples(4)
    samples[2] = EncodedSample(
        **{**{f: getattr(samples[2], f) for f in samples[2].__slots__}, "caption": " "}
    )
    return samples


def test_skip_warning_names_the_sample_once(tmp_path: Path, make_samples, caplog) -> None:
    cfg = WriterConfig(samples_per_shard=2, on_error="skip")
    with caplog.at_level(logging.WARNING, logger="qvgen.data.writer"):
        write_shards(_with_empty_caption(make_samples), tmp_path / "s", cfg, encoder_name="x")
    (message,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping")]
    assert message == "skipping sample 2 (id 'clip/2.mp4'): empty caption"


def test_raised_error_names_the_sample_once(tmp_path: Path, make_samples) -> None:
    with pytest.raises(BadSampleError) as info:
        write_shards(
            _with_empty_caption(make_samples),
            tmp_path / "s",
            WriterConfig(samples_per_shard=2),
            encoder_name="x",
        )
    assert str(info.value) == "sample 2 (id 'clip/2.mp4'): empty caption"
