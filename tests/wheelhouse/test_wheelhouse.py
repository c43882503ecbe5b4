"""The wheelhouse flow: `nox -s wheelhouse` builds every packages/* into dist/; one package installs alone.

Run by `nox -s wheelhouse` (not a default session: the fresh venv installs torch again, a few minutes),
which sets QVGEN_WHEELHOUSE to the dist/ folder it just built.
"""

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ROOT / "packages"

pytestmark = pytest.mark.slow


def normalized(name: str) -> str:
    return name.lower().replace("-", "_")


def declared_closure(name: str) -> set[str]:
    """``name`` and every qvgen-* distribution it declares, transitively."""
    meta = tomllib.loads((PACKAGES / name / "pyproject.toml").read_text())
    out = {name}
    for dep in meta["project"]["dependencies"]:
        dep_name = dep.split(";")[0].split("[")[0].split(">")[0].split("=")[0].strip()
        if dep_name.startswith("qvgen-"):
            out |= declared_closure(dep_name)
    return out


@pytest.fixture(scope="module")
def wheelhouse() -> Path:
    where = os.environ.get("QVGEN_WHEELHOUSE")
    if not where:
        pytest.skip("needs a built wheelhouse: run `nox -s wheelhouse` (it sets QVGEN_WHEELHOUSE)")
    return Path(where)


def test_every_package_is_in_the_wheelhouse(wheelhouse: Path) -> None:
    projects = {
        tomllib.loads(p.read_text())["project"]["name"]: p.parent for p in PACKAGES.glob("*/pyproject.toml")
    }
    assert "qvgen-core" in projects and "qvgen-eval" in projects
    built = {normalized(w.name.split("-")[0]) for w in wheelhouse.glob("qvgen_*.whl")}
    assert {normalized(n) for n in projects} <= built


def test_eval_installs_alone_from_the_wheelhouse(wheelhouse: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-compile", "-c", str(ROOT / "constraints.txt"),
         "--find-links", str(wheelhouse), "qvgen-eval"],
        check=True,
    )  # fmt: skip
    probe = (
        "import importlib.metadata as m, qvgen.eval\n"
        "print(qvgen.eval.__file__)\n"
        "print(' '.join(sorted(d.metadata['Name'] for d in m.distributions()"
        " if d.metadata['Name'].startswith('qvgen-'))))"
    )
    out = subprocess.run([str(python), "-c", probe], check=True, capture_output=True, text=True).stdout
    location, installed = out.strip().splitlines()[-2:]
    assert Path(location).is_relative_to(venv)  # from the wheel, not an editable checkout
    assert set(installed.split()) == declared_closure("qvgen-eval")  # siblings pulled, nothing more
    help_run = subprocess.run([str(venv / "bin" / "qvgen-eval"), "--help"], capture_output=True, text=True)
    assert help_run.returncode == 0 and "compare" in help_run.stdout
