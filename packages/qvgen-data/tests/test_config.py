import pytest
from pydantic import ValidationError

from qvgen.data import FpsSampling, LoaderConfig, WriterConfig


def test_writer_config_parses_fps_sampling_from_plain_data() -> None:
    cfg = WriterConfig.model_validate(
        {"sampling": {"kind": "fps", "fps": 16}, "buckets": [{"frames": 17, "height": 64, "width": 64}]}
    )
    assert cfg.sampling == FpsSampling(fps=16)
    assert cfg.buckets[0].shape == (17, 64, 64)


def test_writer_config_rejects_unknown_fields_and_bad_on_error() -> None:
    with pytest.raises(ValidationError, match="samples_per_shards"):
        WriterConfig.model_validate({"samples_per_shards": 3})
    with pytest.raises(ValidationError, match="on_error"):
        WriterConfig.model_validate({"on_error": "ignore"})


def test_loader_config_rejects_prefetch_without_workers() -> None:
    with pytest.raises(ValidationError, match="prefetch_factor only applies"):
        LoaderConfig(shards="x", num_workers=0, prefetch_factor=4)
