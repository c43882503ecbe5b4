"""The import contracts in `.importlinter` (run by `nox -s lint`) hold on the tree and catch planted violations."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT / ".importlinter"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(src_root: Path) -> subprocess.CompletedProcess[str]:
    srcs = sorted(str(p) for p in src_root.glob("*/src"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(srcs)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(CONTRACT)], env=env, capture_output=True, text=True, check=False
    )


def _copy_sources(dst: Path) -> Path:
    for pkg in sorted((ROOT / "packages").glob("*/src")):
        shutil.copytree(pkg, dst / pkg.parent.name / "src", ignore=lambda d, names: [
            n for n in names if not (n.endswith(".py") or (Path(d) / n).is_dir())
        ])  # fmt: skip
    return dst


def test_the_tree_keeps_every_import_contract() -> None:
    result = _lint(ROOT / "packages")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_private_module_import_and_an_upward_import_break_the_contracts(tmp_path: Path) -> None:
    tree = _copy_sources(tmp_path)
    aux = tree / "qvgen-aux" / "src" / "qvgen" / "auxiliary"
    (aux / "planted.py").write_text("from qvgen.quant.linear import QuantLinear\n\nPLANTED = QuantLinear\n")
    quant = tree / "qvgen-quant" / "src" / "qvgen" / "quant"
    (quant / "planted.py").write_text("import qvgen.train\n\nPLANTED = qvgen.train\n")
    result = _lint(tree)
    assert result.returncode == 1, result.stdout
    assert "qvgen.auxiliary is not allowed to import qvgen.quant.linear" in result.stdout
    assert "qvgen.quant.planted -> qvgen.train" in result.stdout


def test_architecture_md_draws_the_layers_of_the_contract() -> None:
    import configparser
    import re

    ini = configparser.ConfigParser()
    ini.read(CONTRACT)
    contract = [
        {m.strip() for m in line.split("|")}
        for line in ini["importlinter:contract:layers"]["layers"].strip().splitlines()
    ]
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    graph = text.split("```")[1]
    drawn = [set(re.findall(r"\((qvgen\.\w+)\)", line)) for line in graph.strip().splitlines()]
    assert drawn == contract
