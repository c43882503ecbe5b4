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
