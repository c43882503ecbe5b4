"""Cost of one QVGen training step against a plain full-precision fine-tuning step (qvgen-train).

Model: a small Wan 2.1 transformer (4 blocks, hidden 512 = 8 heads x 64, FFN 2048, text dim 512), batch 1,
latents 16 x 4 x 32 x 32 (1024 video tokens), 64 text tokens, float32, one CPU thread. Every variant is one
distillation step exactly as `qvgen.train.recipe.run` does it: frozen teacher forward under no_grad, student
forward + backward of the fp32 MSE, grad-norm clip 1.0, AdamW step over the recipe's parameter groups.

- fp: the student is the full-precision model (plain fine-tuning; same teacher, loss and optimizer).
- qat: W4A4 fake-quant student (LSQ+ weights, clipped dynamic per-token activations), no Φ (LSQ baseline).
- qat_phi: the QVGen step: W4A4 + Φ at full rank r0 = 32 on every quantized linear, γ written by `apply_`.

Timing: the variants run interleaved round-robin in this process (so load drift on the shared machine hits
all of them alike); the median over the timed steps is reported. Memory: each variant runs again in a fresh
subprocess and reports its peak RSS above the RSS measured after imports (the training-state footprint:
weights, optimizer state, activations kept for backward).

Last line: `train_step qat_over_fp=<ratio> qat_phi_over_fp=<ratio> peak_mem_ratio=<qat_phi / fp peak>`.
Usage: python benchmarks/train_step.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

VARIANTS = ("fp", "qat", "qat_phi")
SMALL_WAN = dict(
    patch_size=(1, 2, 2), num_attention_heads=8, attention_head_dim=64, in_channels=16, out_channels=16,
    text_dim=512, freq_dim=256, ffn_dim=2048, num_layers=4, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=64,
)  # fmt: skip


def _status_bytes(field: str) -> int:
    """VmRSS / VmHWM of this process from /proc/self/status, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux: writing 5 to clear_refs)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def build(variant: str) -> dict[str, Any]:
    """Teacher, student, optimizer and one fixed batch for `variant`."""
    from diffusers import WanTransformer3DModel

    from qvgen import auxiliary, quant
    from qvgen.models import get_family
    from qvgen.train import OptimConfig, build_optimizer

    torch.manual_seed(0)
    teacher = WanTransformer3DModel(**SMALL_WAN).eval().requires_grad_(False)
    student = WanTransformer3DModel(**SMALL_WAN)
    student.load_state_dict(teacher.state_dict())
    student.train()
    family = get_family("wan")
    branches = None
    if variant != "fp":
        quant.prepare_(student, quant.QuantConfig.w4a4(), layer_roles=family.layer_roles)
        quant.initialize_(student, progress=False)
    if variant == "qat_phi":
        aux_cfg = auxiliary.AuxConfig(decay=auxiliary.DecaySchedule(initial_rank=32, period=444))
        branches = (auxiliary.attach_(student, aux_cfg), aux_cfg)
    optimizer = build_optimizer(student, OptimConfig())
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(1, 16, 4, 32, 32, generator=g)
    noise = torch.randn(latents.shape, generator=g)
    t = family.sample_timesteps(1, g)
    x = family.noised_inputs(latents, noise, t)
    text = torch.randn(1, 64, 512, generator=g)
    lengths = torch.tensor([40])
    return dict(family=family, teacher=teacher, student=student, optimizer=optimizer, branches=branches,
                x=x, text=text, lengths=lengths)  # fmt: skip


def step(s: dict[str, Any], i: int) -> None:
    """One recipe step (rank-decay γ update, teacher, student fwd/bwd, clip, AdamW)."""
    from qvgen import auxiliary
    from qvgen.train import distill_loss

    if s["branches"] is not None:
        branches, aux_cfg = s["branches"]
        auxiliary.apply_(branches, auxiliary.rank_at(i % 100, aux_cfg.decay), s["optimizer"])
    family, x = s["family"], s["x"]
    with torch.no_grad():
        target = family.predict(s["teacher"], x, s["text"], s["lengths"])
    loss = distill_loss(family.predict(s["student"], x, s["text"], s["lengths"]), target)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(s["student"].parameters(), 1.0)
    s["optimizer"].step()
    s["optimizer"].zero_grad(set_to_none=True)


def peak_memory(variant: str, steps: int) -> int:
    """Peak RSS above the post-import baseline for `steps` steps of `variant`, in a fresh process."""
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", variant, "--steps", str(steps)],
        capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    return int(json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"])


def memory_child(variant: str, steps: int) -> None:
    import diffusers  # noqa: F401  (imports are part of the baseline)

    from qvgen.train import run  # noqa: F401  (the recipe's imports: accelerate, the families)

    torch.set_num_threads(1)
    base = _status_bytes("VmRSS")
    _reset_peak_rss()  # the imports' own peak must not count
    s = build(variant)
    for i in range(steps):
        step(s, i)
    print(json.dumps({"peak_bytes": _status_bytes("VmHWM") - base}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 timed steps per variant instead of 15")
    parser.add_argument("--memory-child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.steps)
        return
    torch.set_num_threads(1)
    warmup, timed = (1, 5) if args.quick else (2, 15)
    states = {v: build(v) for v in VARIANTS}
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for i in range(warmup + timed):
        for v in VARIANTS:
            start = time.perf_counter()
            step(states[v], i)
            if i >= warmup:
                times[v].append(time.perf_counter() - start)
    med = {v: statistics.median(times[v]) for v in VARIANTS}
    del states
    mem = {v: peak_memory(v, 2) for v in VARIANTS}
    print("small Wan: 4 blocks, hidden 512, FFN 2048, 1024 video + 64 text tokens, batch 1, fp32, 1 thread")
    print(f"{'variant':10s} {'median step (ms)':>18s} {'peak mem (MB)':>14s}")
    for v in VARIANTS:
        print(f"{v:10s} {med[v] * 1e3:18.1f} {mem[v] / 2**20:14.1f}")
    print(
        f"train_step qat_over_fp={med['qat'] / med['fp']:.3f} qat_phi_over_fp={med['qat_phi'] / med['fp']:.3f} "
        f"peak_mem_ratio={mem['qat_phi'] / mem['fp']:.3f}"
    )


if __name__ == "__main__":
    main()
