"""Issue 13, failure 8: FSDP2 through `qvgen.train.run` had never run (only aux's own FSDP test existed).

Two CPU processes (gloo, torchrun) train the tiny Wan QVGen config with `train.sharding: fsdp2`: the
student's blocks sharded by `fully_shard`, Φ replicated outside them, across every rank-decay boundary
(shrink 4 → 2 → 1, removal), with sharded checkpoints, a resume from the step-4 checkpoint that ends bitwise
equal to the uninterrupted run, and the fake-quant and deploy exports loading in a fresh process.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap

import pytest
import yaml

from qvgen import quant
from qvgen.models import get_family, load_student

DRIVER = textwrap.dedent(
    """
    import hashlib, json, sys
    import torch
    torch.set_num_threads(1)
    from accelerate import PartialState
    from qvgen.train.config import load_config
    from qvgen.train.recipe import run

    result = run(load_config(sys.argv[1]))
    rank = PartialState().process_index
    h = hashlib.sha256()
    if rank == 0:  # the rebuilt whole student (other ranks keep their shards)
        for k, v in sorted(result.model.state_dict().items()):
            h.update(k.encode()); h.update(v.detach().cpu().contiguous().numpy().tobytes())
    with open(f"{sys.argv[2]}/rank{rank}.json", "w") as f:
        json.dump({"losses": result.losses, "weights": h.hexdigest(), "phi_rank": result.phi_rank,
                   "rng": float(torch.rand(()))}, f)
    """
)

SECTIONS = {
    "train": {"max_steps": 9, "caption_dropout": 0.2, "sharding": "fsdp2"},
    "checkpoint": {"every_n_steps": 2, "keep_last": 4},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(tmp_path, name, cfg) -> tuple[dict, dict]:
    work = tmp_path / name
    work.mkdir()
    (work / "run.yaml").write_text(yaml.safe_dump(cfg))
    (work / "driver.py").write_text(DRIVER)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(_free_port()), str(work / "driver.py"), str(work / "run.yaml"), str(work),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-6000:]
    r0, r1 = (json.loads((work / f"rank{i}.json").read_text()) for i in (0, 1))
    return r0, r1


@pytest.mark.slow
def test_fsdp2_run_decays_phi_checkpoints_resumes_bitwise_and_exports(run_dict, wan_shards, tmp_path):
    cfg = run_dict("wan", wan_shards, tmp_path / "a", **SECTIONS)
    r0, r1 = _launch(tmp_path, "full", cfg)
    assert r0["phi_rank"] == r1["phi_rank"] == 0
    assert len(r0["losses"]) == 9 and r0["losses"] != r1["losses"]  # each rank its own data and noise
    assert r0["rng"] != r1["rng"]  # global RNGs seeded per rank
    saved = sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir())
    assert saved == [f"step-0000000{s}" for s in (2, 4, 6, 8)]
    assert {"model-rank0.safetensors", "model-rank1.safetensors", "optimizer-rank1.safetensors"} <= {
        p.name for p in (tmp_path / "a" / "checkpoints" / "step-00000004").iterdir()
    }

    # resume from step 4 (Φ at rank 2; a shrink and the removal still to come) in new processes
    shutil.copytree(
        tmp_path / "a" / "checkpoints" / "step-00000004", tmp_path / "b" / "checkpoints" / "step-00000004"
    )
    resumed_cfg = run_dict(
        "wan",
        wan_shards,
        tmp_path / "b",
        **{**SECTIONS, "checkpoint": {**SECTIONS["checkpoint"], "resume_from": "latest"}},
    )
    b0, _ = _launch(tmp_path, "resumed", resumed_cfg)
    assert b0["losses"] == r0["losses"][4:]
    assert b0["weights"] == r0["weights"]

    final = tmp_path / "a" / "final"
    load_student(final / "fake_quant")
    family = get_family("wan")
    quant.load_quantized(family.load_transformer(cfg["model"]["checkpoint"]), final / "deploy")


CLIP_CHECK = textwrap.dedent(
    """
    import os, sys, torch, torch.distributed as dist
    from torch import nn
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from qvgen.train import sharding
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1], RANK="0", WORLD_SIZE="1")
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 4))
    model = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 4))
    model.load_state_dict(ref.state_dict())
    fully_shard(model, mesh=init_device_mesh("cpu", (1,)))
    x = torch.randn(5, 8)
    for m in (ref, model):
        (m(x).square().sum() * 10).backward()
    phi, phi_ref = nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(3))  # replicated, not sharded
    phi.grad, phi_ref.grad = torch.full((3,), 2.0), torch.full((3,), 2.0)
    want = torch.nn.utils.clip_grad_norm_([*ref.parameters(), phi_ref], 1.0)
    got = sharding.clip_grad_norm_([*model.parameters(), phi], 1.0)
    assert float(want) > 1.0 and torch.allclose(got, want), (got, want)
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        assert torch.allclose(p.grad.full_tensor(), q.grad, rtol=1e-5, atol=1e-7)
    assert torch.allclose(phi.grad, phi_ref.grad)
    dist.destroy_process_group()
    print("clip ok")
    """
)


def test_sharded_clip_matches_torchs_clip_over_sharded_and_replicated_grads(tmp_path):
    script = tmp_path / "clip_check.py"
    script.write_text(CLIP_CHECK)
    done = subprocess.run(
        [sys.executable, str(script), str(_free_port())], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and "clip ok" in done.stdout, done.stderr[-3000:]
