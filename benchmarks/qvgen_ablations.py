"""Why QVGen is or is not ahead of LSQ on the embedded teacher: measured ablations of its knobs.

Every row is one student at W{bits}A{bits} trained with paper_table's budget and data (its `--quick` setting
unless told otherwise) and evaluated as its real low-bit deploy export on paper_table's held-out prompts, all
in one `qvgen.demo.evaluate` call (the teacher sampled once). The knobs, one at a time from the QVGen row:

- r0 relative to the layer width (the teacher's linears are 256 wide, FFN 512): 4, 8 (default), 32, 64;
- the rank-decay period: Φ gone by half of the steps (the second half trains the plain model) instead of
  just before the last step;
- Φ's learning rate: ×5 and ×¼ of the shared lr;
- which roles stay high precision: time embedding, modulation, text projection and output head kept in
  full precision for both LSQ and QVGen (the layers the paper's code quantizes but many PTQ works skip);
- the budget: both methods with twice the steps;
- the training seed: LSQ and QVGen once more with seed 1 (how far a row moves by chance alone);
- 8-bit activations (W{bits}A8): LSQ and QVGen where the weight error, the only error Φ is fitted to,
  dominates the student's error (benchmarks/error_budget.py: at W4A4 the activations carry about 80 %);
- the RTN baseline's definition (no training): paper_table's RTN (min-max weights, activations clipped at the
  QAT init's 0.9025 of each token's range) against plain per-token min-max activations (clip 0.9999).

Each row shows PSNR vs the teacher, the denoiser's relative MSE and adherence (mean ± 95 % t interval over
videos), and its paired difference against the LSQ row of the same setting over the same videos. The video
intervals do not include the training-seed spread; the seed-1 rows measure it.

Writes the `## qvgen_ablations` section of benchmarks/RESULTS.md (unless --no-write); its last line is
`qvgen_ablations base_minus_lsq_psnr=… best_variant=… best_minus_lsq_psnr=… seed_spread_psnr=… …`.
Usage: python benchmarks/qvgen_ablations.py [--quick] [--bits 4] [--out DIR] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch
from paper_table import (  # benchmarks/ is sys.path[0] as a script
    Cell,
    add_setting_arguments,
    loss_windows,
    make_cell,
    resolve_setting,
    teacher_snapshot,
    train_cached,
    write_section,
)
from paper_table import _fmt as fmt_ci

from qvgen.core import atomic_write_text
from qvgen.demo import (
    Method,
    TrainBudget,
    build_shards,
    decay_period,
    decay_steps,
    evaluate,
    held_out_clips,
    run_config,
    teacher_clip_shape,
    teacher_sampling,
    teacher_world_style,
)
from qvgen.eval import MeanCI, paired_diff_ci

SECTION = "## qvgen_ablations"
HIGH_PRECISION = ("time_embed", "modulation", "text_proj", "proj_out")
"""The roles the high-precision rows keep in full precision (embeddings and the output head)."""


@dataclass(frozen=True)
class Variant:
    """One ablation row: a method, what it changes in the budget, and the LSQ row it is compared with."""

    label: str
    method: Method
    budget: dict[str, float | int] = field(default_factory=dict)
    high_precision: tuple[str, ...] = ()
    reference: str = "lsq"
    act_bits: int | None = None
    """Activation bits when not the weights' (`--bits`)."""
    act_clip_init: float | None = None
    """The activation quantizer's initial clip factor when not its default."""


