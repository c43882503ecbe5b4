"""`qvgen-train --help` and a wrong flag are answered before torch, diffusers or transformers are imported."""

import subprocess
import sys

import pytest

HEAVY = {"torch", "diffusers", "transformers", "torchao", "accelerate"}


def _imported(*argv: str) -> tuple[int, set[str]]:
    """Run the console script's `main` with `argv` under `-X importtime`: exit code, top-level modules imported."""
    code = f"import sys; sys.argv = ['qvgen-train', *{list(argv)!r}]; from qvgen.entrypoints.qvgen_train import main; main()"
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, timeout=120
    )
    names = {
        line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")
    }
    return done.returncode, names


@pytest.mark.parametrize(
    ("argv", "exit_code"),
    [
        (["--help"], 0),
        (["run", "--help"], 0),
        (["import-reference", "--help"], 0),
        (["run", "x.yaml", "--nope"], 2),
    ],
)
def test_help_and_usage_errors_import_no_torch(argv: list[str], exit_code: int) -> None:
    code, imported = _imported(*argv)
    assert code == exit_code
    assert "qvgen.entrypoints.qvgen_train" in imported
    assert not HEAVY & imported, f"imported before parsing: {sorted(HEAVY & imported)}"


def test_schema_choices_name_every_config() -> None:
    from qvgen.entrypoints.qvgen_train import SCHEMA_NAMES
    from qvgen.train.cli import SCHEMAS

    assert tuple(sorted(SCHEMAS)) == SCHEMA_NAMES
