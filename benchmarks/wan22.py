"""Wan 2.2 in qvgen (issue 34): real-model roles, per-token timesteps, and the tiny TI2V and two-expert flows.

1. Roles: `qvgen.models.build_real_on_meta` for wan2.2-ti2v-5b and wan2.2-t2v-a14b (one expert): every Linear
   has a role (`roles_of`, none `other`) and the parameter count is within 1 % of the released size.
2. The tiny flows, each stage through the public function a user calls, each into a fresh folder:
   `qvgen.data.write_procedural_dataset` (mp4s + captions.csv) → `qvgen.train.precompute` with the tiny
   checkpoint's own VAE and text encoder → `qvgen.train.run` (W4A4 QVGen, Φ to rank 0; `expert: both` for the
   two-expert checkpoint) exporting fake-quant and deploy → `qvgen.models.load_pipeline(base, deploy)` → one
   sampled clip → `qvgen.eval.score_video` (prompt adherence) and `qvgen.eval.temporal_flickering`.
   TI2V: `tiny_wan_checkpoint("ti2v")` (48-channel VAE, `expand_timesteps`, per-token timesteps `[1, S]`
   reach the deploy model while sampling). Two experts: `tiny_two_expert_checkpoint` (boundary 0.875), both
   experts called while sampling.
3. Deploy vs fake-quant: `load_student(<fake-quant>)` vs the pipeline's deploy transformer on the same input
   (TI2V: mixed per-token timesteps; each expert: a timestep inside its own range); max relative error of the
   transformer output (max |deploy − fake| / max |fake|) over the TI2V transformer and both experts.
4. Per-token timesteps on the TI2V student (fake-quant) and its deploy model: `[B, S]` uniform equals `[B]`
   bit for bit (whole transformer), and under mixed per-token timesteps (first frame's tokens at t = 0) every
   quantized layer's output on each token group equals running that group alone with its own timestep.
5. `two_expert_load_fp_bytes`: `load_pipeline(base, two_expert_deploy)` in a child process under
   `strace -f -e trace=openat,read,pread64,readv,mmap,close`: bytes read (read/pread/readv results, mmap
   lengths) from files opened under `base/transformer` or `base/transformer_2`; the same count over the deploy
   folder shows the tracer sees the reads (it must be > 0). Cross-check: the clip sampled with both base
   transformer folders moved away equals the one sampled with them in place.

Usage: python benchmarks/wan22.py [--work DIR]
The last line printed is the `wan22 ...` line.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from qvgen import quant
from qvgen.data import write_procedural_dataset
from qvgen.eval import score_video, temporal_flickering
from qvgen.models import EXPERTS, build_real_on_meta, get_real_model, load_pipeline, load_student, roles_of
from qvgen.models.testing import tiny_two_expert_checkpoint, tiny_wan_checkpoint
from qvgen.train import PrecomputeConfig, RunConfig, precompute, run

# Released transformer parameter counts (the hub's safetensors metadata of Wan-AI/Wan2.2-TI2V-5B: 5.0B;
# each A14B expert has the Wan 2.1 14B architecture: 14.29B, "A14B" = 14B active of 27B in two experts).
RELEASED_PARAMS = {"wan2.2-ti2v-5b": 5.00e9, "wan2.2-t2v-a14b": 14.29e9}
FRAMES, SIZE, STEPS = 9, 64, 3
SAMPLE = {"height": SIZE, "width": SIZE, "num_frames": FRAMES, "max_sequence_length": 16, "output_type": "np"}


@dataclass
class Flow:
    """What one tiny flow produced (ok only when every stage ran)."""

    name: str
    base: Path
    fake_quant: Path | None = None
    deploy: Path | None = None
    losses: tuple[float, ...] = ()
    phi_rank: int | None = None
    frames: np.ndarray | None = None
    caption: str = ""
    adherence: float | None = None
    flicker: float | None = None
    experts_called: set[str] = field(default_factory=set)
    token_timesteps_seen: bool = False
    seconds: float = 0.0
    ok: bool = False


def roles_ok(name: str) -> tuple[bool, int, int, float]:
    """(ok, Linears, Linears with a role, parameters) of the real transformer `name` on the meta device."""
    model = build_real_on_meta(name)
    n_linear = sum(isinstance(m, nn.Linear) for m in model.modules())
    roles = roles_of(model, get_real_model(name).family)
    params = float(sum(p.numel() for p in model.parameters()))
    every = len(roles) == n_linear and quant.LayerRole.other not in roles.values()
    within = abs(params / RELEASED_PARAMS[name] - 1) <= 0.01
    return every and within, n_linear, len(roles), params


def _precompute(root: Path, base: Path, n: int) -> Path:
    captions = write_procedural_dataset(root / "videos", n, seed=1, frames=FRAMES)
    cfg = PrecomputeConfig.model_validate(
        {
            "model": {"family": "wan", "checkpoint": str(base), "dtype": "float32"},
            "ingest": {"captions": str(captions)},
            "writer": {
                "buckets": [{"frames": FRAMES, "height": SIZE, "width": SIZE}],
                "samples_per_shard": 2,
                "latent_dtype": "float32",
                "text_dtype": "float32",
            },
            "out_dir": str(root / "shards"),
        }
    )
    return precompute(cfg)


def _train(root: Path, base: Path, shards: Path, **extra: Any) -> Any:
    cfg = RunConfig.model_validate(
        {
            "model": {"family": "wan", "checkpoint": str(base), "dtype": "float32"},
            "quant": {"weight": {"kind": "lsq_plus", "bits": 4}, "activation": {"bits": 4}},
            "aux": {"decay": {"initial_rank": 2, "period": 1}},
            "data": {"shards": str(shards), "batch_size": 2, "num_workers": 0, "shuffle_buffer": 4},
            "train": {"max_steps": STEPS, "caption_dropout": 0.0, "seed": 0},
            "logging": {"progress_bar": False},
            "checkpoint": {"every_n_steps": None},
            "output_dir": str(root / "run"),
            **extra,
        }
    )
    return run(cfg)


def _sample(pipe: Any, caption: str, steps: int, seed: int = 0) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    out = pipe(prompt=caption, num_inference_steps=steps, guidance_scale=1.0, generator=g, **SAMPLE)
    return (np.clip(np.asarray(out.frames[0]), 0.0, 1.0) * 255).round().astype(np.uint8)  # as a decoded mp4


def _score(flow: Flow) -> None:
    assert flow.frames is not None
    adherence = score_video(flow.frames, flow.caption)
    flow.adherence = None if adherence.unscorable else float(np.mean(
        [adherence.colour or 0.0, adherence.shape or 0.0, adherence.motion or 0.0]
    ))  # fmt: skip
    flow.flicker = temporal_flickering(flow.frames)


def ti2v_flow(root: Path) -> tuple[Flow, Any]:
    """precompute → train (Φ to rank 0, per-token timesteps) → export → load_pipeline → sample → score."""
    start = time.perf_counter()
    flow = Flow("ti2v", tiny_wan_checkpoint("ti2v"))
    shards = _precompute(root, flow.base, 4)
    result = _train(root, flow.base, shards)
    flow.fake_quant, flow.deploy = result.fake_quant_dir, result.deploy_dir
    flow.losses, flow.phi_rank = result.losses, result.phi_rank
    assert flow.deploy is not None and flow.fake_quant is not None
    pipe = load_pipeline(flow.base, flow.deploy, progress=False)
    seen: list[torch.Tensor] = []
    hook = pipe.transformer.register_forward_pre_hook(
        lambda _m, _a, kw: seen.append(kw["timestep"]), with_kwargs=True
    )
    flow.caption = _caption(root)
    flow.frames = _sample(pipe, flow.caption, steps=2)
    hook.remove()
    flow.token_timesteps_seen = bool(seen) and all(t.ndim == 2 and t.shape[1] > 1 for t in seen)
    _score(flow)
    flow.seconds = time.perf_counter() - start
    flow.ok = (
        flow.phi_rank == 0
        and len(flow.losses) == STEPS
        and all(np.isfinite(flow.losses))
        and flow.frames.shape == (FRAMES, SIZE, SIZE, 3)
        and bool(np.isfinite(flow.frames).all())
        and flow.token_timesteps_seen
        and flow.flicker is not None
    )
    return flow, pipe


def two_expert_flow(root: Path) -> tuple[Flow, Any]:
    """The same flow on the A14B-shaped pair: `expert: both`, a two-expert deploy folder, both experts sampled."""
    start = time.perf_counter()
    flow = Flow("two_expert", tiny_two_expert_checkpoint(0))
    shards = _precompute(root, flow.base, 4)
    result = _train(root, flow.base, shards, expert="both")
    flow.fake_quant, flow.deploy = result.fake_quant_dir, result.deploy_dir
    flow.losses, flow.phi_rank = result.losses, result.phi_rank
    assert flow.deploy is not None and flow.fake_quant is not None
    pipe = load_pipeline(flow.base, flow.deploy, progress=False)
    hooks = [
        getattr(pipe, name).register_forward_pre_hook(
            lambda _m, _a, _kw, name=name: flow.experts_called.add(name), with_kwargs=True
        )
        for name in EXPERTS
    ]
    flow.caption = _caption(root)
    flow.frames = _sample(pipe, flow.caption, steps=4)
    for h in hooks:
        h.remove()
    _score(flow)
    flow.seconds = time.perf_counter() - start
    flow.ok = (
        flow.phi_rank == 0
        and len(flow.losses) == STEPS * len(EXPERTS)
        and all(np.isfinite(flow.losses))
        and flow.frames.shape == (FRAMES, SIZE, SIZE, 3)
        and bool(np.isfinite(flow.frames).all())
        and flow.experts_called == set(EXPERTS)
        and flow.flicker is not None
    )
    return flow, pipe


def _caption(root: Path) -> str:
    import csv

    with (root / "videos" / "captions.csv").open(newline="") as f:
        return str(next(csv.DictReader(f))["caption"])


def _inputs(model: nn.Module, latent: tuple[int, ...], timestep: torch.Tensor, seed: int) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    text_dim = int(model.config.text_dim)
    return {
        "hidden_states": torch.randn(1, *latent, generator=g),
        "timestep": timestep,
        "encoder_hidden_states": torch.randn(1, 16, text_dim, generator=g),
        "return_dict": False,
    }


def _rel_err(fake: nn.Module, deploy: nn.Module, inputs: dict[str, Any]) -> float:
    with torch.no_grad():
        f, d = fake(**inputs)[0].double(), deploy(**inputs)[0].double()
    return float((d - f).abs().max() / f.abs().max())


def _ti2v_tokens(model: nn.Module, latent: tuple[int, ...]) -> int:
    p = model.config.patch_size
    return latent[1] // p[0] * (latent[2] // p[1]) * (latent[3] // p[2])


TI2V_LATENT = (48, 3, 4, 4)  # 9×64×64 through the 16×-compressing tiny Wan 2.2 VAE
EXPERT_LATENT = (16, 3, 8, 8)


def deploy_errors(ti2v: Flow, ti2v_pipe: Any, two: Flow, two_pipe: Any) -> dict[str, float]:
    """Relative error deploy vs fake-quant of the transformer output, per transformer."""
    assert ti2v.fake_quant is not None and two.fake_quant is not None
    errs: dict[str, float] = {}
    fake = load_student(ti2v.fake_quant)
    s = _ti2v_tokens(fake, TI2V_LATENT)
    g = torch.Generator().manual_seed(5)
    tt = (torch.rand(1, s, generator=g) * 1000).round()
    tt[:, : s // 3] = 0.0  # image-to-video: the first frame's tokens at t = 0
    errs["ti2v"] = _rel_err(fake, ti2v_pipe.transformer, _inputs(fake, TI2V_LATENT, tt, 0))
    boundary = float(two_pipe.config.boundary_ratio) * 1000
    for name, t in zip(EXPERTS, (boundary + 60.0, boundary / 2), strict=True):
        fake = load_student(two.fake_quant / name)
        inputs = _inputs(fake, EXPERT_LATENT, torch.tensor([t]), 1)
        errs[name] = _rel_err(fake, getattr(two_pipe, name), inputs)
    return errs


def per_token_timesteps(ti2v: Flow, ti2v_pipe: Any) -> tuple[dict[str, bool], dict[str, float]]:
    """({check: ok}, {model: max |out([B, S] uniform) − out([B])| of the whole transformer}).

    Checks, for the fake-quant TI2V student and its deploy model: every quantized layer fed the same token
    input gives bit-identical outputs under a scalar, a `[B]` and a uniform `[B, S]` timestep; under mixed
    per-token timesteps each token group equals running that group alone with its own timestep. The whole
    transformer is not bit-identical between `[B]` and `[B, S]` even in full precision: diffusers' Wan runs
    its time embedding on the flattened tokens `[B*S, D]` under `[B, S]` (another GEMM shape), so that gap is
    reported beside the full-precision model's own, not checked."""
    assert ti2v.fake_quant is not None
    from qvgen.models import get_family

    models = {
        "full_precision": get_family("wan").load_transformer(ti2v.base, dtype="float32"),
        "fake_quant": load_student(ti2v.fake_quant),
        "deploy": ti2v_pipe.transformer,
    }
    b = 2
    s = _ti2v_tokens(models["fake_quant"], TI2V_LATENT)
    checks: dict[str, bool] = {}
    gaps: dict[str, float] = {}
    for kind, model in models.items():
        gap = 0.0
        for t in (37.0, 812.0):
            inputs = _inputs(model, TI2V_LATENT, torch.full((b,), t), 2)
            inputs["hidden_states"] = inputs["hidden_states"].expand(b, *TI2V_LATENT).contiguous()
            inputs["encoder_hidden_states"] = inputs["encoder_hidden_states"].expand(b, -1, -1).contiguous()
            with torch.no_grad():
                per_sample = model(**inputs)[0]
                per_token = model(**{**inputs, "timestep": torch.full((b, s), t)})[0]
            gap = max(gap, float((per_sample - per_token).abs().max()))
        gaps[kind] = gap
        if kind != "full_precision":
            checks[f"{kind}_uniform_bitwise"] = _uniform_layers_bitwise(model, b, s)
            checks[f"{kind}_mixed_groups"] = _mixed_groups_match(model, b, s)
    return checks, gaps


