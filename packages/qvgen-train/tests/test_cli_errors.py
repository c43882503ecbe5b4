"""Issue 13, failure 6: user errors printed a full traceback; the one line that matters was at the bottom.

A bad sample in `qvgen-train precompute`, a refused checkpoint in `qvgen-train run`: exit 1 with the
message alone on stderr; `--debug` shows the traceback (the exception propagates).
"""

import pytest
import yaml

from qvgen.data import write_procedural_dataset
from qvgen.models.testing import tiny_checkpoint
from qvgen.train.checkpoint import CheckpointError
from qvgen.train.cli import main


def _precompute_config(tmp_path):
    captions = write_procedural_dataset(tmp_path / "videos", 2, seed=0, frames=9, height=64, width=64)
    lines = captions.read_text().splitlines()
    captions.write_text("\n".join([*lines, lines[-1].replace(".mp4", "-missing.mp4", 1)]) + "\n")
    cfg = {
        "model": {"family": "wan", "checkpoint": str(tiny_checkpoint("wan")), "dtype": "float32"},
        "ingest": {"captions": str(captions)},
        "writer": {"buckets": [{"frames": 9, "height": 64, "width": 64}], "samples_per_shard": 4},
        "out_dir": str(tmp_path / "shards"),
    }
    path = tmp_path / "pre.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_bad_sample_in_precompute_is_one_message_and_exit_1(tmp_path, capsys):
    path = _precompute_config(tmp_path)
    assert main(["precompute", str(path)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = next(x for x in err.splitlines() if x.startswith("qvgen-train: error: "))
    assert "-missing.mp4: video file not found" in line and "--debug" in err
    assert not list((tmp_path / "shards").glob(".*.tmp*"))  # no debris of the failed shard


def test_debug_flag_lets_the_error_propagate_with_its_traceback(run_dict, wan_shards, tmp_path):
    missing = tmp_path / "nowhere" / "step-00000004"
    cfg = run_dict("wan", wan_shards, tmp_path / "out", checkpoint={"resume_from": str(missing)})
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(CheckpointError, match="no such checkpoint folder"):
        main(["run", str(tmp_path / "run.yaml"), "--debug"])


def test_refused_checkpoint_in_run_is_one_message_and_exit_1(run_dict, wan_shards, tmp_path, capsys):
    missing = tmp_path / "nowhere" / "step-00000004"
    cfg = run_dict("wan", wan_shards, tmp_path / "out", checkpoint={"resume_from": str(missing)})
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["run", str(tmp_path / "run.yaml")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"{missing}: no such checkpoint folder" in err
