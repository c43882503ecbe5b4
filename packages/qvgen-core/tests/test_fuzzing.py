"""`qvgen.core.fuzzing` (the fuzz property and its counts) and the fuzzing of `load_config` itself (issue 32).

The regression tests pin what the fuzzing found in `load_config`: each input below used to escape as an internal
exception (TypeError, a bare ValueError, RecursionError, UnicodeDecodeError) or took seconds (an alias bomb).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Annotated, Literal

import pytest
from hypothesis import given
from pydantic import Field

from qvgen.core import ConfigError, Frozen, load_config
from qvgen.core.fuzzing import (
    COUNTS_ENV,
    PROFILE_ENV,
    SLOW_FACTOR,
    check_loader,
    config_documents,
    fuzz_examples,
    fuzz_settings,
    run_fuzz_suite,
)

pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")


# --------------------------------------------------------------------------------------------- the property


@pytest.fixture(autouse=True)
def _own_counts(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests of the property fail loaders on purpose: they count into their own file, never into the
    benchmark's `QVGEN_FUZZ_COUNTS` (the fuzz tests below do count there)."""
    if "fuzzed" not in request.node.name:
        monkeypatch.setenv(COUNTS_ENV, str(tmp_path / "own-counts.json"))


def test_check_loader_passes_a_returned_object_and_counts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counts = tmp_path / "counts.json"
    monkeypatch.setenv(COUNTS_ENV, str(counts))
    assert check_loader("x", lambda: 3, folder=tmp_path, names=["f"]) == 3
    assert (
        check_loader(
            "x", _raises(ValueError(f"{tmp_path}/f.yaml: bad value")), folder=tmp_path, names=["f.yaml"]
        )
        is None
    )
    data = json.loads(counts.read_text())
    assert data["fuzz_cases"] == 2 and data["fuzz_failures"] == 0
    assert data["loaders"]["x"] == {"cases": 2, "failures": 0, "accepted": 1}


@pytest.mark.parametrize(
    ("error", "finding"),
    [
        (KeyError("video"), "internal KeyError"),
        (TypeError("unhashable type: 'list'"), "internal TypeError"),
        (RecursionError("maximum recursion depth exceeded"), "internal RecursionError"),
        (ValueError("Exceeds the limit (4300 digits)"), "names none of"),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), "unwrapped UnicodeDecodeError"),
        (json.JSONDecodeError("Expecting value", "x f.json", 0), "unwrapped JSONDecodeError"),
        (OSError(""), "empty message"),
        (
            ValueError("f.json: invalid manifest: 1 validation error for M\nsteps\n  Input should be"),
            "of 3 lines",
        ),
    ],
)
def test_check_loader_fails_an_internal_or_anonymous_error_and_counts_the_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException, finding: str
) -> None:
    counts = tmp_path / "out" / "counts.json"
    monkeypatch.setenv(COUNTS_ENV, str(counts))
    with pytest.raises(AssertionError, match=finding):
        check_loader("loader", _raises(error), folder=tmp_path / "out", names=["f.json"])
    data = json.loads(counts.read_text())
    assert data["fuzz_failures"] == 1 and finding in data["loaders"]["loader"]["first_failure"]


def test_check_loader_fails_a_loader_that_writes_into_its_input(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="changed its input folder"):
        check_loader("w", lambda: (tmp_path / "cache").write_text("x"), folder=tmp_path, names=[])


def test_check_loader_fails_a_refused_input_that_leaves_a_partial_output(tmp_path: Path) -> None:
    out = tmp_path / "out"

    def half_written() -> None:
        out.mkdir()
        (out / "model.safetensors").write_bytes(b"12")
        raise ValueError(f"{tmp_path}/in: bad")

    (tmp_path / "in").mkdir()
    with pytest.raises(AssertionError, match="partial output"):
        check_loader("p", half_written, folder=tmp_path / "in", names=[str(tmp_path)], outputs=[out])


def test_check_loader_fails_a_hang(tmp_path: Path) -> None:
    def spin() -> None:
        end = time.monotonic() + 30
        while time.monotonic() < end:
            pass

    with pytest.raises(AssertionError, match="hang"):
        check_loader("h", spin, folder=tmp_path, names=[], timeout_s=0.2)


def test_slow_profile_runs_more_examples(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PROFILE_ENV, raising=False)
    assert fuzz_examples(7) == 7
    monkeypatch.setenv(PROFILE_ENV, "slow")
    assert fuzz_examples(7) == 7 * SLOW_FACTOR


