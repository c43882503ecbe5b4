"""The paper's models at their released width, end to end on this CPU (issue 33).

For Wan2.1-T2V-1.3B and CogVideoX-2B, `qvgen.models.save_real_width` writes a diffusers folder with every
released transformer dimension and only the depth reduced (`--layers`), the released VAE, and a text encoder
of the released class and output width 4096 (`--text-layers` blocks); random weights from seed 0. Then, each
stage through the public command or function a user calls, each into a fresh folder:

1. `qvgen.data.write_procedural_dataset` (mp4s + captions.csv) → `qvgen-train precompute` (latent shards);
2. `qvgen.train.run(load_config(<paper config>, --set ...))`: the paper config
   (`configs/wan2.1-t2v-1.3b-qvgen.yaml`, `configs/cogvideox-2b-qvgen.yaml`: W4A4 LSQ+ / clipped dynamic
   activations in 50 timestep groups, r0 = 32 re-SVD decay, optimizer groups, gradient checkpointing,
   bf16 mixed precision and teacher) with `--set` overrides only for paths, size (batch, workers,
   validation size) and steps (`train.max_steps`, `aux.decay.period` so Φ reaches rank 0); it exports the
   fake-quant and the deploy student;
3. deploy vs fake-quant: `qvgen.models.load_student` and `qvgen.quant.load_quantized` on the same input
   (relative error of the transformer output), deploy folder size vs the fp32 transformer folder;
4. `qvgen.models.load_pipeline(base, deploy)` → one sampled clip;
5. `qvgen-eval compare` (teacher, fake-quant and deploy on the procedural captions, adherence + fidelity).

The memory plan `qvgen.train.memory.memory_plan(..., num_layers=L, world_size=1)` is compared with the
model-state bytes the training run really held at its first optimizer step (a global optimizer step hook
counts the parameters, gradients and AdamW states per group, Φ separately; a global forward pre-hook finds
the teacher transformer).

Peer row: the same QVGen step (Wan at real width, `--peer-layers` blocks, W4A4, r0 32, 50 clip groups,
batch 1, teacher MSE, grad clip, AdamW) built once with qvgen and once with the reference's quantizer
modules (ModelTC/QVGen `training/quant/quant.py`, read from the path in `QVGEN_REFERENCE_QUANT`; never
part of this repository): median step time interleaved in one process, peak RSS in fresh processes.

Also `help_max_s` (slowest median of 5 runs of each `--help`) and `import_stderr_lines`.

Usage: python benchmarks/realwidth.py [--work DIR] [--layers 2] [--no-results]
The last line printed (and written at the end of RESULTS.md's `## realwidth`) is the `realwidth ...` line.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
import weakref
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
BIN = Path(sys.executable).parent
MODELS = {"wan": "wan2.1-t2v-1.3b", "cogvideox": "cogvideox-2b"}
CONFIGS = {"wan": "wan2.1-t2v-1.3b-qvgen.yaml", "cogvideox": "cogvideox-2b-qvgen.yaml"}
SIZE = {"frames": 9, "height": 32, "width": 32}
"""Clip size of every stage: 9 frames → 3 latent frames, 32×32 px → 4×4 latents → 2×2 patches."""
INITIAL_RANK = 32
GROUPS = 50
HELP_COMMANDS = (("qvgen", "--help"), ("qvgen", "demo", "--help"), ("qvgen-train", "--help"),
                 ("qvgen-eval", "--help"))  # fmt: skip


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


TOOL = "benchmarks/realwidth.py"
"""The marker this benchmark leaves in each family folder it creates (`qvgen.core.claim_output_dir`)."""


def _claim(path: Path) -> Path:
    """A family's work folder, new or emptied: a previous run's folder of this benchmark is removed, any other
    non-empty folder is refused (the benchmark deletes only what it wrote)."""
    from qvgen.core import claim_output_dir, is_tool_output

    if path.is_dir() and any(path.iterdir()):
        if not is_tool_output(path, TOOL):
            raise SystemExit(f"{path} is not empty and was not written by {TOOL}; choose another --work")
        shutil.rmtree(path)
    return claim_output_dir(path, TOOL)


def _fresh(path: Path) -> Path:
    """A missing path for one stage (writers refuse a used folder) inside a folder `_claim` made; a stage
    folder left by an earlier run there is removed."""
    from qvgen.core import is_tool_output

    if not is_tool_output(path.parent, TOOL):
        raise RuntimeError(f"{path.parent} was not claimed by {TOOL}; stages run inside a claimed folder")
    if path.exists():
        shutil.rmtree(path)
    return path


def _run(cmd: list[str], log: Path) -> None:
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    if proc.returncode:
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}; log {log}:\n{tail}")


# -- model-state bytes of a real run -------------------------------------------------------------------
class StateMeter:
    """Counts model-state bytes at the first optimizer step of a run (global torch hooks, no patching)."""

    TRANSFORMERS = ("WanTransformer3DModel", "CogVideoXTransformer3DModel")

    def __init__(self) -> None:
        self.seen: list[weakref.ref[Any]] = []
        self.result: dict[str, int] | None = None
        self._handles: list[Any] = []

    def __enter__(self) -> StateMeter:
        import torch
        from torch.optim.optimizer import register_optimizer_step_post_hook

        def pre(module: Any, args: Any) -> None:
            if type(module).__name__ in self.TRANSFORMERS and not any(r() is module for r in self.seen):
                self.seen.append(weakref.ref(module))

        def post(optimizer: Any, args: Any, kwargs: Any) -> None:
            if self.result is None:
                self.result = self.measure(optimizer)

        self._handles = [
            torch.nn.modules.module.register_module_forward_pre_hook(pre),
            register_optimizer_step_post_hook(post),
        ]
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()

    def measure(self, optimizer: Any) -> dict[str, int]:
        def nbytes(t: Any) -> int:
            return int(t.numel() * t.element_size()) if t is not None else 0

        out = {"student": 0, "phi": 0, "teacher": 0, "student_params": 0, "phi_params": 0}
        in_opt: set[int] = set()
        for group in optimizer.param_groups:
            key = "phi" if group.get("name") == "phi" else "student"
            for p in group["params"]:
                in_opt.add(id(p))
                state = optimizer.state.get(p, {})
                out[key] += nbytes(p) + nbytes(p.grad)
                out[key] += sum(nbytes(v) for v in state.values() if hasattr(v, "numel") and v.dim() > 0)
                out[f"{key}_params"] += p.numel()
        for ref in self.seen:
            module = ref()
            if module is None:
                continue
            params = list(module.parameters())
            if any(id(p) in in_opt for p in params):  # the student: its frozen parameters are states too
                out["student"] += sum(nbytes(p) for p in params if id(p) not in in_opt)
                out["student_params"] += sum(p.numel() for p in params if id(p) not in in_opt)
            else:
                out["teacher"] += sum(nbytes(p) for p in params) + sum(nbytes(b) for b in module.buffers())
        return out


# -- one family's flow ---------------------------------------------------------------------------------
def flow(
    family: str, work: Path, layers: int, text_layers: int, steps: int, reuse: bool = False
) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    name = MODELS[family]
    times: dict[str, float] = {}
    out: dict[str, Any] = {"family": family, "model": name, "layers": layers, "times": times}

    @contextlib.contextmanager
    def stage(key: str) -> Any:
        start = time.perf_counter()
        print(f"[{family}] {key} ...", flush=True)
        yield
        times[key] = round(time.perf_counter() - start, 2)
        print(f"[{family}] {key} {times[key]:.1f} s", flush=True)

    from qvgen.data import write_procedural_dataset
    from qvgen.models import get_family, save_real_width

    fam = get_family(family)
    base = work / "base"
    reuse = reuse and (work / "shards" / "manifest.json").exists()
    with stage("build"):
        if not reuse:
            save_real_width(name, _fresh(base), num_layers=layers, text_layers=text_layers, seed=0)
    with stage("videos"):
        captions = work / "videos" / "captions.csv"
        if not reuse:
            captions = write_procedural_dataset(_fresh(work / "videos"), 2, seed=0, **SIZE)
    shards = work / "shards" if reuse else _fresh(work / "shards")
    pre_yaml = work / "precompute.yaml"
    pre_yaml.write_text(
        json.dumps(
            {
                "model": {"family": family, "checkpoint": str(base), "dtype": "float32"},
                "ingest": {"captions": str(captions)},
                "writer": {"buckets": [SIZE], "samples_per_shard": 2, "encode_batch_size": 1},
                "out_dir": str(shards),
            }
        )
    )
    with stage("precompute"):
        if not reuse:
            _run([str(BIN / "qvgen-train"), "precompute", str(pre_yaml)], work / "precompute.log")

    from qvgen.train import load_config, run
    from qvgen.train.memory import memory_plan

    run_dir = _fresh(work / "run")
    validation = (f"logging.validation.{k}={v}" for k, v in
                  {"num_frames": SIZE["frames"], "height": SIZE["height"], "width": SIZE["width"],
                   "num_inference_steps": 2}.items())  # fmt: skip
    overrides = [
        f"model.checkpoint={base}", f"data.shards={shards}", f"output_dir={run_dir}",
        "data.batch_size=1", "data.num_workers=0", "data.shuffle_buffer=2", *validation,
        f"train.max_steps={steps}", "aux.decay.period=1",
    ]  # fmt: skip
    out["overrides"] = overrides
    cfg = load_config(ROOT / "configs" / CONFIGS[family], overrides)
    with stage("train+export"), StateMeter() as meter:
        result = run(cfg)
    out["phi_rank"] = result.phi_rank
    out["losses"] = [round(x, 6) for x in result.losses]
    fq_dir, deploy_dir = Path(str(result.fake_quant_dir)), Path(str(result.deploy_dir))
    del result  # the converted student
    plan = memory_plan(name, world_size=1, sharding="ddp", initial_rank=INITIAL_RANK,
                       teacher_dtype=cfg.model.dtype, act_groups=GROUPS, num_layers=layers)  # fmt: skip
    measured = meter.result or {}
    out["memory"] = {
        "measured": measured,
        "plan": {"student": plan.student_bytes, "phi": plan.phi_bytes, "teacher": plan.teacher_bytes,
                 "student_params": plan.student_params, "phi_params": plan.phi_params},
        "measured_total": sum(measured.get(k, 0) for k in ("student", "phi", "teacher")),
        "plan_total": plan.total_bytes,
    }  # fmt: skip
    out["bytes"] = {"fp32_transformer": _dir_bytes(base / "transformer"), "deploy": _dir_bytes(deploy_dir),
                    "fake_quant": _dir_bytes(fq_dir)}  # fmt: skip
    out["deploy_over_fp32"] = out["bytes"]["deploy"] / out["bytes"]["fp32_transformer"]

    from qvgen import quant
    from qvgen.models import load_pipeline, load_student

    with stage("deploy_vs_fake_quant"), torch.no_grad():
        fake = load_student(fq_dir, family=family)
        deploy = quant.load_quantized(deploy_dir)
        g = torch.Generator().manual_seed(3)
        lat = (1, 16, 3, 4, 4) if family == "wan" else (1, 3, 16, 4, 4)
        latents, noise = torch.randn(lat, generator=g), torch.randn(lat, generator=g)
        text_len = 512 if family == "wan" else 226
        text = torch.randn(1, text_len, 4096, generator=g)
        teacher = fam.load_transformer(base)
        deploy_layers = {n: m for n, m in deploy.named_modules() if type(m).__name__ == "DeployLinear"}
        fake_layers = dict(fake.named_modules())
        errs, float_errs, layer_errs, fp_errs = [], [], [], []
        for t in fam.sample_timesteps(3, g):
            x = fam.noised_inputs(latents, noise, t.reshape(1))
            seen: dict[str, tuple[Any, Any]] = {}
            hooks = [m.register_forward_hook(lambda m, a, o, n=n, s=seen: s.__setitem__(n, (a[0], o)))
                     for n, m in fake.named_modules() if n in deploy_layers]  # fmt: skip
            f = fam.predict(fake, x, text, torch.tensor([text_len]))  # inference: the integer arithmetic
            for h in hooks:
                h.remove()
            with torch.enable_grad():  # the float form F.linear(Qa(x), Qw(W)) training runs
                f_float = fam.predict(fake, x, text, torch.tensor([text_len])).detach()
            d = fam.predict(deploy, x, text, torch.tensor([text_len]))  # sets the deploy model's timestep
            r = fam.predict(teacher, x, text, torch.tensor([text_len]))
            errs.append(float((d - f).norm() / f.norm()))
            float_errs.append(float((d - f_float).norm() / f_float.norm()))
            fp_errs.append(float((f - r).norm() / r.norm()))
            # each deploy layer against the fake-quant layer's float form on the same input: the layers
            # themselves, without the 4-bit activation codes that float rounding flips upstream
            for n, (a, _) in seen.items():
                with torch.enable_grad():
                    o = fake_layers[n](a).detach()
                layer_errs.append(float((deploy_layers[n](a) - o).norm() / o.norm()))
        out["deploy_rel_err"] = max(errs)
        out["deploy_vs_float_form_rel_err"] = max(float_errs)
        out["deploy_layer_rel_err_max"] = max(layer_errs)
        out["deploy_layers_compared"] = len(layer_errs) // 3
        out["fake_quant_vs_fp_rel_err"] = max(fp_errs)
        del fake, deploy, teacher
    with stage("load_pipeline"):
        pipe = load_pipeline(base, deploy_dir, progress=False)
    caption = captions.parent.joinpath("captions.csv").read_text().splitlines()[1].split(",", 1)[1].strip('"')
    with stage("sample"):
        frames = pipe(prompt=caption, num_frames=SIZE["frames"], height=SIZE["height"], width=SIZE["width"],
                      num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                      output_type="np").frames  # fmt: skip
    out["sample_shape"] = list(frames.shape)
    out["sample_finite"] = bool(torch.isfinite(torch.as_tensor(frames)).all())
    del pipe
    eval_dir = _fresh(work / "eval")
    import csv

    with open(captions) as f:
        prompts = [row["caption"] for row in csv.DictReader(f)]
    compare_yaml = work / "compare.yaml"
    compare_yaml.write_text(
        json.dumps(
            {
                "family": family,
                "teacher": {"path": str(base)},
                "variants": [
                    {"name": "w4a4-fake-quant", "model": {"kind": "fake_quant", "path": str(fq_dir), "base": str(base)}},
                    {"name": "w4a4-deploy", "model": {"kind": "deploy", "path": str(deploy_dir), "base": str(base)}},
                ],
                "prompts": {"prompts": prompts[:1]},
                "out_dir": str(eval_dir),
                "sampling": {**{k: SIZE[k] for k in ("height", "width")}, "num_frames": SIZE["frames"],
                             "num_inference_steps": 2},
                "adherence": True,
            }
        )
    )  # fmt: skip
    with stage("compare"):
        _run([str(BIN / "qvgen-eval"), "compare", str(compare_yaml)], work / "compare.log")
    report = json.loads((eval_dir / "report.json").read_text())
    out["report_keys"] = sorted(report)[:12]
    out["flow_ok"] = (
        out["phi_rank"] in (0, None)
        and out["sample_finite"]
        and math.isfinite(out["deploy_rel_err"])
        and (eval_dir / "report.html").exists()
    )
    return out


# -- the peer step -------------------------------------------------------------------------------------
def _load_reference(path: str) -> types.ModuleType:
    """The reference's quant.py as a standalone module (its logger falls back to loguru; a stand-in is
    provided when loguru is not installed)."""
    if importlib.util.find_spec("loguru") is None and "loguru" not in sys.modules:
        stub = types.ModuleType("loguru")
        stub.logger = logging.getLogger("reference")  # type: ignore[attr-defined]
        sys.modules["loguru"] = stub
    spec = importlib.util.spec_from_file_location("qvgen_reference_quant", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def peer_build(kind: str, layers: int) -> dict[str, Any]:
    import torch
    from diffusers import WanTransformer3DModel

    from qvgen import auxiliary, quant
    from qvgen.models import get_family, get_real_model
    from qvgen.train import OptimConfig, build_optimizer

    config = {**get_real_model(MODELS["wan"]).transformer, "num_layers": layers}
    torch.manual_seed(0)
    teacher = WanTransformer3DModel(**config).eval().requires_grad_(False)
    student = WanTransformer3DModel(**config)
    student.load_state_dict(teacher.state_dict())
    student.train()
    family = get_family("wan")
    ref_layers: list[Any] = []
    if kind == "qvgen":
        qcfg = quant.QuantConfig(
            weight=quant.LSQPlusWeight(bits=4),
            activation=quant.ClippedDynamicActivation(bits=4, groups=GROUPS, group_mode="bin"),
        )
        quant.prepare_(student, qcfg, layer_roles=family.layer_roles)
        quant.initialize_(student, progress=False)
        aux_cfg = auxiliary.AuxConfig(decay=auxiliary.DecaySchedule(initial_rank=INITIAL_RANK, period=444))
        branches = (auxiliary.attach_(student, aux_cfg), aux_cfg)
        optimizer = build_optimizer(student, OptimConfig())
    else:
        ref = _load_reference(os.environ["QVGEN_REFERENCE_QUANT"])
        q_params = {
            "w": {"bit": 4, "sym": False, "granularity": "per_channel", "cali": "mse", "group_size": -1,
                  "round_zero": True, "use_grad_scaling": True, "round_func": "STE", "rank": INITIAL_RANK,
                  "iters": 1, "cur_alpha_strategy": "cosine", "alpha_T": 444, "warm_up": 0, "resume": False},
            "act": {"bit": 4, "sym": False, "granularity": "per_token", "cali": "minmax", "round_zero": True,
                    "clip_ratio": 0.95, "round_func": "STE", "timesteps": GROUPS},
        }  # fmt: skip
        ref.replace_linear(student, {"w": "progressive_lora", "act": "learnable_clipped_dynamic"}, q_params)
        for module in student.modules():
            if isinstance(module, ref.QuantLinear):
                module.wquantizer(module.w.detach())
                module.wquantizer.build()
                module.aquantizer.build()
                module.set_quant_state(True, True)
                ref_layers.append(module)
        groups: dict[str, list[Any]] = {"weights": [], "qparams": [], "act": [], "phi": [], "other": []}
        for n, p in student.named_parameters():
            leaf = n.rsplit(".", 1)[-1]
            key = {"w": "weights", "scale": "qparams", "zero_point": "qparams", "upper": "act", "lower": "act",
                   "L": "phi", "R": "phi"}.get(leaf, "other")  # fmt: skip
            groups[key].append(p)
        lrs = {"weights": 3e-5, "qparams": 3e-5, "act": 1e-2, "phi": 3e-5, "other": 3e-5}
        optimizer = torch.optim.AdamW(
            [{"params": v, "lr": lrs[k]} for k, v in groups.items() if v], betas=(0.9, 0.95), eps=1e-8,
            weight_decay=1e-4,
        )  # fmt: skip
        branches = None
    student.enable_gradient_checkpointing()  # both paper scripts: `gradient_checkpointing: true` / `--gradient_checkpointing`
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(1, 16, 3, 8, 8, generator=g)
    noise = torch.randn(latents.shape, generator=g)
    t = family.sample_timesteps(1, g)
    x = family.noised_inputs(latents, noise, t)
    text = torch.randn(1, 512, 4096, generator=g)
    return dict(kind=kind, family=family, teacher=teacher, student=student, optimizer=optimizer,
                branches=branches, ref_layers=ref_layers, x=x, t=t, text=text,
                lengths=torch.tensor([512]))  # fmt: skip


def peer_step(s: dict[str, Any], i: int) -> None:
    import torch

    from qvgen import auxiliary
    from qvgen.train import distill_loss

    if s["branches"] is not None:
        branches, aux_cfg = s["branches"]
        auxiliary.apply_(branches, auxiliary.rank_at(i, aux_cfg.decay), s["optimizer"])
    for m in s["ref_layers"]:
        m.wquantizer.set_alpha_L_R(i)
        m.aquantizer.set_idx(s["t"])
    family, x = s["family"], s["x"]
    with torch.no_grad():
        target = family.predict(s["teacher"], x, s["text"], s["lengths"])
    loss = distill_loss(family.predict(s["student"], x, s["text"], s["lengths"]), target)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(s["student"].parameters(), 1.0)
    s["optimizer"].step()
    s["optimizer"].zero_grad(set_to_none=True)


def peer_child(kind: str, layers: int, timed: int) -> None:
    """Build `kind`'s student, run 1 + `timed` steps; print the step times and the peak RSS above imports
    during the steps (and, apart, during the build)."""
    import diffusers  # noqa: F401  (imports are part of the baseline)
    import torch

    from qvgen.train import run  # noqa: F401  (the recipe's imports: accelerate, the families)

    torch.set_num_threads(1)
    base = _status_bytes("VmRSS")
    _reset_peak_rss()
    s = peer_build(kind, layers)
    build_peak, state = _status_bytes("VmHWM") - base, _status_bytes("VmRSS") - base
    _reset_peak_rss()  # the steps' own peak: initialisation (range search, SVDs) is not the training step
    times = []
    for i in range(1 + timed):
        start = time.perf_counter()
        peer_step(s, i)
        times.append(time.perf_counter() - start)
    peak = _status_bytes("VmHWM") - base
    print(json.dumps({"peak_bytes": peak, "build_peak_bytes": build_peak, "state_bytes": state,
                      "step_s": times[1:]}))  # fmt: skip


def peer(layers: int, timed: int) -> dict[str, Any]:
    """Each side in its own fresh process (qvgen first, then the reference): median step, peak RSS."""
    res = {}
    for kind in ("qvgen", "reference"):
        proc = subprocess.run(
            [sys.executable, __file__, "--peer-child", kind, "--peer-layers", str(layers),
             "--peer-steps", str(timed)],
            capture_output=True, text=True,
        )  # fmt: skip
        if proc.returncode:
            raise RuntimeError(f"peer {kind} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        res[kind] = json.loads(proc.stdout.strip().splitlines()[-1])
    med = {k: statistics.median(v["step_s"]) for k, v in res.items()}
    peak = {k: v["peak_bytes"] for k, v in res.items()}
    return {"layers": layers, "step_s": med, "peak_bytes": peak,
            "build_peak_bytes": {k: v["build_peak_bytes"] for k, v in res.items()},
            "state_bytes": {k: v["state_bytes"] for k, v in res.items()},
            "ref_step_over_qvgen_step": med["reference"] / med["qvgen"],
            "ref_peak_over_qvgen_peak": peak["reference"] / peak["qvgen"]}  # fmt: skip


# -- start-up costs ------------------------------------------------------------------------------------
def help_times(runs: int = 5) -> dict[str, float]:
    subprocess.run([sys.executable, "-m", "compileall", "-q", *map(str, ROOT.glob("packages/*/src"))],
                   capture_output=True)  # fmt: skip
    out = {}
    for cmd in HELP_COMMANDS:
        samples = []
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run([str(BIN / cmd[0]), *cmd[1:]], capture_output=True)
            samples.append(time.perf_counter() - start)
        out[" ".join(cmd)] = round(statistics.median(samples), 3)
    return out


def import_stderr_lines() -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-c", "import qvgen.quant, qvgen.train, qvgen.eval"],
                          capture_output=True, text=True)  # fmt: skip
    lines = proc.stderr.splitlines()
    return len(lines), "\n".join(lines[:8])


NOTES = (
    "Deploy vs fake-quant: at inference the fake-quant layers run the deploy layers' integer arithmetic "
    "(`qvgen.quant.integer_linear`, docs/method.md §10.2), so the whole transformer agrees bit for bit; the "
    "float form used in training agrees per layer to ~1e-7, and its whole-transformer gap (3.45e-2 Wan, 6.96e-3 "
    "CogVideoX before this rule) came from 4-bit activation codes that one-ulp differences flip, each flip "
    "moving the next layer's input by a whole quantization step. Peer memory: the reference wraps "
    "every quantizer and Linear in `torch.utils.checkpoint` (Q(W) and L·R recomputed in backward) and pays "
    "for it in step time; qvgen's weight fake quantizer saves only (w, s, z) and recomputes the codes in "
    "backward, so inside a recomputed block each Linear keeps one weight-sized tensor, the Q(W) + Φ its "
    "matmul needs (before that change: three, and a 0.861 peak ratio)."
)


# -- report --------------------------------------------------------------------------------------------
def _gib(n: float) -> str:
    return f"{n / 2**30:.3f} GiB"


def write_results(section: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else ""
    head, sep, rest = text.partition("\n## realwidth\n")
    if sep:
        nxt = rest.find("\n## ")
        tail = rest[nxt:] if nxt >= 0 else ""
        text = head + "\n" + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text)


def section(args: argparse.Namespace, flows: dict[str, Any], peer_row: dict[str, Any] | None,
            peer_note: str, helps: dict[str, float], stderr_n: int, load: str, line: str) -> str:  # fmt: skip
    rows = [
        "## realwidth",
        "",
        "`python benchmarks/realwidth.py` (or `nox -s realwidth`): Wan2.1-T2V-1.3B and CogVideoX-2B at the released",
        f"width, {args.layers} transformer blocks, {args.text_layers} text-encoder block(s) of width 4096, random weights",
        f"(`qvgen.models.save_real_width`), clips {SIZE['frames']}×{SIZE['height']}×{SIZE['width']}, the paper configs with",
        f"`--set` for paths, size and `train.max_steps={args.steps} aux.decay.period=1` (Φ r0 32 → 0). CPU: {os.cpu_count()} cores,",
        f"1 torch thread, {platform.python_version()}; load while measuring: {load}.",
        "",
        "| stage | " + " | ".join(flows) + " |",
        "| --- | " + " | ".join("---:" for _ in flows) + " |",
    ]
    keys: list[str] = []
    for f in flows.values():
        for k in f.get("times", {}):
            if k not in keys:
                keys.append(k)
    for k in keys:
        rows.append(
            f"| {k} (s) | " + " | ".join(str(f.get("times", {}).get(k, "—")) for f in flows.values()) + " |"
        )
    rows.append("| flow ok | " + " | ".join(str(f.get("flow_ok", False)) for f in flows.values()) + " |")
    rows.append("| Φ rank at the end | " + " | ".join(str(f.get("phi_rank")) for f in flows.values()) + " |")
    for label, key, fmt in (
        ("deploy vs fake-quant rel. error (inference: both integer arithmetic)", "deploy_rel_err", ".2e"),
        ("deploy vs fake-quant's float form (training forward), whole transformer",
         "deploy_vs_float_form_rel_err", ".2e"),
        ("same, each deploy layer on the fake-quant layer's input (max)", "deploy_layer_rel_err_max", ".2e"),
        ("fake-quant vs full precision rel. error (for scale)", "fake_quant_vs_fp_rel_err", ".2e"),
        ("deploy folder / fp32 transformer", "deploy_over_fp32", ".3f"),
    ):  # fmt: skip
        rows.append(
            f"| {label} | " + " | ".join(format(f.get(key, float("nan")), fmt) for f in flows.values()) + " |"
        )
    rows += [
        "",
        "Model-state bytes at the first optimizer step, measured vs `qvgen.train.memory.memory_plan`"
        " (world size 1, DDP, r0 32, bf16 teacher, 50 groups, same depth):",
        "",
        "| model | part | measured | planned | measured / planned |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for f in flows.values():
        mem = f.get("memory")
        if not mem:
            continue
        for part in ("student", "phi", "teacher"):
            m, p = mem["measured"].get(part, 0), mem["plan"][part]
            rows.append(
                f"| {f['model']} | {part} | {_gib(m)} | {_gib(p)} | {m / p if p else float('nan'):.3f} |"
            )
        rows.append(
            f"| {f['model']} | total | {_gib(mem['measured_total'])} | {_gib(mem['plan_total'])} "
            f"| {mem['measured_total'] / mem['plan_total']:.3f} |"
        )
    rows += ["", "Peer step (Wan at real width, W4A4, r0 32, 50 groups, batch 1, teacher MSE, AdamW):", ""]
    if peer_row:
        rows += [
            f"{peer_row['layers']} block(s); median step qvgen {peer_row['step_s']['qvgen']:.2f} s, reference "
            f"{peer_row['step_s']['reference']:.2f} s; peak RSS above imports qvgen "
            f"{_gib(peer_row['peak_bytes']['qvgen'])}, reference {_gib(peer_row['peak_bytes']['reference'])} "
            f"during the steps (resident after the build: qvgen {_gib(peer_row['state_bytes']['qvgen'])}, "
            f"reference {_gib(peer_row['state_bytes']['reference'])}). Block-level gradient checkpointing on both "
            "sides (both paper scripts set it); the reference also checkpoints every quantizer and Linear."
        ]
    else:
        rows.append(peer_note)
    rows += ["", NOTES]
    rows += [
        "",
        "`--help` medians of 5 (bytecode compiled): "
        + ", ".join(f"`{k}` {v:.2f} s" for k, v in helps.items())
        + f"; `import qvgen.quant, qvgen.train, qvgen.eval` printed {stderr_n} stderr lines.",
        "",
        line,
        "",
    ]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--work", type=Path, default=None, help="work folder (default: a temp folder, removed)"
    )
    parser.add_argument(
        "--layers", type=int, default=2, help="transformer blocks (depth; widths are released)"
    )
    parser.add_argument("--text-layers", type=int, default=1, help="text-encoder blocks (width 4096)")
    parser.add_argument("--steps", type=int, default=7, help="training steps (r0 32 needs 7 with period 1)")
    parser.add_argument("--families", default="wan,cogvideox")
    parser.add_argument("--peer-layers", type=int, default=1)
    parser.add_argument(
        "--peer-steps", type=int, default=3, help="timed peer steps per side (after 1 warm-up)"
    )
    parser.add_argument("--no-results", action="store_true", help="do not write benchmarks/RESULTS.md")
    parser.add_argument("--flow", choices=list(MODELS), help=argparse.SUPPRESS)
    parser.add_argument(
        "--reuse", action="store_true", help=argparse.SUPPRESS
    )  # development: keep base/shards
    parser.add_argument("--peer-child", choices=("qvgen", "reference"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer_child:
        peer_child(args.peer_child, args.peer_layers, args.peer_steps)
        return
    if args.flow:
        from qvgen.core import claim_output_dir

        work = claim_output_dir(args.work, TOOL)  # the parent's fresh folder, or (run by hand) a new one
        result = flow(args.flow, work, args.layers, args.text_layers, args.steps, args.reuse)
        (work / "flow.json").write_text(json.dumps(result, indent=1))
        return
    load = "load average " + " / ".join(f"{x:.1f}" for x in os.getloadavg()) + " (1/5/15 min) at the start"
    tmp = None
    work = args.work
    if work is None:
        tmp = tempfile.mkdtemp(prefix="qvgen-realwidth-")
        work = Path(tmp)
    flows: dict[str, Any] = {}
    try:
        for family in args.families.split(","):
            fam_work = _claim(work / family)
            cmd = [sys.executable, __file__, "--flow", family, "--work", str(fam_work), "--layers",
                   str(args.layers), "--text-layers", str(args.text_layers), "--steps", str(args.steps)]  # fmt: skip
            start = time.perf_counter()
            proc = subprocess.run(cmd)
            flow_json = fam_work / "flow.json"
            if proc.returncode == 0 and flow_json.exists():
                flows[family] = json.loads(flow_json.read_text())
            else:
                flows[family] = {
                    "model": MODELS[family],
                    "flow_ok": False,
                    "error": f"exit {proc.returncode}",
                }
            flows[family]["wall_s"] = round(time.perf_counter() - start, 1)
            print(json.dumps({k: v for k, v in flows[family].items() if k != "losses"}), flush=True)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    peer_row = None
    ref_path = os.environ.get("QVGEN_REFERENCE_QUANT")
    peer_note = ""
    if not ref_path:
        peer_note = ("skipped: set QVGEN_REFERENCE_QUANT to the reference's training/quant/quant.py "
                     "(ModelTC/QVGen) to compare the training step with the peer's quantizer modules")  # fmt: skip
        print(peer_note)
    elif not Path(ref_path).is_file():
        peer_note = f"skipped: QVGEN_REFERENCE_QUANT={ref_path} is not a file"
        print(peer_note)
    else:
        peer_row = peer(args.peer_layers, args.peer_steps)
        print(json.dumps(peer_row), flush=True)
    helps = help_times()
    stderr_n, stderr_head = import_stderr_lines()
    if stderr_n:
        print(f"import stderr ({stderr_n} lines):\n{stderr_head}")

    def fmt(x: float | None) -> str:
        return "nan" if x is None else f"{x:.3g}"

    def mem_ratio(f: dict[str, Any]) -> float | None:
        mem = f.get("memory")
        return mem["measured_total"] / mem["plan_total"] if mem else None

    wan, cog = flows.get("wan", {}), flows.get("cogvideox", {})
    line = (
        f"realwidth wan_flow_ok={str(bool(wan.get('flow_ok'))).lower()} "
        f"cog_flow_ok={str(bool(cog.get('flow_ok'))).lower()} "
        f"ref_step_over_qvgen_step={fmt(peer_row and peer_row['ref_step_over_qvgen_step'])} "
        f"ref_peak_over_qvgen_peak={fmt(peer_row and peer_row['ref_peak_over_qvgen_peak'])} "
        f"wan_deploy_rel_err={fmt(wan.get('deploy_rel_err'))} cog_deploy_rel_err={fmt(cog.get('deploy_rel_err'))} "
        f"wan_mem_measured_over_plan={fmt(mem_ratio(wan))} cog_mem_measured_over_plan={fmt(mem_ratio(cog))} "
        f"help_max_s={max(helps.values()):.2f} import_stderr_lines={stderr_n}"
    )
    if not args.no_results:
        write_results(section(args, flows, peer_row, peer_note, helps, stderr_n, load, line))
    print(line)


if __name__ == "__main__":
    main()
