"""`qvgen-train --help` and a wrong flag are answered before torch, diffusers or transformers are imported."""

import pytest

from qvgen.core.testing import HEAVY_MODULES, modules_imported_by_console_script

HEAVY = HEAVY_MODULES


def _imported(*argv: str) -> tuple[int, set[str]]:
    return modules_imported_by_console_script("qvgen.entrypoints.qvgen_train", "qvgen-train", *argv)


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
