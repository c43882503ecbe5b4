"""Test helpers shared by qvgen's packages: a real, small filesystem to fill up.

`small_filesystem(size)` mounts a tmpfs of `size` bytes for the duration of a `with` block, so a test sees the
full-disk error torch, safetensors or accelerate really raise, not an `OSError` raised by hand. It needs root
(and a kernel that lets this container mount tmpfs); otherwise it raises `unittest.SkipTest`, which pytest
reports as a skip with that reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import unittest
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def small_filesystem(size_bytes: int) -> Iterator[Path]:
    """A freshly mounted tmpfs of `size_bytes` (rounded up to pages), unmounted and removed afterwards."""
    if os.name != "posix" or os.geteuid() != 0 or shutil.which("mount") is None:
        raise unittest.SkipTest("a real full-disk test mounts a small tmpfs, which needs root and `mount`")
    mount_point = Path(tempfile.mkdtemp(prefix="qvgen-smallfs-"))
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={int(size_bytes)}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        mount_point.rmdir()
        raise unittest.SkipTest(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)
        shutil.rmtree(mount_point, ignore_errors=True)


def fill_filesystem(folder: str | os.PathLike[str], leave_bytes: int = 0) -> Path:
    """Fill the filesystem of `folder` with one ballast file until at most `leave_bytes` are free."""
    ballast = Path(folder) / ".ballast"
    free = shutil.disk_usage(folder).free
    with open(ballast, "wb", buffering=0) as f:
        chunk = b"\0" * (1 << 16)
        remaining = max(0, free - leave_bytes)
        try:
            while remaining > 0:
                written = f.write(chunk[: min(len(chunk), remaining)])
                if not written:
                    break
                remaining -= written
        except OSError:
            pass
    return ballast


HEAVY_MODULES = frozenset({"torch", "diffusers", "transformers", "torchao", "accelerate"})
"""What a console script must not import before it has parsed its arguments."""


def modules_imported_by_console_script(entrypoint: str, prog: str, *argv: str) -> tuple[int, set[str]]:
    """Run `entrypoint`'s `main()` (e.g. `qvgen.entrypoints.qvgen_train`) as `prog argv...` in a fresh
    interpreter under `-X importtime`: its exit code and the names of every module it imported."""
    import sys

    code = f"import sys; sys.argv = [{prog!r}, *{list(argv)!r}]; from {entrypoint} import main; main()"
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, timeout=120
    )
    names = {
        line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")
    }
    return done.returncode, names


def default_sigint() -> None:
    """`preexec_fn` for a child that a test interrupts: SIGINT back to its default action. A shell starts
    background jobs with SIGINT ignored, and Python then installs no KeyboardInterrupt handler, so a CI run
    launched with `&` would otherwise never see the test's Ctrl-C."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
