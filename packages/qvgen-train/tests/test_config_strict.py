"""Issue 32, item 8: run configs coerced and swallowed; `config.py` and `method_config.py` imported each other.

`caption_dropout: yes` became 1.0, `--set train.max_steps=yes` became 1, a duplicate YAML key silently won,
and `output_dir: ~/x` split one run between a literal `./~/x/` and `$HOME/x/final`.
"""

import ast
from pathlib import Path

import pytest
import yaml

from qvgen.train.cli import main
from qvgen.train.config import RunConfig
from qvgen.train.recipe import run


def _write(tmp_path, data, text=None):
    path = tmp_path / "run.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(data, sort_keys=False))
    return path


def _one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    return err[0]


def test_a_boolean_caption_dropout_is_refused_in_one_line_naming_the_field(
    run_dict, wan_shards, tmp_path, capsys
):
    data = run_dict("wan", wan_shards, tmp_path / "out")
    data["train"]["caption_dropout"] = True  # `caption_dropout: yes` in YAML
    path = _write(
        tmp_path, data, yaml.safe_dump(data).replace("caption_dropout: true", "caption_dropout: yes")
    )
    capsys.readouterr()  # the tiny checkpoint's build output
    assert main(["run", str(path), "--dry-run"]) == 2
    line = _one_error_line(capsys)
    assert "run.yaml" in line and "train.caption_dropout" in line and "True" in line


def test_a_boolean_set_override_for_max_steps_is_refused_in_one_line(run_dict, wan_shards, tmp_path, capsys):
    path = _write(tmp_path, run_dict("wan", wan_shards, tmp_path / "out"))
    capsys.readouterr()
    assert main(["run", str(path), "--set", "train.max_steps=yes", "--dry-run"]) == 2
    line = _one_error_line(capsys)
    assert "--set train.max_steps=yes" in line and "train.max_steps" in line and "ends at step" not in line


def test_a_duplicate_yaml_key_is_refused_naming_both_lines(run_dict, wan_shards, tmp_path, capsys):
    text = yaml.safe_dump(run_dict("wan", wan_shards, tmp_path / "out"), sort_keys=False)
    path = _write(tmp_path, None, text + "train: {max_steps: 3}\n")
    capsys.readouterr()  # the tiny checkpoint's build output
    assert main(["run", str(path), "--dry-run"]) == 2
    line = _one_error_line(capsys)
    assert "run.yaml" in line and "duplicate key 'train'" in line and "again on line" in line


@pytest.mark.parametrize("through", ["cli", "api"])
def test_a_tilde_output_dir_lands_entirely_under_the_expanded_path(
    through, run_dict, wan_shards, tmp_path, monkeypatch, capsys
):
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir(), cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    sections = {"aux": None, "train": {"max_steps": 2}, "export": {"fake_quant": True, "deploy": False}}
    data = run_dict("wan", wan_shards, Path("~/x"), **sections)
    data["output_dir"] = "~/x"
    if through == "cli":
        assert main(["run", str(_write(tmp_path, data))]) == 0
    else:
        run(RunConfig.model_validate(data))
    assert not list(cwd.iterdir())  # no literal ./~/x
    assert (home / "x" / "metrics.jsonl").is_file()
    assert (home / "x" / "final" / "fake_quant" / "student_manifest.json").is_file()


def test_method_config_does_not_import_the_run_config():
    import qvgen.train.method_config as module

    tree = ast.parse(Path(module.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any(name and name.startswith("qvgen.train") for name in imported), imported


@pytest.mark.parametrize("mode", ["reference", "reference_nofix"])
def test_the_reference_replay_group_modes_are_refused_for_training(
    run_dict, wan_shards, tmp_path, capsys, mode
):
    data = run_dict("wan", wan_shards, tmp_path / "out")
    data.setdefault("quant", {}).setdefault("activation", {"kind": "clipped_dynamic"})["group_mode"] = mode
    capsys.readouterr()
    assert main(["run", str(_write(tmp_path, data)), "--dry-run"]) == 2
    line = _one_error_line(capsys)
    assert "group_mode" in line and "replays the reference's sampling" in line
