"""The paper's baselines on the embedded tiny Wan teacher, and what keeping SVDQuant's branch costs.

Rows (same budget and data as paper_table's LSQ row, measured in the same run): LSQ QAT (the reference
row), EfficientDM-style QALoRA (W4A4), Q-DM-style QAT with NeM (W4A4), SVDQuant-style PTQ with its 16-bit
branch kept (W4A6, W4A4). Every student runs as its real low-bit deploy export on held-out prompts and is
scored with `qvgen.eval.AdherenceScorer` (mean of colour / shape / motion), PSNR and latent MSE vs the
teacher (via `qvgen.demo.evaluate`, the paper table's evaluation).

Statistics are paper_table's own (imported from `benchmarks/paper_table.py`, not re-implemented): the same
settings (`--quick` or the full table: held-out prompts × sampling seeds, training seeds), every method
trained once per training seed (SVDQuant calibrated once per seed), each cell the mean ± 95 % t interval
over videos of the per-video values averaged over the training seeds (`paper_table.make_cell`), the
per-seed means beside, and every baseline − LSQ as a paired difference over the same videos.

Memory: bytes of the deploy state dict of the real Wan2.1-T2V-1.3B built on the meta device (no weights),
SVDQuant rank 32 vs plain W4A4 (`kept_branch_mem_ratio`), and the same for the tiny runs' exported files.
Time: CPU seconds of the tiny deploy students' forward, SVDQuant vs plain W4A4, on one batch.

Appends a `### baselines` subsection to the `## paper_table` section of benchmarks/RESULTS.md (unless
--no-write); its last line is
`baselines efficientdm_w4a4_adherence=… qdm_w4a4_adherence=… svdquant_w4a6_adherence=… …`.
Usage: python benchmarks/baselines.py [--quick] [--steps N] [--clips N] [--prompts N] [--sampling-seeds N]
[--train-seeds N] [--out DIR] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch
from paper_table import (  # benchmarks/ is sys.path[0] as a script
    Cell,
    add_setting_arguments,
    cell_table,
    make_cell,
    resolve_setting,
    teacher_snapshot,
    train_cached,
)
from paper_table import _fmt as fmt_ci

from qvgen.core import atomic_write_text
from qvgen.demo import (
    TrainBudget,
    build_shards,
    evaluate,
    held_out_clips,
    run_config,
    teacher_clip_shape,
    teacher_sampling,
    teacher_world_style,
)
from qvgen.eval import paired_diff_ci
from qvgen.train import RunConfig

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## paper_table"
SUBSECTION = "### baselines"


def method_config(base: RunConfig, method: str, act_bits: int, rank: int, name: str) -> RunConfig:
    """The LSQ run config of the demo turned into a baseline method (validated again), run in `name`."""
    data = base.model_dump(mode="json")
    data["output_dir"] = str(Path(data["output_dir"]).with_name(name))
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


def models_with_roles() -> list[str]:
    """The real-model configs (meta device) whose every Linear has a non-`other` role."""
    from torch import nn

    from qvgen.models import REAL_MODELS, build_real_on_meta, roles_of
    from qvgen.quant import LayerRole

    ok = []
    for name, entry in REAL_MODELS.items():
        model = build_real_on_meta(name)
        roles = roles_of(model, entry.family)
        n_linear = sum(isinstance(m, nn.Linear) for m in model.modules())
        if len(roles) == n_linear and LayerRole.other not in roles.values():
            ok.append(name)
    return ok


def static_checks_sentence(with_roles: list[str], import_ok: bool) -> str:
    """The subsection's sentence on the role coverage and the reference import (no training involved)."""
    return (
        f"Real-model configs whose every Linear has a role (qvgen.models.REAL_MODELS, meta device): "
        f"{len(with_roles)} ({', '.join(with_roles)}). Reference import: the teacher written in the reference's "
        "checkpoint format (`qvgen.train.testing.write_reference_checkpoint`), imported, and 4 layers compared "
        f"with a float64 re-implementation of the reference forward: {import_ok}."
    )


STATIC_LINE = re.compile(r"^Real-model configs whose every Linear has a role .*$", re.MULTILINE)
STATIC_KEYS = re.compile(r"models_with_roles=\d+ reference_import_ok=(true|false)")


def recount(text: str, with_roles: list[str], import_ok: bool) -> str:
    """A saved subsection with its role and import checks redone (after a model was added, say); the
    trained rows are left as they were measured."""
    if not STATIC_LINE.search(text) or not STATIC_KEYS.search(text):
        raise SystemExit("the saved subsection has no role/import sentence or key values to recount")
    text = STATIC_LINE.sub(lambda _: static_checks_sentence(with_roles, import_ok), text)
    keys = f"models_with_roles={len(with_roles)} reference_import_ok={str(import_ok).lower()}"
    return STATIC_KEYS.sub(keys, text)


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