def _quantized_layers(model: nn.Module) -> list[nn.Module]:
    layers = [m for m in model.modules() if isinstance(m, quant.QuantLinear | quant.DeployLinear)]
    assert layers, "no quantized layer"
    return layers


def _uniform_layers_bitwise(model: nn.Module, b: int, s: int) -> bool:
    """Every quantized layer, same token input [B, S, K]: scalar, [B] and uniform [B, S] timesteps give
    bit-identical outputs."""
    g = torch.Generator().manual_seed(4)
    for layer in _quantized_layers(model):
        x = torch.randn(b, s, layer.in_features, generator=g) * 3
        for t in (37.0, 812.0):
            outs = []
            for ts in (torch.tensor(t), torch.full((b,), t), torch.full((b, s), t)):
                quant.set_timesteps_(model, ts)
                with torch.no_grad():
                    outs.append(layer(x))
            if not all(torch.equal(outs[0], o) for o in outs[1:]):
                return False
    quant.set_timesteps_(model, None)
    return True


def _mixed_groups_match(model: nn.Module, b: int, s: int) -> bool:
    """Every quantized layer fed token inputs [B, S, K] under mixed per-token timesteps gives, on each token
    group, what running that group alone under its own timestep gives (≤ 1e-6 relative)."""
    tt = torch.tensor([[0.0] * (s // 3) + [700.0] * (s - s // 3), [0.0] * (s // 3) + [130.0] * (s - s // 3)])
    g = torch.Generator().manual_seed(3)
    for layer in _quantized_layers(model):
        x = torch.randn(b, s, layer.in_features, generator=g) * 3
        quant.set_timesteps_(model, tt)
        with torch.no_grad():
            mixed = layer(x)
        for i in range(b):
            for value in tt[i].unique():
                mask = tt[i] == value
                quant.set_timesteps_(model, value.reshape(1))
                with torch.no_grad():
                    alone = layer(x[i : i + 1, mask])[0]
                scale = float(alone.abs().max()) or 1.0
                if float((mixed[i, mask] - alone).abs().max()) > 1e-6 * scale:
                    return False
    quant.set_timesteps_(model, None)
    return True


_SYSCALL = re.compile(r"^(\d+)\s+(\w+)\((.*)\)\s+=\s+(-?\w+)")
_UNFINISHED = re.compile(r"^(\d+)\s+(\w+)\((.*) <unfinished \.\.\.>$")
_RESUMED = re.compile(r"^(\d+)\s+<\.\.\. (\w+) resumed>(.*)\)\s+=\s+(-?\w+)")


def _strace_bytes(log: str, folders: dict[str, Path]) -> dict[str, int]:
    """Bytes read (read/pread64/readv results, mmap lengths) from files opened under each folder."""
    pending: dict[str, tuple[str, str]] = {}
    open_fds: dict[int, str] = {}
    counts = dict.fromkeys(folders, 0)
    prefixes = {key: str(path.resolve()) + "/" for key, path in folders.items()}
    for line in log.splitlines():
        if m := _UNFINISHED.match(line):
            pending[m.group(1)] = (m.group(2), m.group(3))
            continue
        if m := _RESUMED.match(line):
            if m.group(1) not in pending:
                continue
            call, args = pending.pop(m.group(1))
            args, ret = args + m.group(3), m.group(4)
        elif m := _SYSCALL.match(line):
            call, args, ret = m.group(2), m.group(3), m.group(4)
        else:
            continue
        if not re.fullmatch(r"-?\d+", ret) and not ret.startswith("0x"):
            continue
        if call in ("openat", "open"):
            path = re.search(r'"([^"]*)"', args)
            if path and not ret.startswith("-") and path.group(1):
                full = str(Path(path.group(1)).resolve())
                for key, prefix in prefixes.items():
                    if full.startswith(prefix):
                        open_fds[int(ret)] = key
        elif call == "close":
            open_fds.pop(int(args.split(",")[0]), None)
        elif call in ("read", "pread64", "readv") and not ret.startswith("-"):
            fd = int(args.split(",")[0])
            if fd in open_fds:
                counts[open_fds[fd]] += int(ret)
        elif call == "mmap" and not ret.startswith("-"):
            parts = [p.strip() for p in args.split(",")]
            if len(parts) >= 5 and re.fullmatch(r"\d+", parts[4]) and int(parts[4]) in open_fds:
                counts[open_fds[int(parts[4])]] += int(parts[1])
    return counts


def load_fp_bytes(base: Path, deploy: Path, work: Path) -> dict[str, int]:
    """Bytes read from base/transformer, base/transformer_2 and the deploy folder by `load_pipeline`."""
    if shutil.which("strace") is None:
        raise RuntimeError("strace is not installed: `apt-get install strace` to measure the bytes read")
    log = work / "strace.log"
    code = (
        "import torch; torch.set_num_threads(1)\n"
        "from qvgen.models import load_pipeline\n"
        f"load_pipeline({str(base)!r}, {str(deploy)!r}, progress=False)\n"
    )
    cmd = ["strace", "-f", "-qq", "-e", "trace=openat,open,read,pread64,readv,mmap,close", "-o", str(log)]
    subprocess.run([*cmd, sys.executable, "-c", code], check=True)
    folders = {e: base / e for e in EXPERTS} | {"deploy": deploy}
    return _strace_bytes(log.read_text(), folders)


def moved_away_equal(flow: Flow, work: Path) -> bool:
    """The clip sampled with both base transformer folders moved away equals the flow's clip."""
    assert flow.deploy is not None and flow.frames is not None
    base = shutil.copytree(flow.base, work / "base-copy")
    for e in EXPERTS:
        shutil.move(base / e, work / f"away-{e}")
    pipe = load_pipeline(base, flow.deploy, progress=False)
    return bool(np.array_equal(_sample(pipe, flow.caption, steps=4), flow.frames))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="wan22-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        print("| model | Linears | with a role | parameters | released | ok |")
        print("| --- | ---: | ---: | ---: | ---: | --- |")
        roles = {}
        for name in RELEASED_PARAMS:
            ok, n_linear, n_roles, params = roles_ok(name)
            roles[name] = ok
            print(
                f"| {name} | {n_linear} | {n_roles} | {params / 1e9:.3f}B | {RELEASED_PARAMS[name] / 1e9:.2f}B | {ok} |"
            )
        ti2v, ti2v_pipe = ti2v_flow(work / "ti2v")
        two, two_pipe = two_expert_flow(work / "two-expert")
        print()
        print("| flow | losses | Φ rank | sampled | adherence | flickering | s | ok |")
        print("| --- | --- | ---: | --- | ---: | ---: | ---: | --- |")
        for f in (ti2v, two):
            extra = "per-token t" if f.name == "ti2v" else "+".join(sorted(f.experts_called))
            adh = "unscorable" if f.adherence is None else f"{f.adherence:.2f}"
            losses = " ".join(f"{x:.4f}" for x in f.losses)
            print(
                f"| {f.name} | {losses} | {f.phi_rank} | {extra} | {adh} | {f.flicker:.4f} | {f.seconds:.1f} | {f.ok} |"
            )
        errs = deploy_errors(ti2v, ti2v_pipe, two, two_pipe)
        tokens, gaps = per_token_timesteps(ti2v, ti2v_pipe)
        assert two.deploy is not None
        read = load_fp_bytes(two.base, two.deploy, work)
        moved = moved_away_equal(two, work)
        print()
        print("| check | value |")
        print("| --- | --- |")
        for name, err in errs.items():
            print(f"| deploy vs fake-quant rel. err, {name} | {err:.2e} |")
        for name, ok in tokens.items():
            print(f"| per-token timesteps, {name} | {ok} |")
        for name, gap in gaps.items():
            print(f"| whole transformer, max abs out([B, S] uniform) - out([B]), {name} (info) | {gap:.2e} |")
        for name, n in read.items():
            print(f"| bytes read by load_pipeline from {name}/ | {n} |")
        print(f"| same clip with base transformer folders moved away | {moved} |")
        print(f"| wall time | {time.perf_counter() - start:.0f} s |")
    tracer_sees = read["deploy"] > 0
    fp_bytes = sum(read[e] for e in EXPERTS) if tracer_sees and moved else -1
    print(
        f"wan22 ti2v5b_roles_ok={str(roles['wan2.2-ti2v-5b']).lower()} "
        f"a14b_roles_ok={str(roles['wan2.2-t2v-a14b']).lower()} "
        f"per_token_timesteps_ok={str(all(tokens.values())).lower()} ti2v_flow_ok={str(ti2v.ok).lower()} "
        f"two_expert_flow_ok={str(two.ok).lower()} two_expert_load_fp_bytes={fp_bytes} "
        f"deploy_vs_fakequant_max_rel_err={max(errs.values()):.2e}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