def _raises(error: BaseException):
    def call() -> None:
        raise error

    return call


# --------------------------------------------------------------------------------------------- load_config


class Inner(Frozen):
    rate: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    mode: Literal["a", "b"] = "a"


class Cfg(Frozen):
    steps: Annotated[int, Field(ge=1)]
    enabled: bool = True
    out: Path
    names: tuple[str, ...] = ()
    inner: Inner = Inner()


VALID = {
    "steps": 4,
    "enabled": False,
    "out": "runs/x",
    "names": ["p", "q"],
    "inner": {"rate": 0.25, "mode": "b"},
}


def _is_cfg(cfg: object) -> None:
    assert isinstance(cfg, Cfg), type(cfg)


@fuzz_settings(200)
@given(config_documents(VALID))
def test_fuzzed_config_file_loads_or_is_one_config_error_naming_the_file(document: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        path.write_bytes(document)
        check_loader(
            "core.load_config",
            lambda: load_config(Cfg, path),
            folder=Path(tmp),
            names=[str(path)],
            validate=_is_cfg,
            errors=(ConfigError,),
        )


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcde", "bcdef", strict=True)
)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b"? [a, b]\n: 1\n", "a mapping key must be a plain value"),  # was TypeError: unhashable type: 'list'
        (b"steps: " + b"9" * 5000 + b"\n", "a value cannot be read"),  # was a bare ValueError, no file name
        (b"{a: " * 2000 + b"1" + b"}" * 2000, "nested too deeply"),  # was RecursionError
        (b"[" * 200 + b"]" * 200, "nested deeper than"),
        (ALIAS_BOMB.encode(), "alias bomb"),  # was 10 s and a pydantic error of a million values
        (b"\xff\xfe\x00steps: 1", "not UTF-8"),  # was UnicodeDecodeError
    ],
)
def test_config_file_that_used_to_escape_is_one_config_error_naming_the_file(
    tmp_path: Path, document: bytes, message: str
) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(document)
    start = time.monotonic()
    with pytest.raises(ConfigError, match=message) as info:
        load_config(Cfg, path)
    assert str(info.value).startswith(f"{path}: ")
    assert time.monotonic() - start < 5


def test_yaml_syntax_error_and_odd_override_are_one_line_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("steps: 1\nout: : x\n")
    with pytest.raises(ConfigError) as info:
        load_config(Cfg, path)
    assert (
        str(info.value) == f"{path}: not valid YAML: mapping values are not allowed here (line 2, column 6)"
    )
    path.write_text("steps: 1\nout: x\n")
    with pytest.raises(ConfigError) as info:
        load_config(Cfg, path, ["steps=\nx"])
    assert "\n" not in str(info.value) and str(info.value).startswith(f"{path} --set 'steps=\\nx': ")
    with pytest.raises(ConfigError) as info:  # an unknown key with a line break: pydantic names it as given
        load_config(Cfg, path, ["a\nb=1"])
    assert "\n" not in str(info.value) and "'a\\nb': Extra inputs are not permitted" in str(info.value)


def test_override_with_an_unreadable_value_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("steps: 1\nout: x\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Cfg, path, ["steps=" + "9" * 5000])


def test_run_fuzz_suite_counts_every_package_and_a_package_that_errors(tmp_path: Path) -> None:
    """What `benchmarks/reliability.py` calls: one pytest per package; an import error is a failure too."""
    good = tmp_path / "packages" / "qvgen-a" / "tests"
    good.mkdir(parents=True)
    (good / "test_fuzz_a.py").write_text(
        "from pathlib import Path\n"
        "from qvgen.core.fuzzing import check_loader\n"
        "def test_three(tmp_path):\n"
        "    for i in range(3):\n"
        "        check_loader('a.loader', lambda: i, folder=tmp_path, names=[])\n"
    )
    broken = tmp_path / "packages" / "qvgen-b" / "tests"
    broken.mkdir(parents=True)
    (broken / "test_fuzz_b.py").write_text("import qvgen_no_such_module\n")
    (tmp_path / "packages" / "qvgen-c" / "tests").mkdir(parents=True)  # no fuzz tests: skipped
    data = run_fuzz_suite(tmp_path, tmp_path / "counts.json")
    assert data["loaders"]["a.loader"] == {"cases": 3, "failures": 0, "accepted": 3}
    assert data["loaders"]["qvgen-b: pytest"]["failures"] == 1
    assert (data["fuzz_cases"], data["fuzz_failures"]) == (4, 1)
