"""Progress bars of `qvgen-train run`: off when stdout is not a terminal, unless --progress asks for them."""

from pathlib import Path

import yaml

from qvgen.train.cli import main

BARS = ("weight ranges", "Loading weights")


def test_no_bars_when_piped_and_bars_with_progress(run_dict, wan_shards, tmp_path: Path, capsys) -> None:
    path = tmp_path / "run.yaml"
    cfg = run_dict("wan", wan_shards, tmp_path / "out")
    cfg["aux"] = None  # PTQ only (max_steps 0): loads, initializes the ranges and exports
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--set", "train.max_steps=0"]) == 0  # pytest's stdout is not a terminal
    quiet = capsys.readouterr()
    assert not [bar for bar in BARS if bar in quiet.err + quiet.out]
    assert main(["run", str(path), "--set", "train.max_steps=0", "--set", f"output_dir={tmp_path / 'o2'}",
                 "--progress"]) == 0  # fmt: skip
    shown = capsys.readouterr()
    assert "weight ranges" in shown.err  # the one bar this PTQ run has
