"""GPU benchmark of issue 12: fused W4A4 (Triton) vs bf16 on Wan2.1-1.3B / CogVideoX-2B shapes, resident
weight memory, the whole Wan transformer forward, and one QVGen training step vs plain fine-tuning.

    python benchmarks/gpu_kernels.py            # about 5-8 min on one H100 (autotuning included)
    python benchmarks/gpu_kernels.py --quick    # fewer shapes and repeats

Needs CUDA and the ``triton`` extra; without CUDA it exits with status 2. Models are random-init real configs
(no downloads). Every ratio is against bf16 measured in this same run. Timings: CUDA events, median of the
timed calls after warm-up calls (the first call autotunes the W4A4 GEMM for its (M bucket, N, K)).

Sections:
1. One Linear, M tokens x (K -> N): bf16 ``F.linear``; W4A4 deploy (fused Triton: activation pass + int8 GEMM
   on the packed int4 weight); W4A16 deploy (tinygemm); fake-quant `QuantLinear` forward, fused and reference.
2. Whole Wan2.1-1.3B transformer at 81x480x832 (32760 video tokens, 512 text tokens), batch 1, bf16: bf16 model
   vs the W4A4 deploy model (every Linear converted), default attention; then the deploy model with an
   attention backend (``--attention-backend``, default: the first usable of sage, flash, _native_cudnn) as its
   own row. Resident memory: bytes the deploy model holds on the device after a forward (allocator delta:
   packed weights, scales, norms, kernel caches) vs the bf16 model's parameters and buffers.
3. Training step at 49x480x832 (20280 tokens): fp32 master weights, bf16 autocast, block gradient checkpointing,
   batch 1, frozen bf16 teacher forward + student forward/backward + grad clip + AdamW. Plain fine-tuning vs
   QVGen (W4A4 LSQ+ fake quant + Φ at r0 = 32); QVGen also with the fused fake quantizers switched off.

Last line: ``gpu_kernels device=<name> w4a4_over_bf16=<worst Wan shape at M >= 8192> w4a16_over_bf16=<same>
resident_ratio=<bf16 bytes / deploy resident bytes> e2e_over_bf16=<deploy / bf16 forward>
qat_phi_over_fp=<QVGen step / plain step>``.
"""

from __future__ import annotations

import argparse
import copy
import gc
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

WAN_ROWS = [(1536, 1536, 32760), (1536, 8960, 32760), (8960, 1536, 32760), (1536, 8960, 8192),
            (1536, 1536, 256), (1536, 8960, 65536)]  # fmt: skip
COG_ROWS = [(1920, 1920, 17776), (1920, 7680, 17776), (7680, 1920, 17776)]
QUICK_ROWS = [(1536, 1536, 32760), (1536, 8960, 32760), (8960, 1536, 32760), (1536, 1536, 256)]
TARGET_M = 8192
BACKENDS = ("sage", "flash", "_native_cudnn")


class Setup:
    """Device and sizes; `--cpu-smoke` swaps in a tiny Wan on the CPU to check the plumbing (no numbers)."""

    dev = "cuda"
    wan_config: dict[str, Any] | None = None  # None: the real Wan2.1-1.3B config
    e2e_latent = (21, 60, 104)  # 81 x 480 x 832: 32760 tokens
    train_latent = (13, 60, 104)  # 49 x 480 x 832: 20280 tokens
    text = (512, 4096)


def _sync() -> None:
    if Setup.dev == "cuda":
        torch.cuda.synchronize()


def _empty_cache() -> None:
    if Setup.dev == "cuda":
        torch.cuda.empty_cache()