def variants(steps: int) -> dict[str, Variant]:
    """The rows, by name; each names the LSQ row it is paired with (the same steps, seed and roles)."""
    return {
        "lsq": Variant("LSQ (reference)", "lsq"),
        "qvgen": Variant("QVGen as in paper_table (r0 8, decay to the end)", "qvgen"),
        "qvgen-r4": Variant("r0 = 4", "qvgen", {"initial_rank": 4}),
        "qvgen-r32": Variant("r0 = 32", "qvgen", {"initial_rank": 32}),
        "qvgen-r64": Variant("r0 = 64 (¼ of the width)", "qvgen", {"initial_rank": 64}),
        "qvgen-half": Variant("Φ gone at half the steps", "qvgen", {"decay_fraction": 0.5}),
        "qvgen-philr5": Variant("Φ lr × 5", "qvgen", {"phi_lr": 5 * TrainBudget().lr}),
        "qvgen-philr025": Variant("Φ lr × ¼", "qvgen", {"phi_lr": TrainBudget().lr / 4}),
        "lsq-hp": Variant("LSQ, embeddings + head high precision", "lsq", high_precision=HIGH_PRECISION),
        "qvgen-hp": Variant(
            "QVGen, embeddings + head high precision",
            "qvgen",
            high_precision=HIGH_PRECISION,
            reference="lsq-hp",
        ),
        "lsq-2x": Variant(f"LSQ, {2 * steps} steps", "lsq", {"steps": 2 * steps}),
        "qvgen-2x": Variant(f"QVGen, {2 * steps} steps", "qvgen", {"steps": 2 * steps}, reference="lsq-2x"),
        "lsq-a8": Variant("LSQ, 8-bit activations", "lsq", act_bits=8),
        "qvgen-a8": Variant("QVGen, 8-bit activations", "qvgen", act_bits=8, reference="lsq-a8"),
        "qvgen-a8-half": Variant(
            "QVGen, 8-bit activations, Φ gone at half the steps",
            "qvgen",
            {"decay_fraction": 0.5},
            act_bits=8,
            reference="lsq-a8",
        ),
        "rtn": Variant("RTN as in paper_table (activations clipped at 0.9025)", "rtn"),
        "rtn-minmax": Variant("RTN, plain min-max activations", "rtn", act_clip_init=0.9999),
        "lsq-s1": Variant("LSQ, training seed 1", "lsq", {"seed": 1}),
        "qvgen-s1": Variant("QVGen, training seed 1", "qvgen", {"seed": 1}, reference="lsq-s1"),
    }


METRICS = (("psnr_db", 2), ("step_relative_mse", 4), ("overall", 3))


def tables(
    cells: dict[str, Cell], plan: dict[str, Variant], runs: dict[str, dict], teacher: Cell | None = None
) -> tuple[str, dict[str, MeanCI]]:
    """The markdown table and each non-LSQ row's paired PSNR difference against its LSQ row; with `teacher`,
    a first row for it and each row's adherence as a multiple of the teacher's."""
    ratio_head, ratio_rule = (" adherence ÷ teacher |", " ---: |") if teacher else ("", "")
    lines = [
        "| row | method | PSNR vs teacher (dB) | denoiser rel. MSE | adherence |" + ratio_head
        + " PSNR − its LSQ (dB) | denoiser − its LSQ | adherence − its LSQ | loss, last tenth |",
        "| --- | --- | ---: | ---: | ---: |" + ratio_rule + " ---: | ---: | ---: | ---: |",
    ]  # fmt: skip
    if teacher is not None:
        fp = fmt_ci(teacher.ci("overall"), 3)
        lines.append(f"| teacher | fp | — | — | {fp} | 1.000 | — | — | — | — |")
    psnr_diffs: dict[str, MeanCI] = {}
    for name, v in plan.items():
        cell = cells[name]
        values = [fmt_ci(cell.ci(m), d) for m, d in METRICS]
        if teacher is not None:
            values.append(f"{cell.ci('overall').mean / teacher.ci('overall').mean:.3f}")
        if v.method == "lsq":
            diffs = ["—"] * 3
        else:
            ref = cells[v.reference]
            d = {m: paired_diff_ci(cell.videos[m], ref.videos[m]) for m, _ in METRICS}
            psnr_diffs[name] = d["psnr_db"]
            diffs = [fmt_ci(d[m], digits) for m, digits in METRICS]
        losses = runs[name]["losses"]
        last = f"{loss_windows(losses)[-1]:.4f}" if losses else "— (not trained)"
        lines.append(f"| {v.label} | {v.method} | " + " | ".join(values + diffs) + f" | {last} |")
    return "\n".join(lines), psnr_diffs


