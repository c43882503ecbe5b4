"""The reliability scenarios of issues 13 and 32, run as a user would hit them; each prints pass/fail with
its evidence.

Issue 13 (the `reliability` line):
1. scale_lr_1e-2_loadable: a 256→128 W4A4 layer trained with scale lr 1e-2 (the raw LSQ+ scales of many
   rows go ≤ 0 after one Adam step) and a tiny-Wan LSQ run with `optim.lr.weight_qparams=1e-2`: both
   exports must load with `load_quantized` (and the layer's deploy output equal its fake-quant output).
2. resume_after_removal: a tiny-Wan QVGen run (Φ removed at step 6) resumed from its step-8 checkpoint
   must end bitwise equal to the uninterrupted run.
3. fsdp_recipe_2proc: `train.sharding=fsdp2` on two CPU processes (gloo, torchrun): Φ decays to rank 0,
   checkpoints are written, the fake-quant and deploy exports load.
4. flipped_bytes_detected: 100 flipped bytes (same size) in `model.safetensors` of a deploy folder and of
   a fake-quant student folder must both be refused naming the file.
5. enospc_intact: a REAL full disk (a small tmpfs, mounted here as root) under a training run's checkpoint,
   a shard write and a deploy export: the previous checkpoint / shards / export stay intact and loadable,
   no temp is left, the error is one line naming the path and "no space left on device".

Issue 32 (the `reliability2` line): the scenarios of `benchmarks/reliability_trust.py` (each drives the
public command in a subprocess), the reference replay count, and the fuzz run of every user-fed loader.

Usage: python benchmarks/reliability.py (≤ 15 min on 2 cores; needs root for the tmpfs scenarios, which
otherwise report false).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
import unittest
from collections.abc import Callable
from pathlib import Path
from typing import Any

import reliability_trust as trust  # benchmarks/ is sys.path[0] as a script
import torch
import yaml
from torch import nn

from qvgen import quant
from qvgen.models import get_family, load_student, save_student
from qvgen.models.testing import tiny_checkpoint
from qvgen.train.config import RunConfig
from qvgen.train.recipe import run

W4A4_G1 = quant.QuantConfig(
    weight=quant.LSQPlusWeight(bits=4), activation=quant.ClippedDynamicActivation(bits=4, groups=1)
)


tiny_shards = trust.tiny_shards
run_dict = trust.run_dict


class Proj(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(256, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


# ---------------------------------------------------------------------------------------------- 1


def scale_lr(work: Path, shards: Path) -> tuple[bool, str]:
    torch.manual_seed(0)
    model = Proj()
    quant.prepare_(model, W4A4_G1)
    quant.initialize_(model, progress=False)
    opt = torch.optim.Adam(quant.quant_parameter_groups(model).weight_qparams, lr=1e-2)
    x = torch.randn(16, 256)
    opt.zero_grad()
    (model(x) - 3.0 * x[:, :128]).square().mean().backward()
    opt.step()
    raw_nonpositive = int((model.proj.weight_quantizer.scale <= 0).sum())
    quant.convert_(model)
    quant.save_quantized(model, work / "layer-deploy")
    probe = torch.randn(4, 256)
    layer_ok = torch.equal(quant.load_quantized(Proj(), work / "layer-deploy")(probe), model(probe))

    cfg = RunConfig.model_validate(
        run_dict(
            shards, work / "lsq", aux=None, optim={"lr": {"weight_qparams": 1e-2}}, train={"max_steps": 6}
        )
    )
    result = run(cfg)
    assert result.deploy_dir is not None
    quant.load_quantized(get_family("wan").load_transformer(cfg.model.checkpoint), result.deploy_dir)
    return layer_ok, (
        f"layer: {raw_nonpositive}/128 raw scales <= 0 after one step, export loads, deploy == fake: "
        f"{layer_ok}; tiny-Wan LSQ run (qparam lr 1e-2, 6 steps): final/deploy loads"
    )


# ---------------------------------------------------------------------------------------------- 2


def _states_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def resume_after_removal(work: Path, shards: Path) -> tuple[bool, str]:
    sections: dict[str, Any] = {
        "export": {"fake_quant": False, "deploy": False},
        "checkpoint": {"every_n_steps": 2, "keep_last": 4},
        "train": {"max_steps": 9, "caption_dropout": 0.3},
    }
    full = run(RunConfig.model_validate(run_dict(shards, work / "full", **sections)))
    saved = work / "full" / "checkpoints" / "step-00000008"
    shutil.copytree(saved, work / "resumed" / "checkpoints" / saved.name)
    sections["checkpoint"] = {**sections["checkpoint"], "resume_from": "latest"}
    resumed = run(RunConfig.model_validate(run_dict(shards, work / "resumed", **sections)))
    ok = resumed.losses == full.losses[8:] and _states_equal(resumed.model, full.model)
    return ok, "Φ removed at step 6; resumed from step-00000008: losses and every tensor bitwise equal"


# ---------------------------------------------------------------------------------------------- 3

DRIVER = textwrap.dedent(
    """
    import json, sys
    import torch
    torch.set_num_threads(1)
    from accelerate import PartialState
    from qvgen.train.config import load_config
    from qvgen.train.recipe import run

    result = run(load_config(sys.argv[1]))
    with open(f"{sys.argv[2]}/rank{PartialState().process_index}.json", "w") as f:
        json.dump({"phi_rank": result.phi_rank, "losses": result.losses}, f)
    """
)


def fsdp_2proc(work: Path, shards: Path) -> tuple[bool, str]:
    ckpt_dir = get_family("wan").save_tiny(work / "tiny-wan")  # outlives this process's temp folders
    cfg = run_dict(
        shards, work / "out", train={"max_steps": 9, "caption_dropout": 0.2, "sharding": "fsdp2"},
        checkpoint={"every_n_steps": 4, "keep_last": 2},
    )  # fmt: skip
    cfg["model"]["checkpoint"] = str(ckpt_dir)
    (work / "run.yaml").write_text(yaml.safe_dump(cfg))
    (work / "driver.py").write_text(DRIVER)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(port), str(work / "driver.py"), str(work / "run.yaml"), str(work),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=540, env=env)
    if proc.returncode != 0:
        tail = [x for x in proc.stderr.splitlines() if x.startswith("[rank")][-5:]
        return False, "torchrun failed: " + " | ".join(tail)
    ranks = [json.loads((work / f"rank{r}.json").read_text()) for r in (0, 1)]
    final = work / "out" / "final"
    load_student(final / "fake_quant")
    quant.load_quantized(get_family("wan").load_transformer(ckpt_dir), final / "deploy")
    saved = sorted(p.name for p in (work / "out" / "checkpoints").iterdir())
    ok = all(r["phi_rank"] == 0 for r in ranks) and saved == ["step-00000004", "step-00000008"]
    return ok, f"2 gloo processes, Φ 4→2→1→0, checkpoints {saved}, fake-quant and deploy exports load"


# ---------------------------------------------------------------------------------------------- 4


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 100] = bytes(b ^ 0x5A for b in data[mid : mid + 100])
    path.write_bytes(bytes(data))


def _refused(load: Callable[[], object], path: Path) -> bool:
    try:
        load()
    except ValueError as e:
        return f"{path}: sha256" in str(e)
    return False


def flipped_bytes(work: Path) -> tuple[bool, str]:
    torch.manual_seed(0)
    deployed = Proj()
    quant.prepare_(deployed, W4A4_G1)
    quant.initialize_(deployed, progress=False)
    quant.convert_(deployed)
    quant.save_quantized(deployed, work / "deploy")
    size = (work / "deploy" / "model.safetensors").stat().st_size
    _flip(work / "deploy" / "model.safetensors")
    same_size = (work / "deploy" / "model.safetensors").stat().st_size == size
    deploy_ok = _refused(
        lambda: quant.load_quantized(Proj(), work / "deploy"), work / "deploy" / "model.safetensors"
    )

    family = get_family("wan")
    student = family.load_transformer(tiny_checkpoint("wan"))
    cfg = quant.QuantConfig.w4a4()
    quant.prepare_(student, cfg, layer_roles=family.layer_roles)
    quant.initialize_(student, progress=False)
    save_student(student, work / "student", family="wan", checkpoint=tiny_checkpoint("wan"), quant_config=cfg)
    _flip(work / "student" / "model.safetensors")
    student_ok = _refused(lambda: load_student(work / "student"), work / "student" / "model.safetensors")
    ok = same_size and deploy_ok and student_ok
    return (
        ok,
        f"deploy folder refused: {deploy_ok}, fake-quant student refused: {student_ok} (size unchanged)",
    )


# ---------------------------------------------------------------------------------------------- main


def run_scenarios(
    root: Path, scenarios: list[tuple[str, Callable[[Path], tuple[bool, str]]]]
) -> dict[str, bool]:
    """Run each scenario in its own folder under `root`, print its table row; a crash is a failure."""
    outcome: dict[str, bool] = {}
    print("| scenario | result | seconds | evidence |\n| --- | --- | ---: | --- |", flush=True)
    for name, scenario in scenarios:
        work = root / name
        work.mkdir()
        start = time.perf_counter()
        try:
            ok, evidence = scenario(work)
        except unittest.SkipTest as e:
            ok, evidence = False, f"not run here: {e}"
        except Exception as e:  # a scenario that crashes is a failed scenario; the rest still run
            ok, evidence = False, f"{type(e).__name__}: {e}".splitlines()[0]
            traceback.print_exc(file=sys.stderr)
        outcome[name] = ok
        evidence = evidence.replace("|", "/")
        print(
            f"| {name} | {'pass' if ok else 'FAIL'} | {time.perf_counter() - start:.0f} | {evidence} |",
            flush=True,
        )
    return outcome


def enospc_all(work: Path, shards: Path) -> tuple[bool, str]:
    """Issue 13's enospc_intact, on a real full disk: checkpoint, shards and export."""
    parts = {
        "checkpoint": trust.real_enospc_one_line,
        "shards": lambda w: trust.real_enospc_shards(w),
        "export": lambda w: trust.real_enospc_export(w),
    }
    results = {}
    for name, scenario in parts.items():
        (work / name).mkdir()
        results[name] = scenario(work / name, shards) if name == "checkpoint" else scenario(work / name)
    ok = all(r[0] for r in results.values())
    return ok, "; ".join(f"{k}: {v[1]}" for k, v in results.items())


