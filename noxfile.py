"""Test sessions for the qvgen monorepo.

`nox` runs every test session: each package alone (`tests(core)`, `tests(quant)` ... `tests(demo)`),
`integration`, `lint` and `typecheck`. `nox -s demo` (the README's first command, not a default: it is the main job, not a test)
runs `qvgen demo` end to end on the embedded tiny teacher.
Every install goes through `-c constraints.txt`, which pins the CPU build of torch that lies on disk.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import nox

ROOT = Path(__file__).parent
PACKAGES = ROOT / "packages"
CONSTRAINTS = ("-c", str(ROOT / "constraints.txt"))
PYTHON = "3.11"
SIBLING_MODULES = {
    "core": "qvgen.core",
    "quant": "qvgen.quant",
    "aux": "qvgen.auxiliary",
    "data": "qvgen.data",
    "models": "qvgen.models",
    "train": "qvgen.train",
    "eval": "qvgen.eval",
    "demo": "qvgen.demo",
}
LIBRARY_PACKAGES = ["core", "quant", "aux", "data", "models", "train", "eval"]

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = False
nox.options.sessions = [
    *(f"tests({p})" for p in [*LIBRARY_PACKAGES, "demo"]),
    "integration",
    "lint",
    "typecheck",
]
TEST_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
NO_COMPILE = "--no-compile"
"""pip skips byte-compiling what it installs (torch + diffusers + transformers: 92 s → 34 s per venv here);
Python compiles the modules a session imports, and only those, when it first imports them. (A flag, not
PIP_NO_COMPILE: pip reads that variable inverted, "1" keeps compiling.)"""


def declared_qvgen_deps(short: str) -> list[str]:
    """The qvgen-* packages that packages/qvgen-<short> declares, transitively, itself first."""
    meta = tomllib.loads((PACKAGES / f"qvgen-{short}" / "pyproject.toml").read_text())
    out = [short]
    for dep in meta["project"]["dependencies"]:
        name = dep.split(";")[0].split("[")[0].strip()
        if name.startswith("qvgen-"):
            for sub in declared_qvgen_deps(name.removeprefix("qvgen-")):
                if sub not in out:
                    out.append(sub)
    return out


def install_local(session: nox.Session, shorts: list[str], extras: tuple[str, ...] = ()) -> None:
    """Install the given packages editable from packages/, all in one pip call, pinned by constraints."""
    paths: list[str] = []
    for short in shorts:
        paths += ["-e", str(PACKAGES / f"qvgen-{short}")]
    session.install(NO_COMPILE, *CONSTRAINTS, "pytest", "hypothesis", *extras, *paths)


@nox.session(python=PYTHON)
@nox.parametrize("package", [*LIBRARY_PACKAGES, "demo"], ids=[*LIBRARY_PACKAGES, "demo"])
def tests(session: nox.Session, package: str) -> None:
    """One package alone: a fresh venv with only it and its declared qvgen dependencies."""
    closure = declared_qvgen_deps(package)
    # quant: the triton extra too, so its Triton kernel tests run under the CPU interpreter (TRITON_INTERPRET=1)
    # models, demo: peft too (their `lora` extra), so the LoRA tests run rather than skip
    extras = {"quant": ("triton",), "models": ("peft",), "demo": ("peft",)}.get(package, ())
    install_local(session, closure, extras=extras)
    undeclared = [SIBLING_MODULES[s] for s in SIBLING_MODULES if s not in closure]
    session.run(
        "python",
        "-c",
        "import importlib.util, sys\n"
        f"bad = [m for m in {undeclared!r} if importlib.util.find_spec(m) is not None]\n"
        "sys.exit(f'undeclared qvgen packages importable: {bad}' if bad else 0)",
    )
    session.run("python", "-c", f"import {SIBLING_MODULES[package]}")
    # the multi-process tests (marked slow) run in `nox -s slow`, which keeps the default run under 30 min
    tests_dir = str(PACKAGES / f"qvgen-{package}" / "tests")
    session.run("pytest", tests_dir, "-m", "not slow", *session.posargs, env=TEST_ENV)


@nox.session(python=PYTHON)
def slow(session: nox.Session) -> None:
    """The multi-process tests (DDP, FSDP2, two sampling processes: `@pytest.mark.slow`), every package
    installed together, then every loader fuzz test (`tests/test_fuzz*.py`) with ten times the examples
    (`QVGEN_FUZZ_PROFILE=slow`, 19,000 inputs). Not a default session: it takes 5–10 min on a 2-core CPU, plus
    about 3 min of fuzzing."""
    install_local(session, [*LIBRARY_PACKAGES, "demo"])
    for package in [*LIBRARY_PACKAGES, "demo"]:
        tests_dir = str(PACKAGES / f"qvgen-{package}" / "tests")
        # exit code 5: the package has no slow test
        session.run("pytest", tests_dir, "-m", "slow", *session.posargs, env=TEST_ENV, success_codes=[0, 5])
    for package in [*LIBRARY_PACKAGES, "demo"]:
        fuzz = sorted(str(p) for p in (PACKAGES / f"qvgen-{package}" / "tests").glob("test_fuzz*.py"))
        if fuzz:
            session.run("pytest", *fuzz, *session.posargs, env={**TEST_ENV, "QVGEN_FUZZ_PROFILE": "slow"})


@nox.session(python=PYTHON)
def integration(session: nox.Session) -> None:
    """Cross-package tests: every package installed together (+ import-linter for the contract test)."""
    install_local(session, [*LIBRARY_PACKAGES, "demo"], extras=("import-linter",))
    session.run("pytest", str(ROOT / "tests" / "integration"), *session.posargs, env=TEST_ENV)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check + format check, no qvgen/__init__.py (the namespace is PEP 420), the import contracts."""
    session.install(NO_COMPILE, *CONSTRAINTS, "-r", str(ROOT / "requirements-dev.txt"))
    stray = sorted(str(p.relative_to(ROOT)) for p in PACKAGES.glob("*/src/qvgen/__init__.py"))
    if stray:
        session.error(f"qvgen is a PEP 420 namespace; delete {stray}")
    session.run("ruff", "check", str(ROOT))
    session.run("ruff", "format", "--check", str(ROOT))
    # the import contracts in .importlinter (layers + exported names only); grimp reads the sources, so the
    # packages need not be installed, only findable
    srcs = [str(p) for p in sorted(PACKAGES.glob("*/src"))]
    session.run("lint-imports", "--no-cache", env={"PYTHONPATH": os.pathsep.join(srcs)})


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy over every package's src/."""
    install_local(session, [*LIBRARY_PACKAGES, "demo"], extras=("-r", str(ROOT / "requirements-dev.txt")))
    srcs = [str(p) for p in sorted(PACKAGES.glob("*/src"))]
    session.run("mypy", *srcs, env={"MYPYPATH": os.pathsep.join(srcs)})


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """The README's first command: the main job end to end on the embedded tiny default."""
    install_local(session, [*LIBRARY_PACKAGES, "demo"])
    args = session.posargs or []
    session.run("qvgen", "demo", *args, env=TEST_ENV)


