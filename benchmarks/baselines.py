"""The paper's baselines on the embedded tiny Wan teacher, and what keeping SVDQuant's branch costs.

Rows (same budget and data as paper_table's LSQ row, measured in the same run): LSQ QAT (the reference
row), EfficientDM-style QALoRA (W4A4), Q-DM-style QAT with NeM (W4A4), SVDQuant-style PTQ with its 16-bit
branch kept (W4A6, W4A4). Every student runs as its real low-bit deploy export on held-out prompts and is
scored with `qvgen.eval.AdherenceScorer` (mean of colour / shape / motion), PSNR and latent MSE vs the
teacher (via `qvgen.demo.evaluate`, the paper table's evaluation).

Memory: bytes of the deploy state dict of the real Wan2.1-T2V-1.3B built on the meta device (no weights),
SVDQuant rank 32 vs plain W4A4 (`kept_branch_mem_ratio`), and the same for the tiny runs' exported files.
Time: CPU seconds of the tiny deploy students' forward, SVDQuant vs plain W4A4, on one batch.

Appends a `### baselines` subsection to the `## paper_table` section of benchmarks/RESULTS.md (unless
--no-write); its last line is
`baselines efficientdm_w4a4_adherence=… qdm_w4a4_adherence=… svdquant_w4a6_adherence=… …`.
Usage: python benchmarks/baselines.py [--steps N] [--clips N] [--prompts N] [--out DIR] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

from qvgen.demo import (
    DEFAULT_TEACHER_DIR,
    TrainBudget,
    build_shards,
    evaluate,
    held_out_clips,
    run_config,
    teacher_clip_shape,
    teacher_sampling,
    teacher_world_style,
    train_variant,
)
from qvgen.train import RunConfig

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## paper_table"
SUBSECTION = "### baselines"


def method_config(base: RunConfig, method: str, act_bits: int, rank: int) -> RunConfig:
    """The LSQ run config of the demo turned into a baseline method (validated again)."""
    data = base.model_dump(mode="json")
    data["output_dir"] = str(Path(data["output_dir"]).with_name(f"{method}-w4a{act_bits}"))
    data["quant"]["activation"]["bits"] = act_bits
    if method == "efficientdm":
        data["method"] = {"kind": "efficientdm", "lora_rank": rank, "lora_alpha": float(rank)}
    elif method == "qdm":
        data["method"] = {"kind": "qdm"}
    elif method == "svdquant":
        data["method"] = {"kind": "svdquant", "calibration_batches": 4}
        data["quant"]["kept_lowrank"] = {"rank": rank}
        data["train"]["max_steps"] = 0
    return RunConfig.model_validate(data)


def deploy_bytes(model: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def real_model_memory(rank: int) -> tuple[int, int]:
    """Deploy-state bytes of Wan2.1-T2V-1.3B (meta device, bf16 high-precision rest): plain W4A4, + kept branch."""
    from qvgen import quant
    from qvgen.models import get_family
    from qvgen.models.real_models import build_real_on_meta

    sizes = []
    for kept in (None, quant.KeptLowRank(rank=rank)):
        model = build_real_on_meta("wan2.1-t2v-1.3b").to(torch.bfloat16)
        cfg = quant.QuantConfig(kept_lowrank=kept)
        fam = get_family("wan")
        layers = quant.prepare_(
            model, cfg, layer_roles=fam.layer_roles, keep_high_precision=fam.keep_high_precision
        )
        for layer in layers.values():
            layer.weight_quantizer.initialized = True  # shapes only: the meta tensors hold no values
        for name, layer in layers.items():
            deploy = quant.DeployLinear(
                layer.in_features, layer.out_features, layer.bias is not None, weight_bits=4,
                act_quantizer=layer.act_quantizer, role=layer.role, device="meta",
            )  # fmt: skip
            if layer.kept is not None:
                deploy.kept = quant.SmoothLowRank(
                    layer.in_features, layer.out_features, layer.kept.rank, device="meta"
                )
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, deploy)
        sizes.append(deploy_bytes(model))
    return sizes[0], sizes[1]


def models_with_roles() -> int:
    """How many real-model configs (meta device) have a non-`other` role for every Linear."""
    from torch import nn

    from qvgen.models import REAL_MODELS, build_real_on_meta, roles_of
    from qvgen.quant import LayerRole

    ok = 0
    for name, entry in REAL_MODELS.items():
        model = build_real_on_meta(name)
        roles = roles_of(model, entry.family)
        n_linear = sum(isinstance(m, nn.Linear) for m in model.modules())
        ok += int(len(roles) == n_linear and LayerRole.other not in roles.values())
    return ok


def reference_import_check(teacher: Path, out: Path) -> bool:
    """Write the teacher in the reference's checkpoint format, import it, and compare 4 layers' outputs
    with an independent float64 re-implementation of the reference's QuantLinear forward."""
    import torch.nn.functional as F
    from safetensors.torch import load_file

    from qvgen import quant
    from qvgen.models import get_family, load_student
    from qvgen.train.reference import import_reference
    from qvgen.train.testing import write_reference_checkpoint

    transformer = get_family("wan").load_transformer(teacher, dtype="float32")
    ref_dir = write_reference_checkpoint(transformer, out / "reference" / "transformer", seed=1)
    student = load_student(import_reference(ref_dir, teacher, out / "reference" / "student")).double()
    ref = {k: v.double() for k, v in load_file(str(ref_dir / "diffusion_pytorch_model.safetensors")).items()}
    quant.set_timesteps_(student, torch.tensor([437.0]))
    ok = True
    for name, layer in list(quant.quantized_layers(student).items())[:4]:
        x = torch.randn(
            1, 8, layer.in_features, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
        )
        s, z = ref[f"{name}.wquantizer.scale"], ref[f"{name}.wquantizer.zero_point"]
        wq = s * (torch.clamp(torch.round(ref[f"{name}.w"] / s + z), 0, 15) - z)
        g = 437 % ref[f"{name}.aquantizer.lower"].shape[0]
        lo = torch.sigmoid(ref[f"{name}.aquantizer.lower"][g]) * x.amin(-1, keepdim=True) * 0.95
        hi = torch.sigmoid(ref[f"{name}.aquantizer.upper"][g]) * x.amax(-1, keepdim=True) * 0.95
        sc = ((hi - lo) / 15).clamp_min(1e-9)
        zp = (-torch.round(lo / sc)).clamp(0, 15)
        expected = F.linear(
            sc * (torch.clamp(torch.round(x / sc) + zp, 0, 15) - zp), wq, ref.get(f"{name}.b")
        )
        with torch.no_grad():
            ok = ok and bool(torch.allclose(layer(x), expected, rtol=1e-6, atol=1e-6))
    return ok


