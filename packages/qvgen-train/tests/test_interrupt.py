"""Issue 32, item 9: Ctrl-C printed a 28-frame traceback ending in KeyboardInterrupt (resume worked).

A real `qvgen-train run` process gets SIGINT (or SIGTERM) once its first checkpoint is on disk: it exits 130
(143) with one line on stderr naming the step, the last checkpoint and the command that resumes it.
"""

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from qvgen.core.testing import default_sigint
from qvgen.train.checkpoint import latest_checkpoint


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_mid_run_exits_with_one_line_naming_the_checkpoint(
    signum, code, run_dict, wan_shards, tmp_path
):
    out = tmp_path / "run"
    cfg = run_dict(
        "wan", wan_shards, out, aux=None, train={"max_steps": 100_000},
        checkpoint={"every_n_steps": 2, "keep_last": 1}, export={"fake_quant": False, "deploy": False},
    )  # fmt: skip
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TQDM_DISABLE": "1"}
    command = [sys.executable, "-m", "qvgen.entrypoints.qvgen_train", "run", str(config), "--no-progress"]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=default_sigint
    )
    try:
        deadline = time.monotonic() + 300
        while latest_checkpoint(out / "checkpoints") is None:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.2)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == code, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    (line,) = lines
    last = latest_checkpoint(out / "checkpoints")
    assert line.startswith("qvgen-train: interrupted at step "), line
    assert f"the last checkpoint is {last}" in line
    assert f"resume with: qvgen-train run {config} --set checkpoint.resume_from=latest" in line