def main() -> int:
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="qvgen-reliability-"))
    shards = tiny_shards(root)
    issue13 = run_scenarios(
        root,
        [
            ("scale_lr_1e-2_loadable", lambda w: scale_lr(w, shards)),
            ("resume_after_removal", lambda w: resume_after_removal(w, shards)),
            ("fsdp_recipe_2proc", lambda w: fsdp_2proc(w, shards)),
            ("flipped_bytes_detected", flipped_bytes),
            ("enospc_intact", lambda w: enospc_all(w, shards)),
        ],
    )
    print("reliability " + " ".join(f"{k}={str(v).lower()}" for k, v in issue13.items()), flush=True)

    replay: dict[str, int] = {}

    def reference_replay(work: Path) -> tuple[bool, str]:
        ok, evidence, replay["matched"], replay["total"] = trust.reference_replay(work)
        return ok, evidence

    fuzz: dict[str, int] = {}

    def fuzz_run(work: Path) -> tuple[bool, str]:
        ok, evidence, fuzz["cases"], fuzz["failures"] = trust.fuzz_loaders(work)
        return ok, evidence

    issue32 = run_scenarios(
        root,
        [
            ("import_out_guard", trust.import_out_guard),
            ("stale_shards_refused", trust.stale_shards_refused),
            ("stale_videos_refused", trust.stale_videos_refused),
            ("manifest_edit_detected", trust.manifest_edit_detected),
            ("real_enospc_one_line", lambda w: _both_enospc(w, shards)),
            ("torn_metrics_resumes", lambda w: trust.torn_metrics_resumes(w, shards)),
            ("finished_run_guard", lambda w: trust.finished_run_guard(w, shards)),
            ("strict_config", lambda w: trust.strict_config(w, shards)),
            ("tilde_expanded", lambda w: trust.tilde_expanded(w, shards)),
            ("sigint_one_line", lambda w: trust.sigint_one_line(w, shards)),
            ("import_checks_codes", trust.import_checks_codes),
            ("reference_replay", reference_replay),
            ("fuzz", fuzz_run),
        ],
    )
    shutil.rmtree(root, ignore_errors=True)
    bools = {k: v for k, v in issue32.items() if k not in ("reference_replay", "fuzz")}
    print(
        "reliability2 "
        + " ".join(f"{k}={str(v).lower()}" for k, v in bools.items())
        + f" reference_replay_calls={replay.get('matched', 0)}/{replay.get('total', 0)}"
        + f" fuzz_cases={fuzz.get('cases', 0)} fuzz_failures={fuzz.get('failures', -1)}"
    )
    return 0 if all(issue13.values()) and all(issue32.values()) else 1


def _both_enospc(work: Path, shards: Path) -> tuple[bool, str]:
    """real_enospc_one_line: the checkpoint of a CLI run and a deploy export, each on a real full tmpfs."""
    (work / "run").mkdir()
    (work / "export").mkdir()
    ckpt_ok, ckpt_note = trust.real_enospc_one_line(work / "run", shards)
    export_ok, export_note = trust.real_enospc_export(work / "export")
    return ckpt_ok and export_ok, f"checkpoint: {ckpt_note}; export: {export_note}"


if __name__ == "__main__":
    sys.exit(main())