def forward_seconds(deploy_dir: Path, teacher: Path, repeats: int = 5) -> float:
    """Median process-CPU seconds of one transformer forward of a deploy student on a fixed batch."""
    from qvgen import quant
    from qvgen.models import get_family

    fam = get_family("wan")
    model = quant.load_quantized(fam.load_transformer(teacher), deploy_dir).eval()
    g = torch.Generator().manual_seed(0)
    cfg = model.config
    x = torch.randn(2, cfg.in_channels, 3, 8, 8, generator=g)
    text = torch.randn(2, 16, cfg.text_dim, generator=g)
    t = torch.tensor([500.0, 500.0])
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            start = time.process_time()
            model(hidden_states=x, timestep=t, encoder_hidden_states=text, return_dict=False)
            times.append(time.process_time() - start)
    return sorted(times)[len(times) // 2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/baselines"))
    parser.add_argument("--teacher", type=Path, default=DEFAULT_TEACHER_DIR)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--clips", type=int, default=512)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--tiny-rank", type=int, default=8, help="SVDQuant / LoRA rank on the tiny model")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--reinsert", action="store_true",
        help="only put the last run's subsection (OUT/subsection.md) back into RESULTS.md (after a paper_table rewrite)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.reinsert:
        write_subsection((args.out / "subsection.md").read_text())
        return 0
    start = time.perf_counter()
    torch.set_num_threads(1)

    plain, kept = real_model_memory(32)
    mem_ratio = kept / plain
    print(f"Wan2.1-T2V-1.3B deploy bytes: plain W4A4 {plain / 2**20:.1f} MiB, SVDQuant r=32 {kept / 2**20:.1f} MiB, "
          f"ratio {mem_ratio:.4f}", flush=True)  # fmt: skip

    teacher = args.teacher
    n_roles = models_with_roles()
    import_ok = reference_import_check(teacher, args.out)
    print(f"models_with_roles={n_roles} reference_import_ok={str(import_ok).lower()}", flush=True)
    shape = teacher_clip_shape(teacher)
    style = teacher_world_style(teacher)
    prompts = [
        c.caption for c in held_out_clips(args.prompts, shape, two_object=args.prompts // 4, style=style)
    ]
    sampling_steps, guidance = teacher_sampling(teacher)
    shards = build_shards(teacher, args.out, args.clips)
    budget = TrainBudget(steps=args.steps)
    lsq = run_config("lsq", 4, teacher, shards, budget, args.out / "runs" / "lsq-w4a4", progress=False)
    plan = {
        "LSQ QAT (reference row)": (lsq, "W4A4"),
        "EfficientDM (QALoRA)": (method_config(lsq, "efficientdm", 4, args.tiny_rank), "W4A4"),
        "Q-DM (TaQ groups + NeM)": (method_config(lsq, "qdm", 4, args.tiny_rank), "W4A4"),
        "SVDQuant (PTQ, branch kept)": (method_config(lsq, "svdquant", 6, args.tiny_rank), "W4A6"),
        "SVDQuant (PTQ, branch kept) ": (method_config(lsq, "svdquant", 4, args.tiny_rank), "W4A4"),
    }
    deploy: dict[str, Path] = {}
    for name, (cfg, bits) in plan.items():
        t0 = time.perf_counter()
        deploy[name] = train_variant(cfg).deploy_dir
        print(f"{name.strip()} {bits}: trained/exported in {time.perf_counter() - t0:.0f} s", flush=True)
    evaluation = evaluate(
        teacher, list(deploy.items()), prompts, args.out / "report", seed=0, sampling_steps=sampling_steps,
        guidance_scale=guidance, clip_shape=shape, progress=False,
    )  # fmt: skip
    rows = {row.name: row for row in evaluation.rows}
    tiny_plain = sum(p.stat().st_size for p in deploy["LSQ QAT (reference row)"].iterdir())
    tiny_kept = sum(p.stat().st_size for p in deploy["SVDQuant (PTQ, branch kept) "].iterdir())
    t_plain = forward_seconds(deploy["LSQ QAT (reference row)"], teacher)
    t_kept = forward_seconds(deploy["SVDQuant (PTQ, branch kept) "], teacher)

    lines = [
        "| model | bits | adherence | colour | shape | motion | PSNR vs teacher (dB) | latent MSE |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    teacher_row = evaluation.rows[0]
    lines.append(f"| full precision (teacher) | FP32 | {teacher_row.adherence:.3f} | {teacher_row.colour:.3f} | "
                 f"{teacher_row.shape:.3f} | {teacher_row.motion:.3f} | — | — |")  # fmt: skip
    for name, (_, bits) in plan.items():
        r = rows[name]
        psnr = f"{r.psnr_db:.2f}" if r.psnr_db is not None else "—"
        mse = f"{r.latent_mse:.4f}" if r.latent_mse is not None else "—"
        lines.append(f"| {name.strip()} | {bits} | {r.adherence:.3f} | {r.colour:.3f} | {r.shape:.3f} | "
                     f"{r.motion:.3f} | {psnr} | {mse} |")  # fmt: skip
    key = (
        f"baselines efficientdm_w4a4_adherence={rows['EfficientDM (QALoRA)'].adherence:.3f} "
        f"qdm_w4a4_adherence={rows['Q-DM (TaQ groups + NeM)'].adherence:.3f} "
        f"svdquant_w4a6_adherence={rows['SVDQuant (PTQ, branch kept)'].adherence:.3f} "
        f"svdquant_w4a4_adherence={rows['SVDQuant (PTQ, branch kept) '].adherence:.3f} "
        f"svdquant_kept_branch_mem_ratio={mem_ratio:.4f} models_with_roles={n_roles} "
        f"reference_import_ok={str(import_ok).lower()}"
    )
    wall = (time.perf_counter() - start) / 60
    text = "\n".join(
        [
            "",
            SUBSECTION,
            "",
            f"Command: `python benchmarks/baselines.py --steps {args.steps} --clips {args.clips} --prompts {args.prompts}` "
            f"(wall time {wall:.1f} min, shared 2-core CPU, 1 thread). Teacher: `{teacher}`. Budget of the QAT rows: "
            f"{args.steps} steps, batch 8, the demo's learning rates (EfficientDM's LoRA at the `other` lr), "
            f"{args.clips} clips; LoRA / SVDQuant rank {args.tiny_rank} on the tiny model. {len(prompts)} held-out prompts, "
            f"one video each; students are their deploy exports.",
            "",
            *lines,
            "",
            f"Real-model configs whose every Linear has a role (qvgen.models.REAL_MODELS, meta device): {n_roles} "
            "(Wan2.1-T2V-1.3B, Wan2.1-T2V-14B, CogVideoX-2B, CogVideoX-5B, CogVideoX1.5-5B). Reference import: the "
            "teacher written in the reference's checkpoint format (`qvgen.train.testing.write_reference_checkpoint`), "
            f"imported, and 4 layers compared with a float64 re-implementation of the reference forward: {import_ok}.",
            "",
            f"Memory (deploy state dict, real Wan2.1-T2V-1.3B shapes on the meta device, bf16 rest): plain W4A4 "
            f"{plain / 2**20:.1f} MiB, SVDQuant with the rank-32 16-bit branch kept {kept / 2**20:.1f} MiB "
            f"(ratio {mem_ratio:.4f}); tiny exports on disk {tiny_plain} vs {tiny_kept} bytes "
            f"(ratio {tiny_kept / tiny_plain:.3f}). Time: one tiny deploy forward (batch 2) {t_plain * 1e3:.1f} ms plain "
            f"vs {t_kept * 1e3:.1f} ms with the branch (CPU time, ratio {t_kept / t_plain:.2f}; noisy on the shared box).",
            "",
            key,
        ]
    )
    print(text)
    (args.out / "subsection.md").write_text(text)
    if not args.no_write:
        write_subsection(text)
    return 0


def write_subsection(text: str) -> None:
    """Replace (or append) the `### baselines` block at the end of the `## paper_table` section."""
    content = RESULTS.read_text()
    if SECTION not in content:
        raise SystemExit(f"{RESULTS}: no {SECTION} section to add the baselines to")
    head, _, rest = content.partition(SECTION)
    nxt = rest.find("\n## ")
    section, tail = (rest, "") if nxt < 0 else (rest[:nxt], rest[nxt:])
    if SUBSECTION in section:
        section = section[: section.index("\n" + SUBSECTION)]
    RESULTS.write_text(head + SECTION + section.rstrip("\n") + "\n\n" + text.strip("\n") + "\n" + tail)


if __name__ == "__main__":
    sys.exit(main())
