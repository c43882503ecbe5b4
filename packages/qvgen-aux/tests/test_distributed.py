"""Φ under DistributedDataParallel: two CPU processes (gloo) cross every boundary and stay identical."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_worker.py")


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(out), "resvd,columns"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["resvd", "columns"])
def test_ddp_ranks_agree_across_every_boundary_and_end_without_phi(ddp_runs, mode):
    runs = [torch.load(ddp_runs / f"{mode}-rank{r}.pt", weights_only=True) for r in range(2)]
    assert runs[0]["widths"] == runs[1]["widths"]
    expected = [8] * 3 + [4] * 3 + [2] * 3 + [1] * 3 + [] if mode == "resvd" else [8] * 12
    assert [w[0] for w in runs[0]["widths"][:12]] == expected
    assert runs[0]["widths"][-1] == []
    assert all(runs[0]["phi_grads_agree"]) and len(runs[0]["phi_grads_agree"]) == 12
    states = [run["state"] for run in runs]
    assert list(states[0]) == list(states[1]) and not any("lowrank" in k for k in states[0])
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key
