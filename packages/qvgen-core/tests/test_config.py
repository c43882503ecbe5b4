import argparse
import json
from pathlib import Path
from typing import Literal

import pytest

from qvgen.core import (
    ConfigError,
    Frozen,
    add_override_argument,
    apply_overrides,
    cli_main,
    load_config,
    parse_override,
    schema_json,
)


class Train(Frozen):
    max_steps: int = 10
    """Optimizer steps."""
    lr: float = 1e-4


class Quant(Frozen):
    kind: Literal["lsq", "minmax"] = "lsq"
    bits: int = 4


class Run(Frozen):
    name: str
    train: Train = Train()
    quant: Quant | None = None
    tags: tuple[str, ...] = ()


def test_parse_override_reads_values_as_yaml() -> None:
    assert parse_override("train.max_steps=4") == ("train.max_steps", 4)
    assert parse_override("a=[x, y]") == ("a", ["x", "y"])
    assert parse_override("a=null") == ("a", None)
    assert parse_override("a=0.5") == ("a", 0.5)
    assert parse_override("a=x=y") == ("a", "x=y")
    assert parse_override("a=") == ("a", "")


@pytest.mark.parametrize("item", ["noequals", "=3", "a..b=1", "a.=1"])
def test_parse_override_rejects_malformed_items(item: str) -> None:
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override(item)


def test_parse_override_rejects_invalid_yaml() -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_override("a=[1, 2")


def test_load_config_applies_overrides_before_validation(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("name: r\ntrain:\n  lr: 0.5\n")
    cfg = load_config(Run, path, ["train.max_steps=4", "quant.bits=3", "tags=[a, b]"])
    assert cfg == Run(name="r", train=Train(max_steps=4, lr=0.5), quant=Quant(bits=3), tags=("a", "b"))


def test_load_config_error_names_the_file_and_the_field(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("name: r\ntrain:\n  max_step: 4\n")
    with pytest.raises(ConfigError, match=r"run\.yaml: invalid Run(.|\n)*max_step"):
        load_config(Run, path)


def test_load_config_rejects_setting_a_field_below_a_value(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("name: r\n")
    with pytest.raises(ConfigError, match="`name` is a value, not a section"):
        load_config(Run, path, ["name.x=1"])


@pytest.mark.parametrize(
    ("text", "message"), [("- a\n- b\n", "a config file is a YAML mapping"), ("a: [1\n", "not valid YAML")]
)
def test_load_config_rejects_files_that_are_not_mappings(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"bad.yaml: {message}"):
        load_config(Run, path)


def test_load_config_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read"):
        load_config(Run, tmp_path / "nope.yaml")


def test_load_config_reads_json_too(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"name": "j"}))
    assert load_config(Run, path).name == "j"


def test_apply_overrides_revalidates_and_keeps_the_input() -> None:
    cfg = Run(name="r")
    assert apply_overrides(cfg, ()) is cfg
    assert apply_overrides(cfg, ["train.lr=0.1"]).train.lr == 0.1
    with pytest.raises(ConfigError, match="invalid Run"):
        apply_overrides(cfg, ["quant.kind=gptq"])


def test_add_override_argument_collects_repeated_set_options() -> None:
    parser = argparse.ArgumentParser()
    add_override_argument(parser)
    assert parser.parse_args(["--set", "a=1", "--set", "b=2"]).overrides == ["a=1", "b=2"]
    assert parser.parse_args([]).overrides == []


def test_frozen_is_immutable_strict_and_documents_fields() -> None:
    cfg = Train()
    with pytest.raises(ValueError, match="frozen"):
        cfg.max_steps = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match="extra"):
        Train(max_step=3)  # type: ignore[call-arg]
    schema = json.loads(schema_json(Train))
    assert schema["properties"]["max_steps"]["description"] == "Optimizer steps."


def _dispatch(args: list[str]) -> int:
    if args == ["fail"]:
        raise OSError(28, "No space left on device")
    if args == ["bug"]:
        raise RuntimeError("a bug")
    return 0


def test_cli_main_prints_user_errors_as_one_line_and_returns_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main("qvgen-x", _dispatch, ["fail"]) == 1
    assert capsys.readouterr().err.startswith("qvgen-x: error: [Errno 28] No space left on device (run again")
    assert cli_main("qvgen-x", _dispatch, ["ok"]) == 0
    with pytest.raises(RuntimeError):  # not a user error: a traceback
        cli_main("qvgen-x", _dispatch, ["bug"])
    with pytest.raises(OSError):  # --debug: the traceback of a user error too
        cli_main("qvgen-x", _dispatch, ["fail", "--debug"])