@nox.session(python=PYTHON)
def realwidth(session: nox.Session) -> None:
    """`benchmarks/realwidth.py`: Wan2.1-T2V-1.3B and CogVideoX-2B at the released width (depth reduced)
    through precompute → training → export → load_pipeline → sampling → scoring, and the peer step when
    `QVGEN_REFERENCE_QUANT` names the reference's `training/quant/quant.py`. Not a default: ~15 min on a
    2-core CPU. Writes the `## realwidth` section of benchmarks/RESULTS.md (`-- --no-results`: print only)."""
    install_local(session, [*LIBRARY_PACKAGES, "demo"])
    session.run("python", str(ROOT / "benchmarks" / "realwidth.py"), *session.posargs, env=TEST_ENV)


@nox.session(python=PYTHON)
def vbench(session: nox.Session) -> None:
    """The real VBench package (not a default: a ~6 GB venv of torch 2.14.1 + torchvision 0.29.1 + vbench).

    VBench pins transformers 4.33 and needs a torchvision that does not import beside the CPU torch 2.13, so it
    gets its own interpreter, .nox/vbench/tmp/vbench-venv (packages/qvgen-eval/scripts/vbench_smoke.sh builds
    and reuses the same one); qvgen-eval (in this session's venv) calls it through `QVGEN_VBENCH_PYTHON`, an
    absolute path, since VBench runs with its output folder as the current directory.
    """
    install_local(session, declared_qvgen_deps("eval"))
    vbench_venv = Path(session.create_tmp()).absolute() / "vbench-venv"
    vbench_python = vbench_venv / "bin" / "python"
    if not vbench_python.exists():
        session.run("python3.11", "-m", "venv", str(vbench_venv), external=True)
        session.run(
            str(vbench_python), "-m", "pip", "install", "torch==2.14.1", "torchvision==0.29.1", "vbench",
            external=True,
        )  # fmt: skip
    tests = PACKAGES / "qvgen-eval" / "tests"
    session.run(
        "pytest", str(tests / "test_vbench.py"), str(tests / "test_compare.py"), "-k", "vbench", *session.posargs,
        env={**TEST_ENV, "QVGEN_VBENCH_PYTHON": str(vbench_python)},
    )  # fmt: skip


@nox.session(python=PYTHON)
def wheelhouse(session: nox.Session) -> None:
    """Build every packages/* into dist/ (a wheelhouse), then install qvgen-eval alone from it and import it.

    Afterwards `pip install -c constraints.txt --find-links dist qvgen-train` (any one package) pulls its
    qvgen siblings from dist/. Not a default session: its fresh venv installs torch again (a few minutes).
    `nox -s wheelhouse -- --build-only` only builds.
    """
    dist = ROOT / "dist"
    dist.mkdir(exist_ok=True)
    for stale in dist.glob("qvgen_*.whl"):
        stale.unlink()
    session.install(NO_COMPILE, *CONSTRAINTS, "hatchling", "pytest")
    projects = sorted(str(p.parent) for p in PACKAGES.glob("*/pyproject.toml"))
    session.run(
        "python", "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), *projects
    )
    if "--build-only" not in session.posargs:
        session.run(
            "pytest", str(ROOT / "tests" / "wheelhouse"), env={**TEST_ENV, "QVGEN_WHEELHOUSE": str(dist)}
        )
