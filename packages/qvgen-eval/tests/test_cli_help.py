"""`qvgen-eval compare --help` explains its positional config, `--set` and `--progress`."""

import pytest

from qvgen.eval.cli import main


@pytest.mark.parametrize("command", ["sample", "compare", "vbench"])
def test_every_argument_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"{command} config YAML (fields: `qvgen-eval schema {command}`" in text
    assert "--set KEY=VALUE override one config field" in text
    assert "--progress, --no-progress progress bars (default: only when stdout is a terminal)" in text
