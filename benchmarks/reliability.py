"""Issue 13's five failure scenarios, run as a user would hit them; each prints pass/fail with its evidence.

1. scale_lr_1e-2_loadable: a 256→128 W4A4 layer trained with scale lr 1e-2 (the raw LSQ+ scales of many
   rows go ≤ 0 after one Adam step) and a tiny-Wan LSQ run with `optim.lr.weight_qparams=1e-2`: both
   exports must load with `load_quantized` (and the layer's deploy output equal its fake-quant output).
2. resume_after_removal: a tiny-Wan QVGen run (Φ removed at step 6) resumed from its step-8 checkpoint
   must end bitwise equal to the uninterrupted run.
3. fsdp_recipe_2proc: `train.sharding=fsdp2` on two CPU processes (gloo, torchrun): Φ decays to rank 0,
   checkpoints are written, the fake-quant and deploy exports load.
4. flipped_bytes_detected: 100 flipped bytes (same size) in `model.safetensors` of a deploy folder and of
   a fake-quant student folder must both be refused naming the file.
5. enospc_intact: ENOSPC (OSError 28) injected mid checkpoint save, mid shard write and mid deploy export:
   the previous checkpoint / shards / folder stay intact and loadable, no temp is left, the error names
   the path.

Last line: `reliability scale_lr_1e-2_loadable=<b> resume_after_removal=<b> fsdp_recipe_2proc=<b>
flipped_bytes_detected=<b> enospc_intact=<b>`. Usage: python benchmarks/reliability.py (≤ 10 min on 2 cores).
"""

from __future__ import annotations

import errno
import hashlib
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
import yaml
from torch import nn

from qvgen import quant
from qvgen.data import EncodedSample, WriterConfig, read_manifest, write_shards
from qvgen.data import writer as data_writer
from qvgen.models import get_family, load_student, save_student
from qvgen.models.testing import tiny_checkpoint
from qvgen.quant import export as quant_export
from qvgen.train import checkpoint as ckpt
from qvgen.train.config import RunConfig
from qvgen.train.recipe import run

W4A4_G1 = quant.QuantConfig(
    weight=quant.LSQPlusWeight(bits=4), activation=quant.ClippedDynamicActivation(bits=4, groups=1)
)


def tiny_shards(out: Path, n: int = 8) -> Path:
    g = torch.Generator().manual_seed(0)
    samples = [
        EncodedSample(
            id=f"s{i}", caption=f"clip {i}", latents_mean=torch.randn(16, 3, 8, 8, generator=g),
            latents_logvar=torch.full((16, 3, 8, 8), -3.0), text_embeddings=torch.randn(16, 64, generator=g),
            text_length=4 + i % 8, video_shape=(9, 64, 64),
        )
        for i in range(n)
    ]  # fmt: skip
    cfg = WriterConfig(samples_per_shard=4, family="wan", latent_dtype="float32", text_dtype="float32")
    write_shards(samples, out, cfg, encoder_name="bench-wan")
    return out


