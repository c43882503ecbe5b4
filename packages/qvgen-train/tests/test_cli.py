import json
from pathlib import Path

import pytest
import yaml

from qvgen.train.cli import main
from qvgen.train.config import RunConfig
from qvgen.train.precompute import PrecomputeConfig

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


def test_schema_prints_the_run_config_json_schema(capsys):
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == RunConfig.model_json_schema()


@pytest.mark.parametrize(("which", "model"), [("run", RunConfig), ("precompute", PrecomputeConfig)])
def test_committed_schema_files_are_current(which, model):
    path = CONFIGS / "schema" / f"{which}.json"
    assert json.loads(path.read_text()) == model.model_json_schema(), (
        f"regenerate {path} with `qvgen-train schema {which}`"
    )


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_config_validates_and_points_at_its_schema(path, capsys):
    first = path.read_text().splitlines()[0]
    which = "precompute" if "precompute.json" in first else "run"
    assert first == f"# yaml-language-server: $schema=./schema/{which}.json"
    assert main([which, str(path), "--dry-run"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["schema_version"] == 1


def test_dry_run_prints_the_resolved_config_with_overrides(run_dict, wan_shards, tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(run_dict("wan", wan_shards, tmp_path / "out")))
    assert (
        main(["run", str(path), "--set", "train.max_steps=9", "--set", "quant.weight.bits=3", "--dry-run"])
        == 0
    )
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["train"]["max_steps"] == 9 and resolved["quant"]["weight"]["bits"] == 3
    assert resolved["optim"]["lr"]["act_clip"] == 0.01  # defaults are filled in
    assert not (tmp_path / "out").exists()


def test_invalid_config_returns_2_and_names_the_file(run_dict, wan_shards, tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(run_dict("wan", wan_shards, tmp_path / "out")))
    assert main(["run", str(path), "--set", "train.max_steps=-1"]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "max_steps" in err
    assert main(["precompute", str(tmp_path / "missing.yaml")]) == 2


def test_run_command_trains_and_exports(run_dict, wan_shards, tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(run_dict("wan", wan_shards, tmp_path / "out")))
    assert main(["run", str(path), "--set", "export.deploy=false"]) == 0
    assert "final student:" in capsys.readouterr().out
    assert (tmp_path / "out" / "final" / "fake_quant" / "student_manifest.json").is_file()
