"""Issue 13, failure 6: user errors in `qvgen` print one message and exit 1; `--debug` shows the traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from qvgen.demo.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


def _argv(tmp_path: Path) -> list[str]:
    teacher = tmp_path / "no-teacher-here"
    return ["demo", "--out", str(tmp_path / "out"), "--teacher", str(teacher), "--steps", "5", "--prompts", "1",
            "--clips", "8", "--no-progress"]  # fmt: skip


def test_missing_teacher_folder_is_one_message_and_exit_1(tmp_path: Path, capsys) -> None:
    assert main(_argv(tmp_path)) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = next(x for x in err.splitlines() if x.startswith("qvgen: error: "))
    assert "no-teacher-here" in line


def test_debug_lets_the_error_propagate(tmp_path: Path) -> None:
    with pytest.raises((ValueError, OSError), match="no-teacher-here"):
        main(["--debug", *_argv(tmp_path)])