def cuda_ms(fn: Callable[[], object], warmup: int, repeats: int) -> float:
    """Median milliseconds of ``fn`` (CUDA events) after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    _sync()
    times = []
    for _ in range(repeats):
        if Setup.dev != "cuda":
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
            continue
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def quant_layer(k: int, n: int) -> tuple[nn.Module, Any]:
    """A W4A4 QuantLinear (LSQ+ MSE init) with bf16 weight and bias inside a Sequential."""
    from qvgen import quant

    model = nn.Sequential(nn.Linear(k, n, device=Setup.dev))
    quant.prepare_(model, quant.QuantConfig.w4a4())
    quant.initialize_(model, progress=False)
    model.to(torch.bfloat16)  # a bf16 model's layer (the quantizers' scales stay float32)
    quant.set_timesteps_(model, torch.tensor([500.0], device=Setup.dev))
    return model, model[0]


def linear_row(k: int, n: int, m: int, warmup: int, repeats: int) -> dict[str, Any]:
    """Times of one (K, N, M) row; the W4A4 error is the fused bf16 output vs the reference path (fp32 in)."""
    from qvgen.quant import DeployLinear
    from qvgen.quant.triton_dispatch import set_fused_fake_quant

    _, layer = quant_layer(k, n)
    w4a4 = DeployLinear.from_quant_linear(layer, "w4a4")
    w4a16 = DeployLinear.from_quant_linear(layer, "w4a16")
    x = torch.randn(1, m, k, device=Setup.dev, dtype=torch.bfloat16)
    w16, b16 = layer.weight.detach(), layer.bias.detach()
    with torch.no_grad():
        ref = w4a4(x.float())
        err = float((w4a4(x).float() - ref).abs().max() / ref.abs().max())
        row: dict[str, Any] = {"k": k, "n": n, "m": m, "err": err}
        row["bf16"] = cuda_ms(lambda: F.linear(x, w16, b16), warmup, repeats)
        row["w4a4"] = cuda_ms(lambda: w4a4(x), warmup, repeats)
        row["w4a16"] = cuda_ms(lambda: w4a16(x), warmup, repeats)
        row["fq_fused"] = cuda_ms(lambda: layer(x), warmup, repeats)
        old = set_fused_fake_quant(False)
        row["fq_ref"] = cuda_ms(lambda: layer(x), warmup, repeats)
        set_fused_fake_quant(old)
    return row


def linear_rows(rows: list[tuple[int, int, int]], warmup: int, repeats: int) -> list[dict[str, Any]]:
    out = []
    for k, n, m in rows:
        row = linear_row(k, n, m, warmup, repeats)
        b = row["bf16"]
        print(
            f"{k:5d} -> {n:5d}  M={m:6d}  bf16 {b:7.3f} ms  w4a4 {row['w4a4'] / b:5.2f}x  "
            f"w4a16 {row['w4a16'] / b:5.2f}x  fake-quant fused {row['fq_fused'] / b:5.2f}x  "
            f"ref {row['fq_ref'] / b:5.2f}x  err {row['err']:.1e}",
            flush=True,
        )
        out.append(row)
        _empty_cache()
    return out


def wan_bf16() -> Any:
    from diffusers import WanTransformer3DModel

    from qvgen.models import get_family

    torch.manual_seed(0)
    with torch.device(Setup.dev):
        model: Any = WanTransformer3DModel(
            **(Setup.wan_config or get_family("wan").real_transformer_config())
        )
    return model.to(torch.bfloat16).eval().requires_grad_(False)


def model_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def resident_bytes(model: nn.Module) -> int:
    """Parameters, buffers and the deploy layers' kernel caches (the CPU smoke's stand-in for the allocator)."""
    from qvgen.quant import DeployLinear

    cached = [
        t
        for m in model.modules()
        if isinstance(m, DeployLinear)
        for v in m._kernel_cache.values()
        for t in (v if isinstance(v, tuple) else (v,))
        if isinstance(t, torch.Tensor)
    ]
    return model_bytes(model) + sum(t.numel() * t.element_size() for t in cached)


def _allocated() -> int:
    return torch.cuda.memory_allocated() if Setup.dev == "cuda" else 0


def _peak() -> int:
    return torch.cuda.max_memory_allocated() if Setup.dev == "cuda" else 0


def to_deploy(model: Any) -> Any:
    """prepare_ (W4A4, Wan roles) + MSE initialize_ + convert_ in place: every Linear a DeployLinear."""
    from qvgen import quant
    from qvgen.models import get_family

    quant.prepare_(model, quant.QuantConfig.w4a4(), layer_roles=get_family("wan").layer_roles)
    quant.initialize_(model, progress=False)
    quant.convert_(model, target="w4a4")
    return model


def forward_rows(args: argparse.Namespace) -> dict[str, Any]:
    frames, h, w = Setup.e2e_latent
    g = torch.Generator(Setup.dev).manual_seed(0)
    x = torch.randn(1, 16, frames, h, w, device=Setup.dev, generator=g).bfloat16()
    text = torch.randn(1, *Setup.text, device=Setup.dev, generator=g).bfloat16()
    t = torch.tensor([500.0], device=Setup.dev)
    bf16 = wan_bf16()

    def fwd(model: nn.Module) -> Callable[[], object]:
        return lambda: model(hidden_states=x, timestep=t, encoder_hidden_states=text, return_dict=False)

    res: dict[str, Any] = {"bf16_bytes": model_bytes(bf16)}
    with torch.no_grad():
        res["bf16"] = cuda_ms(fwd(bf16), 1, args.repeats_e2e)
        print(f"bf16 forward {res['bf16']:.1f} ms", flush=True)
        gc.collect()
        _sync()
        before = _allocated()
        deploy = to_deploy(copy.deepcopy(bf16))
        gc.collect()
        res["w4a4"] = cuda_ms(fwd(deploy), 1, args.repeats_e2e)  # the first call autotunes every shape
        gc.collect()
        _sync()
        res["resident_bytes"] = _allocated() - before if Setup.dev == "cuda" else resident_bytes(deploy)
        print(
            f"w4a4 deploy forward {res['w4a4']:.1f} ms, resident {res['resident_bytes'] / 2**30:.3f} GiB",
            flush=True,
        )
        res["backend"] = None
        for name in [args.attention_backend] if args.attention_backend else list(BACKENDS):
            try:  # diffusers makes the backend its global default too, so the bf16 model runs with it as well
                deploy.set_attention_backend(name)
                res["bf16_backend"] = cuda_ms(fwd(bf16), 1, args.repeats_e2e)
                res["w4a4_backend"] = cuda_ms(fwd(deploy), 1, args.repeats_e2e)
                res["backend"] = name
            except (ValueError, RuntimeError, ImportError) as e:
                print(f"attention backend {name!r} not usable: {e}", flush=True)
            finally:
                deploy.set_attention_backend("native")
            if res["backend"] is not None:
                break
    del bf16, deploy
    gc.collect()
    _empty_cache()
    return res


def train_variant(
    variant: str, teacher: nn.Module, batch: Any, text: torch.Tensor, repeats: int
) -> dict[str, float]:
    """Seconds per training step (and peak GiB) of ``variant`` ("fp" or "qvgen") on a fresh fp32 student."""
    from qvgen import auxiliary, quant
    from qvgen.models import get_family
    from qvgen.quant.triton_dispatch import set_fused_fake_quant
    from qvgen.train.config import OptimConfig
    from qvgen.train.optim import build_optimizer

    family = get_family("wan")
    student: Any = copy.deepcopy(teacher).float().train().requires_grad_(True)
    student.enable_gradient_checkpointing()
    branches = None
    if variant == "qvgen":
        quant.prepare_(student, quant.QuantConfig.w4a4(), layer_roles=family.layer_roles)
        quant.initialize_(student, progress=False)
        aux_cfg = auxiliary.AuxConfig(decay=auxiliary.DecaySchedule(initial_rank=32, period=444))
        branches = (auxiliary.attach_(student, aux_cfg), aux_cfg)
    optimizer = build_optimizer(student, OptimConfig())

    def step() -> None:
        if branches is not None:
            auxiliary.apply_(branches[0], auxiliary.rank_at(0, branches[1].decay), optimizer)
        with torch.autocast(Setup.dev, dtype=torch.bfloat16):
            with torch.no_grad():
                target = family.predict(teacher, batch, text)
            pred = family.predict(student, batch, text)
        loss = F.mse_loss(pred.float(), target.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    if Setup.dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    out = {
        variant: cuda_ms(step, 2, repeats) / 1e3,
        f"{variant}_peak_gib": _peak() / 2**30,
    }
    print(
        f"train step {variant}: {out[variant]:.3f} s, peak {out[f'{variant}_peak_gib']:.1f} GiB", flush=True
    )
    if variant == "qvgen":
        old = set_fused_fake_quant(False)
        out["qvgen_reference_fq"] = cuda_ms(step, 1, repeats) / 1e3
        set_fused_fake_quant(old)
        print(f"train step qvgen, reference fake quant: {out['qvgen_reference_fq']:.3f} s", flush=True)
    return out


def train_rows(args: argparse.Namespace) -> dict[str, float]:
    from qvgen.models import get_family

    family = get_family("wan")
    g = torch.Generator(Setup.dev).manual_seed(1)
    latents = torch.randn(1, 16, *Setup.train_latent, device=Setup.dev, generator=g)
    noise = torch.randn(latents.shape, device=Setup.dev, generator=g)
    batch = family.noised_inputs(latents, noise, torch.tensor([500.0], device=Setup.dev))
    text = torch.randn(1, *Setup.text, device=Setup.dev, generator=g)
    teacher = wan_bf16()
    out: dict[str, float] = {}
    for variant in ("fp", "qvgen"):
        out.update(train_variant(variant, teacher, batch, text, args.repeats_train))
        gc.collect()
        _empty_cache()
    return out


def cpu_smoke(args: argparse.Namespace) -> int:
    """Run every section on a tiny Wan on the CPU (reference kernels there): a code check, not a measurement."""
    from qvgen.models.wan import WAN_TINY_TRANSFORMER

    Setup.dev = "cpu"
    Setup.wan_config = dict(WAN_TINY_TRANSFORMER)
    Setup.e2e_latent, Setup.train_latent, Setup.text = (2, 8, 8), (2, 8, 8), (16, 64)
    args.repeats_e2e = args.repeats_train = 1
    args.attention_backend = "native"
    linear_rows([(128, 64, 32)], 1, 1)
    res = forward_rows(args)
    train = train_rows(args)
    assert res["resident_bytes"] > 0 and train["fp"] > 0 and train["qvgen"] > 0
    print("gpu_kernels cpu smoke: every section ran (tiny model on the CPU; no GPU numbers)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="four Wan shapes, fewer repeats")
    parser.add_argument("--attention-backend", help="diffusers backend for the extra forward row")
    parser.add_argument("--skip-train", action="store_true", help="no training-step section")
    parser.add_argument(
        "--cpu-smoke", action="store_true", help="tiny Wan on the CPU: checks the code, measures nothing"
    )
    args = parser.parse_args()
    if args.cpu_smoke:
        return cpu_smoke(args)
    if not torch.cuda.is_available():
        print(
            "gpu_kernels: no CUDA device; this benchmark needs a GPU (nothing was measured)", file=sys.stderr
        )
        return 2
    from qvgen.quant.triton_dispatch import triton_available

    if not triton_available():
        print("gpu_kernels: triton is not installed (pip install 'qvgen-quant[triton]')", file=sys.stderr)
        return 2
    args.repeats_e2e, args.repeats_train = (2, 2) if args.quick else (3, 3)
    warmup, repeats = (2, 10) if args.quick else (3, 20)
    device = torch.cuda.get_device_name()
    print(f"device: {device}, torch {torch.__version__}", flush=True)
    rows = linear_rows(QUICK_ROWS if args.quick else WAN_ROWS + COG_ROWS, warmup, repeats)
    e2e = forward_rows(args)
    train = {} if args.skip_train else train_rows(args)

    print(
        "\n| K -> N | M | bf16 ms | W4A4 fused | W4A16 | fake-quant fwd fused | fake-quant fwd ref | W4A4 rel err |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        b = r["bf16"]
        print(f"| {r['k']} -> {r['n']} | {r['m']} | {b:.3f} | {r['w4a4'] / b:.2f}x | {r['w4a16'] / b:.2f}x | "
              f"{r['fq_fused'] / b:.2f}x | {r['fq_ref'] / b:.2f}x | {r['err']:.1e} |")  # fmt: skip
    print("\n| Wan2.1-1.3B forward, 81x480x832 | ms | vs bf16 |")
    print("|---|---|---|")
    print(f"| bf16, native attention | {e2e['bf16']:.1f} | 1.00x |")
    print(f"| W4A4 deploy (fused), native attention | {e2e['w4a4']:.1f} | {e2e['w4a4'] / e2e['bf16']:.2f}x |")
    if e2e["backend"] is not None:
        for key, label in (("bf16_backend", "bf16"), ("w4a4_backend", "W4A4 deploy")):
            print(f"| {label}, {e2e['backend']} attention | {e2e[key]:.1f} | {e2e[key] / e2e['bf16']:.2f}x |")
    else:
        print("| attention backend row | not measured: no usable backend | |")
    resident_ratio = e2e["bf16_bytes"] / e2e["resident_bytes"]
    print(f"\nweights: bf16 {e2e['bf16_bytes'] / 2**30:.3f} GiB, W4A4 deploy resident after forward "
          f"{e2e['resident_bytes'] / 2**30:.3f} GiB ({resident_ratio:.2f}x smaller)")  # fmt: skip
    if train:
        print("\n| training step, 20280 tokens | s | vs plain | peak GiB |")
        print("|---|---|---|---|")
        print(f"| plain fine-tuning | {train['fp']:.3f} | 1.00x | {train['fp_peak_gib']:.1f} |")
        print(f"| QVGen (W4A4 + Φ r0=32), fused fake quant | {train['qvgen']:.3f} | "
              f"{train['qvgen'] / train['fp']:.2f}x | {train['qvgen_peak_gib']:.1f} |")  # fmt: skip
        print(f"| QVGen, reference fake quant | {train['qvgen_reference_fq']:.3f} | "
              f"{train['qvgen_reference_fq'] / train['fp']:.2f}x | |")  # fmt: skip
    big = [r for r in rows if r["m"] >= TARGET_M and (r["k"], r["n"]) in {(k, n) for k, n, _ in WAN_ROWS}]
    w4a4_ratio = max(r["w4a4"] / r["bf16"] for r in big)
    w4a16_ratio = max(r["w4a16"] / r["bf16"] for r in big)
    qat = f"{train['qvgen'] / train['fp']:.3f}" if train else "not_measured"
    print(
        f"gpu_kernels device={device.replace(' ', '_')} w4a4_over_bf16={w4a4_ratio:.3f} "
        f"w4a16_over_bf16={w4a16_ratio:.3f} resident_ratio={resident_ratio:.3f} "
        f"e2e_over_bf16={e2e['w4a4'] / e2e['bf16']:.3f} qat_phi_over_fp={qat}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
