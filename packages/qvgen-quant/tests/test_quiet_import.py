"""`import qvgen.quant` prints nothing on a CPU-only machine (torchao's known import lines are dropped)."""

import subprocess
import sys


def test_import_prints_nothing() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import qvgen.quant"], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr == ""
