"""Issue 32: the run folder is claimed, carries the run's provenance, and its metrics log survives kills.

Item 7: a new run into a finished run's folder (no checkpoints: `checkpoint.every_n_steps: null`) was
accepted, erased the earlier `metrics.jsonl` and replaced `final/`. Item 6: a torn last line of
`metrics.jsonl` blocked every resume with a bare `Expecting ',' delimiter`.
"""

import json
import logging
import shutil

import pytest

from qvgen.core import MARKER_NAME, ProvenanceMismatch
from qvgen.train.config import RunConfig
from qvgen.train.recipe import run
from qvgen.train.run_folder import PROVENANCE

FAST = {"aux": None, "train": {"max_steps": 2}, "export": {"fake_quant": True, "deploy": False}}


def _cfg(run_dict, shards, out, **sections):
    return RunConfig.model_validate(run_dict("wan", shards, out, **{**FAST, **sections}))


def _snapshot(folder):
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_a_new_run_into_a_finished_run_is_refused_and_leaves_it_untouched(run_dict, wan_shards, tmp_path):
    out = tmp_path / "run"
    run(_cfg(run_dict, wan_shards, out))  # checkpoint.every_n_steps: null, as in the issue
    before = _snapshot(out)
    assert "metrics.jsonl" in before and "final/fake_quant/student_manifest.json" in before
    with pytest.raises(ValueError, match=r"holds a finished run \(final/\): pass --overwrite"):
        run(_cfg(run_dict, wan_shards, out))
    with pytest.raises(ProvenanceMismatch, match=r"train\.seed: 3 → 4.*--overwrite"):
        run(_cfg(run_dict, wan_shards, out, train={"max_steps": 2, "seed": 4}))
    assert _snapshot(out) == before  # metrics.jsonl and final/ as they were


def test_overwrite_replaces_a_finished_run_folder_but_never_a_users_folder(run_dict, wan_shards, tmp_path):
    out = tmp_path / "run"
    run(_cfg(run_dict, wan_shards, out))
    result = run(_cfg(run_dict, wan_shards, out, train={"max_steps": 2, "seed": 4}), overwrite=True)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2] and result.fake_quant_dir is not None
    assert json.loads((out / PROVENANCE).read_text())["facts"]["train.seed"] == "4"

    users = tmp_path / "users"
    (users / "sub").mkdir(parents=True)
    (users / "notes.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(ValueError, match="not empty and was not written by qvgen-train run"):
            run(_cfg(run_dict, wan_shards, users), overwrite=overwrite)
    assert sorted(p.name for p in users.iterdir()) == ["notes.txt", "sub"]


def test_output_dir_inside_the_model_checkpoint_or_the_shards_is_refused(run_dict, wan_shards, tmp_path):
    with pytest.raises(ValueError, match=r"output_dir .* lies inside the input"):
        run(_cfg(run_dict, wan_shards, wan_shards / "run"))
    assert not (wan_shards / "run").exists()


def test_an_interrupted_run_of_another_config_is_refused_listing_the_changed_fields(
    run_dict, wan_shards, tmp_path
):
    out = tmp_path / "run"
    sections = {"checkpoint": {"every_n_steps": 1}, "export": {"fake_quant": False, "deploy": False}}
    run(_cfg(run_dict, wan_shards, out, **sections))  # no final/: as if killed before the export
    assert (out / MARKER_NAME).is_file()
    changed = {"train": {"max_steps": 2, "caption_dropout": 0.5}, "optim": {"weight_decay": 0.0}}
    resume = {"checkpoint": {"every_n_steps": 1, "resume_from": "latest"}}
    with pytest.raises(ProvenanceMismatch) as info:
        run(_cfg(run_dict, wan_shards, out, **{**sections, **changed, **resume}))
    assert info.value.changes == ["optim.weight_decay: 0.0001 → 0.0", "train.caption_dropout: 0.0 → 0.5"]
    run(_cfg(run_dict, wan_shards, out, **{**sections, **resume}))  # the same config resumes


def test_a_torn_last_metrics_line_is_dropped_on_resume_with_a_warning(run_dict, wan_shards, tmp_path, caplog):
    out = tmp_path / "run"
    sections = {"checkpoint": {"every_n_steps": 2}, "train": {"max_steps": 5}}
    sections["export"] = {"fake_quant": False, "deploy": False}
    full = run(_cfg(run_dict, wan_shards, out, **sections))
    shutil.rmtree(out / "checkpoints" / "step-00000004")  # killed while appending step 5's record:
    metrics = out / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join(lines[:4]) + "\n" + '{"step": 5, "loss": 0.1 "lr')
    sections["checkpoint"] = {**sections["checkpoint"], "resume_from": "latest"}
    with caplog.at_level(logging.WARNING, logger="qvgen.core.jsonl"):
        run(_cfg(run_dict, wan_shards, out, **sections))
    assert f"{metrics}: line 5 is torn" in caplog.text
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    assert [r["loss"] for r in records] == list(full.losses)


def test_a_malformed_metrics_line_before_the_last_is_an_error_naming_file_and_line(
    run_dict, wan_shards, tmp_path
):
    out = tmp_path / "run"
    sections = {"checkpoint": {"every_n_steps": 1}, "export": {"fake_quant": False, "deploy": False}}
    run(_cfg(run_dict, wan_shards, out, **sections))
    metrics = out / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join([lines[0][:-3], *lines[1:]]) + "\n")
    sections["checkpoint"] = {**sections["checkpoint"], "resume_from": "latest"}
    with pytest.raises(ValueError, match=rf"{metrics}: line 1 is not valid JSON"):
        run(_cfg(run_dict, wan_shards, out, **sections))
