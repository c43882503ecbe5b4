"""Φ under data parallelism: two CPU processes (gloo) cross every boundary and stay identical.

DDP keeps Φ inside the wrapper and is re-wrapped when `apply_` replaces Parameters; FSDP2 keeps Φ out of
the sharding (`ignored_params`) and averages its gradients with `all_reduce_grads_`.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qvgen.auxiliary import AuxConfig, DecaySchedule, all_reduce_grads_, attach_
from qvgen.auxiliary.testing import tiny_quantized_mlp

WORKER = Path(__file__).with_name("dp_worker.py")
RUNS = ["ddp-resvd", "ddp-columns", "fsdp-resvd"]


@pytest.fixture(scope="module")
def dp_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("dp")
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(out), ",".join(RUNS)], capture_output=True, text=True, timeout=400
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("run", RUNS)
def test_data_parallel_ranks_agree_across_every_boundary_and_end_without_phi(dp_runs, run):
    runs = [torch.load(dp_runs / f"{run}-rank{r}.pt", weights_only=True) for r in range(2)]
    assert runs[0]["widths"] == runs[1]["widths"]
    expected = [8] * 3 + [4] * 3 + [2] * 3 + [1] * 3 if run.endswith("resvd") else [8] * 12
    assert [w[0] for w in runs[0]["widths"][:12]] == expected
    assert runs[0]["widths"][-1] == []
    assert all(runs[0]["phi_grads_agree"]) and len(runs[0]["phi_grads_agree"]) == 12
    states = [r["state"] for r in runs]
    assert list(states[0]) == list(states[1]) and not any("lowrank" in k for k in states[0])
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key


@pytest.mark.slow
def test_fsdp_and_ddp_train_the_same_model(dp_runs):
    ddp, fsdp = (torch.load(dp_runs / f"{run}-rank0.pt", weights_only=True)["state"] for run in RUNS[::2])
    for key in ddp:
        torch.testing.assert_close(fsdp[key], ddp[key], atol=1e-5, rtol=1e-4, msg=key)


def test_all_reduce_grads_is_a_no_op_without_a_process_group():
    model = tiny_quantized_mlp()
    branches = attach_(model, AuxConfig(decay=DecaySchedule(initial_rank=4)))
    model(torch.randn(4, 64)).sum().backward()
    before = [b.L.grad.clone() for b in branches.values()]
    all_reduce_grads_(branches)
    assert all(torch.equal(b.L.grad, g) for b, g in zip(branches.values(), before))