ROWS: dict[str, tuple[str, str, int]] = {
    "lsq-w4a4": ("LSQ QAT (reference row)", "lsq", 4),
    "efficientdm-w4a4": ("EfficientDM (QALoRA)", "efficientdm", 4),
    "qdm-w4a4": ("Q-DM (TaQ groups + NeM)", "qdm", 4),
    "svdquant-w4a6": ("SVDQuant (PTQ, branch kept)", "svdquant", 6),
    "svdquant-w4a4": ("SVDQuant (PTQ, branch kept)", "svdquant", 4),
}
"""Row key → (label, method, activation bits); the LSQ row is the reference of the paired differences."""
REFERENCE = "lsq-w4a4"


def tables(fp: Cell, cells: dict[str, Cell]) -> tuple[str, str]:
    """The cell table (paper_table's columns) and the baseline − LSQ paired differences."""
    table = cell_table(fp, cells.values())
    ref = cells[REFERENCE]
    diffs = [
        "| model | bits | adherence − LSQ | PSNR − LSQ (dB) | latent MSE − LSQ |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for key, cell in cells.items():
        if key == REFERENCE:
            continue
        parts = [
            fmt_ci(paired_diff_ci(cell.videos[m], ref.videos[m]), digits)
            for m, digits in (("overall", 3), ("psnr_db", 2), ("latent_mse", 4))
        ]
        diffs.append(f"| {cell.label} | {cell.bits} | " + " | ".join(parts) + " |")
    return table, "\n".join(diffs)


def key_line(cells: dict[str, Cell], mem_ratio: float, n_roles: int, import_ok: bool) -> str:
    """The section's last line: each baseline cell's mean adherence and the checks."""

    def adherence(key: str) -> str:
        return f"{cells[key].ci('overall').mean:.3f}"

    return (
        f"baselines efficientdm_w4a4_adherence={adherence('efficientdm-w4a4')} "
        f"qdm_w4a4_adherence={adherence('qdm-w4a4')} svdquant_w4a6_adherence={adherence('svdquant-w4a6')} "
        f"svdquant_w4a4_adherence={adherence('svdquant-w4a4')} svdquant_kept_branch_mem_ratio={mem_ratio:.4f} "
        f"models_with_roles={n_roles} reference_import_ok={str(import_ok).lower()}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_setting_arguments(parser, Path("outputs/baselines"))
    parser.add_argument("--train-seeds", type=int, help="training (SVDQuant: calibration) seeds of every row")
    parser.add_argument("--seed", type=int, default=0, help="first training seed and the sampling seed")
    parser.add_argument("--tiny-rank", type=int, default=8, help="SVDQuant / LoRA rank on the tiny model")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--reinsert", action="store_true",
        help="only put the last run's subsection (OUT/subsection.md) back into RESULTS.md (after a paper_table rewrite)",
    )  # fmt: skip
    parser.add_argument(
        "--recount", action="store_true",
        help="redo only the role-coverage and reference-import checks of OUT/subsection.md (no training) and reinsert it",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.reinsert:
        write_subsection((args.out / "subsection.md").read_text())
        return 0
    torch.set_num_threads(1)
    if args.recount:
        teacher, _ = teacher_snapshot(args.teacher, args.out / "snapshot")
        with_roles, import_ok = models_with_roles(), reference_import_check(teacher, args.out)
        text = recount((args.out / "subsection.md").read_text(), with_roles, import_ok)
        print(static_checks_sentence(with_roles, import_ok))
        atomic_write_text(args.out / "subsection.md", text)
        if not args.no_write:
            write_subsection(text)
        return 0
    start = time.perf_counter()
    run = resolve_setting(args)
    steps, clips, n_prompts, two_object = run.steps, run.clips, run.prompts, run.two_object
    sampling_seeds = run.sampling_seeds
    seeds = [args.seed + k for k in range(run.train_seeds)]

    plain, kept = real_model_memory(32)
    mem_ratio = kept / plain
    print(f"Wan2.1-T2V-1.3B deploy bytes: plain W4A4 {plain / 2**20:.1f} MiB, SVDQuant r=32 {kept / 2**20:.1f} MiB, "
          f"ratio {mem_ratio:.4f}", flush=True)  # fmt: skip

    # a copy of the teacher: the same weights for every row even if it is replaced meanwhile (as paper_table)
    teacher, teacher_hash = teacher_snapshot(args.teacher, args.out / "snapshot")
    with_roles = models_with_roles()
    n_roles = len(with_roles)
    import_ok = reference_import_check(teacher, args.out)
    print(f"models_with_roles={n_roles} reference_import_ok={str(import_ok).lower()}", flush=True)
    shape = teacher_clip_shape(teacher)
    style = teacher_world_style(teacher)
    prompts = [c.caption for c in held_out_clips(n_prompts, shape, two_object=two_object, style=style)]
    sampling_steps, guidance = teacher_sampling(teacher)
    print(f"baselines: {steps} steps, {clips} clips, {n_prompts} prompts ({two_object} two-object) × "
          f"{sampling_seeds} seeds, training seeds {seeds}, teacher {teacher_hash}", flush=True)  # fmt: skip
    shards = build_shards(teacher, args.out, clips)
    deploy: dict[str, Path] = {}
    for seed in seeds:
        budget = TrainBudget(steps=steps, seed=seed)
        lsq = run_config(
            "lsq", 4, teacher, shards, budget, args.out / "runs" / f"lsq-w4a4-s{seed}", progress=False
        )
        for key, (_label, method, bits) in ROWS.items():
            name = f"{key}-s{seed}"
            cfg = lsq if key == REFERENCE else method_config(lsq, method, bits, args.tiny_rank, name)
            # a finished run of the same config is reused: a long run that was stopped resumes where it was
            record = train_cached(cfg, args.out / "runs" / f"{name}.trained.json", teacher_hash=teacher_hash)
            deploy[name] = Path(record["deploy_dir"])
    evaluation = evaluate(
        teacher, list(deploy.items()), prompts, args.out / "report", seed=args.seed, sampling_steps=sampling_steps,
        guidance_scale=guidance, clip_shape=shape, videos_per_prompt=sampling_seeds, progress=False,
    )  # fmt: skip
    report = evaluation.report
    by_name = {v.name: v for v in report.variants}
    fp = make_cell("full precision (teacher)", "FP32", [report.teacher])
    cells = {
        key: make_cell(label, f"W4A{bits}", [by_name[f"{key}-s{seed}"] for seed in seeds])
        for key, (label, _, bits) in ROWS.items()
    }
    first = seeds[0]
    tiny_plain = sum(p.stat().st_size for p in deploy[f"lsq-w4a4-s{first}"].iterdir())
    tiny_kept = sum(p.stat().st_size for p in deploy[f"svdquant-w4a4-s{first}"].iterdir())
    t_plain = forward_seconds(deploy[f"lsq-w4a4-s{first}"], teacher)
    t_kept = forward_seconds(deploy[f"svdquant-w4a4-s{first}"], teacher)

    table, diff_table = tables(fp, cells)
    key = key_line(cells, mem_ratio, n_roles, import_ok)
    wall = (time.perf_counter() - start) / 60
    command = "python " + " ".join(["benchmarks/baselines.py", *(sys.argv[1:] if argv is None else argv)])
    text = "\n".join(
        [
            "",
            SUBSECTION,
            "",
            f"Command: `{command}` (wall time {wall:.1f} min, shared 2-core CPU, 1 thread). Teacher: `{args.teacher}`, "
            f"weights sha256 {teacher_hash}. Budget of the QAT rows: {steps} steps, batch {TrainBudget().batch_size}, the demo's learning rates "
            f"(EfficientDM's LoRA at the `other` lr), {clips} clips; LoRA / SVDQuant rank {args.tiny_rank} on the tiny "
            f"model; training (SVDQuant: calibration) seeds {seeds}. Evaluation as paper_table: {n_prompts} held-out "
            f"prompts (the last {two_object} two-object) × {sampling_seeds} sampling seeds = {n_prompts * sampling_seeds} "
            "videos per model, students as their deploy exports. Cells: mean ± 95 % t interval over videos (each "
            "video's value averaged over the training seeds first; `paper_table.make_cell`), per-seed adherence "
            "beside; unscorable videos count 0.",
            "",
            table,
            "",
            "Paired differences against the LSQ row over the same videos (mean ± 95 % t interval):",
            "",
            diff_table,
            "",
            static_checks_sentence(with_roles, import_ok),
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
    atomic_write_text(args.out / "subsection.md", text)
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
    atomic_write_text(
        RESULTS, head + SECTION + section.rstrip("\n") + "\n\n" + text.strip("\n") + "\n" + tail
    )


if __name__ == "__main__":
    sys.exit(main())