def run_dict(shards: Path, out: Path, **sections: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "model": {"family": "wan", "checkpoint": str(tiny_checkpoint("wan")), "dtype": "float32"},
        "aux": {"decay": {"initial_rank": 4, "period": 2}},
        "data": {"shards": str(shards), "batch_size": 2, "num_workers": 0, "shuffle_buffer": 4},
        "train": {"max_steps": 7, "caption_dropout": 0.0, "seed": 3},
        "logging": {"progress_bar": False},
        "checkpoint": {"every_n_steps": None},
        "output_dir": str(out),
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


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


# ---------------------------------------------------------------------------------------------- 5


def _disk_full(*args: Any, **kwargs: Any) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def _no_temp(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]


def enospc(work: Path) -> tuple[bool, str]:
    results = {}
    # checkpoint save: ENOSPC after accelerate wrote the model and optimizer files
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    model = nn.Linear(4, 3)
    model, _ = accelerator.prepare(model, torch.optim.AdamW(model.parameters()))
    gen = torch.Generator().manual_seed(0)
    state = {"model": {"family": "wan"}, "train": {"seed": 1}}
    root = work / "checkpoints"
    previous = ckpt.save_checkpoint(
        accelerator, root, ckpt.TrainState(step=2, world_size=1, data_batches=2, phi_rank=None, config=state),
        {"sampling": gen}, keep_last=2,
    )  # fmt: skip
    real_generators = ckpt.save_generators
    ckpt.save_generators = _disk_full  # type: ignore[assignment]
    try:
        ckpt.save_checkpoint(
            accelerator, root, ckpt.TrainState(step=4, world_size=1, data_batches=4, phi_rank=None, config=state),
            {"sampling": gen}, keep_last=2,
        )  # fmt: skip
        named = False
    except OSError as e:
        named = e.errno == errno.ENOSPC and "step-00000004" in str(e)
    finally:
        ckpt.save_generators = real_generators  # type: ignore[assignment]
    ckpt.load_checkpoint(accelerator, previous, {"sampling": gen})
    results["checkpoint"] = (
        named
        and ckpt.verify_checkpoint(previous).step == 2
        and _no_temp(root)
        and (sorted(p.name for p in root.iterdir()) == ["step-00000002"])
    )

    # shard write: ENOSPC inside the second shard's tar
    g = torch.Generator().manual_seed(1)
    samples = [
        EncodedSample(id=f"c{i}", caption=f"c {i}", latents_mean=torch.randn(4, 2, 2, 2, generator=g),
                      latents_logvar=None, text_embeddings=torch.randn(6, 8, generator=g), text_length=3,
                      video_shape=(5, 16, 16))
        for i in range(8)
    ]  # fmt: skip
    shards = work / "shards"
    cfg = WriterConfig(samples_per_shard=4, store_logvar=False)
    real_serialize = data_writer._serialize

    def serialize(sample: EncodedSample, index: int, c: WriterConfig) -> dict[str, object]:
        if index == 6:
            _disk_full()
        return real_serialize(sample, index, c)

    data_writer._serialize = serialize  # type: ignore[assignment]
    try:
        write_shards(samples, shards, cfg, encoder_name="x")
        named = False
    except OSError as e:
        named = e.errno == errno.ENOSPC and "shard-000001.tar" in str(e)
    finally:
        data_writer._serialize = real_serialize  # type: ignore[assignment]
    record = json.loads((shards / "shard-000000.json").read_text())
    intact = (
        record["info"]["sha256"] == hashlib.sha256((shards / "shard-000000.tar").read_bytes()).hexdigest()
    )
    write_shards(samples, shards, cfg, encoder_name="x")  # the re-run completes the dataset
    results["shards"] = named and intact and _no_temp(shards) and read_manifest(shards).num_samples == 8

    # deploy export: ENOSPC halfway through the tensors file of a second export over the first
    torch.manual_seed(0)
    first = Proj()
    quant.prepare_(first, W4A4_G1)
    quant.initialize_(first, progress=False)
    quant.convert_(first)
    out = work / "deploy" / "final"
    quant.save_quantized(first, out)
    probe = torch.randn(2, 256)
    expected = first(probe)

    def half_then_full(tensors: dict[str, torch.Tensor], filename: str, metadata: Any = None) -> None:
        Path(filename).write_bytes(safetensors.torch.save(tensors, metadata)[:1000])
        _disk_full()

    real_save = quant_export.save_file
    quant_export.save_file = half_then_full  # type: ignore[assignment]
    try:
        quant.save_quantized(first, out)
        named = False
    except OSError as e:
        named = e.errno == errno.ENOSPC and str(out) in str(e)
    finally:
        quant_export.save_file = real_save  # type: ignore[assignment]
    same = torch.equal(quant.load_quantized(Proj(), out)(probe), expected)
    results["deploy"] = named and same and _no_temp(out.parent)
    ok = all(results.values())
    return ok, ", ".join(f"{k}: {'intact' if v else 'FAILED'}" for k, v in results.items())


# ---------------------------------------------------------------------------------------------- main


def main() -> int:
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="qvgen-reliability-"))
    shards = tiny_shards(root / "shards")
    scenarios: list[tuple[str, Callable[[Path], tuple[bool, str]]]] = [
        ("scale_lr_1e-2_loadable", lambda w: scale_lr(w, shards)),
        ("resume_after_removal", lambda w: resume_after_removal(w, shards)),
        ("fsdp_recipe_2proc", lambda w: fsdp_2proc(w, shards)),
        ("flipped_bytes_detected", flipped_bytes),
        ("enospc_intact", enospc),
    ]
    outcome: dict[str, bool] = {}
    print("| scenario | result | seconds | evidence |\n| --- | --- | ---: | --- |")
    for name, scenario in scenarios:
        work = root / name
        work.mkdir()
        start = time.perf_counter()
        try:
            ok, evidence = scenario(work)
        except Exception as e:  # a scenario that crashes is a failed scenario; the rest still run
            ok, evidence = False, f"{type(e).__name__}: {e}".splitlines()[0]
            traceback.print_exc(file=sys.stderr)
        outcome[name] = ok
        print(
            f"| {name} | {'pass' if ok else 'FAIL'} | {time.perf_counter() - start:.0f} | {evidence} |",
            flush=True,
        )
    shutil.rmtree(root, ignore_errors=True)
    print("reliability " + " ".join(f"{k}={str(v).lower()}" for k, v in outcome.items()))
    return 0 if all(outcome.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