def key_line(cells: dict[str, Cell], psnr: dict[str, MeanCI]) -> str:
    """The section's last line: the base gap, the best knob, and how much a seed alone moves a row."""
    knobs = [k for k in psnr if k.startswith("qvgen") and not k.endswith("-s1")]  # seed rows are chance
    best = max(knobs, key=lambda k: psnr[k].mean)
    spread = max(
        abs(cells["qvgen"].ci("psnr_db").mean - cells["qvgen-s1"].ci("psnr_db").mean),
        abs(cells["lsq"].ci("psnr_db").mean - cells["lsq-s1"].ci("psnr_db").mean),
    )
    ci = psnr["qvgen"].ci95
    return (
        f"qvgen_ablations base_minus_lsq_psnr={psnr['qvgen'].mean:+.2f} ci95_psnr={'nan' if ci is None else f'{ci:.2f}'} "
        f"best_variant={best} best_minus_lsq_psnr={psnr[best].mean:+.2f} "
        f"seed1_minus_lsq_psnr={psnr['qvgen-s1'].mean:+.2f} seed_spread_psnr={spread:.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_setting_arguments(parser, Path("outputs/qvgen_ablations"))
    parser.add_argument("--bits", type=int, default=4, choices=(3, 4), help="weight and activation bits")
    parser.add_argument("--only", nargs="+", metavar="ROW", help="train and show only these rows (with LSQ)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    args.train_seeds = 1  # the seed rows measure the training-seed spread
    start = time.perf_counter()
    torch.set_num_threads(1)
    run = resolve_setting(args)
    plan = variants(run.steps)
    if args.only:
        unknown = sorted(set(args.only) - set(plan))
        if unknown:
            parser.error(f"unknown rows {unknown}; rows are {list(plan)}")
        keep = set(args.only) | {plan[n].reference for n in args.only} | {"lsq"}
        plan = {n: v for n, v in plan.items() if n in keep}

    teacher, teacher_hash = teacher_snapshot(args.teacher, args.out / "snapshot")
    shape = teacher_clip_shape(teacher)
    style = teacher_world_style(teacher)
    prompts = [c.caption for c in held_out_clips(run.prompts, shape, two_object=run.two_object, style=style)]
    sampling_steps, guidance = teacher_sampling(teacher)
    print(f"qvgen_ablations: W{args.bits}A{args.bits}, {run.steps} steps, {run.clips} clips, {run.prompts} prompts "
          f"× {run.sampling_seeds} seeds, teacher {teacher_hash}", flush=True)  # fmt: skip
    shards = build_shards(teacher, args.out, run.clips)
    runs: dict[str, dict] = {}
    budgets = {name: TrainBudget.model_validate({"steps": run.steps, **v.budget}) for name, v in plan.items()}
    for name, v in plan.items():
        cfg = run_config(
            v.method, args.bits, teacher, shards, budgets[name], args.out / "runs" / name, progress=False,
            high_precision_roles=v.high_precision, act_bits=v.act_bits, act_clip_init=v.act_clip_init,
        )  # fmt: skip
        runs[name] = train_cached(cfg, args.out / "runs" / f"{name}.trained.json", teacher_hash=teacher_hash)
    t_eval = time.perf_counter()
    evaluation = evaluate(
        teacher, [(n, Path(r["deploy_dir"])) for n, r in runs.items()], prompts, args.out / "report",
        seed=0, sampling_steps=sampling_steps, guidance_scale=guidance, clip_shape=shape,
        videos_per_prompt=run.sampling_seeds, progress=False,
    )  # fmt: skip
    eval_s = time.perf_counter() - t_eval
    by_name = {v.name: v for v in evaluation.report.variants}
    bits = f"W{args.bits}A{args.bits}"
    cells = {
        name: make_cell(v.label, f"W{args.bits}A{v.act_bits or args.bits}", [by_name[name]])
        for name, v in plan.items()
    }
    teacher_cell = make_cell("teacher", "FP", [evaluation.report.teacher])
    table, psnr = tables(cells, plan, runs, teacher_cell)
    line = key_line(cells, psnr) if {"qvgen", "qvgen-s1", "lsq-s1"} <= set(plan) else ""
    wall = (time.perf_counter() - start) / 60
    train_s = sum(r.get("train_s", 0.0) for r in runs.values())
    periods = ", ".join(
        f"{n} {decay_period(b.initial_rank, decay_steps(b))}"
        for n, b in budgets.items()
        if plan[n].method == "qvgen"
    )
    command = "python " + " ".join(
        ["benchmarks/qvgen_ablations.py", *(sys.argv[1:] if argv is None else argv)]
    )
    body = f"""Command: `{command}` (wall time {wall:.1f} min: training {train_s / 60:.1f} min summed over the rows, reused ones included; sampling and scoring
{eval_s / 60:.1f} min; the shared 2-core CPU, 1 thread, no GPU). Teacher: `{args.teacher}`, weights sha256
{teacher_hash}. Every row: {bits}, paper_table's budget ({run.steps} steps unless the row says otherwise, batch
{TrainBudget().batch_size}, lr {TrainBudget().lr:g}, {run.clips} clips, training seed 0 unless the row says 1), evaluated as its
deploy export on {run.prompts} held-out prompts × {run.sampling_seeds} sampling seeds = {run.prompts * run.sampling_seeds} videos. Decay periods (steps): {periods}.
Cells: mean ± 95 % t interval over videos; differences are paired over the same videos against the LSQ row
of the same steps / seed / roles. These intervals leave out the training-seed spread; the seed-1 rows show it.

{table}

`{line}`
"""
    print(body)
    atomic_write_text(args.out / "section.md", body)
    if not args.no_write and line:
        write_section(body, SECTION)
    return 0


if __name__ == "__main__":
    sys.exit(main())
