"""`qvgen demo` through the command line: table and report path printed, bad arguments exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from qvgen.demo.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


def test_demo_prints_the_table_and_the_report_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--steps", "5", "--prompts", "1", "--clips", "8", "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    report = out / "report" / "report.html"
    assert str(report.resolve()) in printed and report.is_file()
    names = [line.split("|")[0].strip() for line in printed.splitlines() if "|" in line]
    assert names == ["model", "teacher", "rtn-w4a4", "qvgen-w4a4"]
    assert "Φ rank at the end of training: 0" in printed


def test_demo_rejects_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--out", str(tmp_path), "--steps", "2"]) == 2
    assert "steps=2" in capsys.readouterr().out
    assert main(["demo", "--out", str(tmp_path), "--prompts", "0"]) == 2
    assert "prompts" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["demo", "--bits", "2"])
    assert info.value.code == 2
    assert not any(tmp_path.iterdir())
