"""Console scripts print none of the known third-party import noise, and importing any qvgen package prints
nothing at all (the filters are scoped to qvgen's own first import of torchao and diffusers)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qvgen.core.quiet import KNOWN_IMPORT_NOISE

pytestmark = pytest.mark.slow


def noise_lines(text: str) -> list[str]:
    """Lines whose message (torch's 'W1127 12:00:00.0 123 file.py:630] ' prefix removed) a filter drops."""
    strip = re.compile(r"^[IWE]\d{4} [\d:.]+ +\d+ \S+\] ")
    return [
        line
        for line in text.splitlines()
        if any(p.search(strip.sub("", line)) for _, p in KNOWN_IMPORT_NOISE)
    ]


def loose_noise(text: str) -> list[str]:
    """Lines that look like the noise however it is formatted (torch prefixes 'W1127 … _pytree.py:630] ')."""
    words = ("_C_mxfp8", "_C_cutlass_90a", "register_constant()", "Unable to import `torchao`")
    return [line for line in text.splitlines() if any(w in line for w in words)]


def run(*cmd: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout + done.stderr


def test_demo_help_is_clean_and_lists_the_sampling_knobs() -> None:
    beside = Path(sys.executable).parent / "qvgen"  # this interpreter's venv, even when not on PATH
    exe = str(beside) if beside.is_file() else shutil.which("qvgen")
    if exe is None:
        pytest.fail("the qvgen console script is not installed")
    out = run(exe, "demo", "--help")
    assert loose_noise(out) == []
    for flag in ("--sampling-steps", "--guidance", "--threads", "--progress, --no-progress"):
        assert flag in out


def test_filters_match_the_real_noise_of_a_plain_import() -> None:
    out = run(
        sys.executable, "-c", "import torchao, diffusers.quantizers"
    )  # the third-party imports, unfiltered
    if not loose_noise(out):
        pytest.skip("this torch/torchao/diffusers combination prints no import noise to filter")
    assert noise_lines(out) == loose_noise(out)  # every noise line is one the entry points drop


PACKAGES = ("core", "quant", "auxiliary", "data", "models", "train", "eval", "demo")


def test_importing_the_packages_prints_nothing() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    code = "import qvgen.quant, qvgen.train, qvgen.eval"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr == ""


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_imported_first_prints_nothing(package: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", f"import qvgen.{package}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr == ""
