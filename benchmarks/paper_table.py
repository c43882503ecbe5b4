"""The paper's main table in miniature, on the embedded tiny Wan teacher (qvgen-demo's flow helpers).

Rows: full precision (the teacher), RTN (min-max PTQ, no training), LSQ QAT (LSQ+ weights and learned
activation clipping, no Φ) and QVGen (the same plus Φ decayed to rank 0), at W4A4 and W3A3. LSQ and QVGen
get the same training budget: steps, learning rates, batch size, seed and latent shards (procedural world
4000, encoded by the teacher's own VAE + UMT5). Every student is evaluated as its real low-bit deploy
export on a fixed held-out prompt set (captions of procedural world 5000, video k seeded `seed + k`):

- prompt adherence colour / shape / motion (`qvgen.eval.score_videos`, weight-free) and their mean;
- temporal flickering (`qvgen.eval.temporal_flickering`, higher = steadier);
- PSNR of the decoded frames and MSE of the final latents against the teacher at the same seed;
- the denoiser output error along the sampling trajectory: relative MSE of each transformer call against
  the teacher's call at the same step, averaged over steps and videos.

Writes the table into the `## paper_table` section of benchmarks/RESULTS.md (unless --no-write) and
prints it; last line:
`paper_table fp_adherence=<x> qvgen_w4a4_adherence=<x> lsq_w4a4_adherence=<x> rtn_w4a4_adherence=<x>
qvgen_w3a3_adherence=<x> lsq_w3a3_adherence=<x> qvgen_w4a4_psnr=<x> lsq_w4a4_psnr=<x>` (one line).
Usage: python benchmarks/paper_table.py [--quick] [--out DIR] [--steps N] [--prompts N]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

from qvgen.demo.flow import (
    Row,
    TrainBudget,
    build_shards,
    decay_period,
    evaluate,
    format_table,
    held_out_prompts,
    run_config,
    teacher_clip_shape,
    teacher_sampling,
    train_variant,
)
from qvgen.demo.teacher import DEFAULT_TEACHER_DIR

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## paper_table"
SETTINGS = {  # steps, training clips, held-out prompts
    "quick": (800, 512, 16),
    "full": (2000, 1024, 28),
}
METHODS = (("rtn", 4), ("lsq", 4), ("qvgen", 4), ("rtn", 3), ("lsq", 3), ("qvgen", 3))
LABELS = {"rtn": "RTN (PTQ)", "lsq": "LSQ QAT (no Φ)", "qvgen": "QVGen (Φ + rank decay)"}


def _num(x: float | None, fmt: str) -> str:
    return "—" if x is None else format(x, fmt)


def markdown_table(rows: list[Row]) -> str:
    head = (
        "| model | bits | colour | shape | motion | adherence | flickering | PSNR vs teacher (dB) "
        "| latent MSE | denoiser rel. MSE |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    lines = [head]
    for r in rows:
        method, _, bits = r.name.partition("-")
        label = "full precision (teacher)" if r.name == "teacher" else LABELS[method]
        lines.append(
            f"| {label} | {bits.upper() or 'FP32'} | {r.colour:.3f} | {r.shape:.3f} | {r.motion:.3f} "
            f"| {r.adherence:.3f} | {r.flickering:.2f} | {_num(r.psnr_db, '.2f')} | {_num(r.latent_mse, '.4f')} "
            f"| {_num(r.step_relative_mse, '.4f')} |"
        )
    return "\n".join(lines)


def last_line(rows: list[Row]) -> str:
    by = {r.name: r for r in rows}
    keys = ("teacher", "qvgen-w4a4", "lsq-w4a4", "rtn-w4a4", "qvgen-w3a3", "lsq-w3a3")
    names = ("fp", "qvgen_w4a4", "lsq_w4a4", "rtn_w4a4", "qvgen_w3a3", "lsq_w3a3")
    parts = [f"{n}_adherence={by[k].adherence:.3f}" for n, k in zip(names, keys, strict=True)]
    parts += [
        f"qvgen_w4a4_psnr={by['qvgen-w4a4'].psnr_db:.2f}",
        f"lsq_w4a4_psnr={by['lsq-w4a4'].psnr_db:.2f}",
    ]
    return "paper_table " + " ".join(parts)


def write_section(body: str) -> None:
    """Replace (or append) the `## paper_table` section of RESULTS.md, leaving the others alone."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    section = f"{SECTION}\n\n{body.strip()}\n\n"
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    tmp = RESULTS.with_suffix(".md.tmp")
    tmp.write_text(text.rstrip() + "\n")
    os.replace(tmp, RESULTS)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="800 steps, 512 clips, 16 prompts (< 20 min)")
    parser.add_argument("--out", type=Path, default=Path("outputs/paper_table"), help="work folder")
    parser.add_argument("--steps", type=int, help="training steps of every QAT method")
    parser.add_argument("--prompts", type=int, help="held-out prompts")
    parser.add_argument("--lr", type=float, default=TrainBudget().lr, help="lr of latent weights, Φ, other")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--high-precision", nargs="*", default=[], metavar="ROLE",
        help="qvgen.quant layer roles left unquantized in every student (default: none)",
    )  # fmt: skip
    parser.add_argument("--no-write", action="store_true", help="do not touch benchmarks/RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    steps, clips, n_prompts = SETTINGS["quick" if args.quick else "full"]
    steps = args.steps or steps
    n_prompts = args.prompts or n_prompts
    # A snapshot of the teacher: every method and the evaluation see the same weights even if the embedded
    # teacher is replaced while this runs.
    teacher = args.out / "teacher"
    if teacher.exists():
        shutil.rmtree(teacher)
    shutil.copytree(DEFAULT_TEACHER_DIR, teacher)
    teacher_hash = hashlib.sha256(
        b"".join(p.read_bytes() for p in sorted(teacher.rglob("*.safetensors")))
    ).hexdigest()[:12]
    budget = TrainBudget(steps=steps, lr=args.lr, seed=args.seed)
    prompts = held_out_prompts(n_prompts, teacher_clip_shape(teacher))
    sampling_steps, guidance = teacher_sampling(teacher)  # the teacher's model-card setting
    print(f"paper_table: {steps} steps, {clips} clips, {n_prompts} prompts, budget {budget}", flush=True)

    shards = build_shards(teacher, args.out, clips)
    print(f"shards ready ({time.perf_counter() - start:.0f} s)", flush=True)
    variants = []
    for method, bits in METHODS:
        name = f"{method}-w{bits}a{bits}"
        t = time.perf_counter()
        cfg = run_config(
            method, bits, teacher, shards, budget, args.out / "runs" / name, progress=False,
            high_precision_roles=args.high_precision,
        )  # fmt: skip
        deploy_dir, rank = train_variant(cfg)
        print(
            f"{name}: trained {cfg.train.max_steps} steps in {time.perf_counter() - t:.0f} s, Φ rank {rank}"
        )
        variants.append((name, deploy_dir))
    rows, html, _ = evaluate(
        teacher,
        variants,
        prompts,
        args.out / "report",
        seed=args.seed,
        sampling_steps=sampling_steps,
        guidance_scale=guidance,
        progress=False,
    )
    rows = list(rows)
    wall = time.perf_counter() - start
    print(format_table(rows))
    print(f"report: {html.resolve()} ({wall / 60:.1f} min)")
    line = last_line(rows)
    if not args.no_write:
        period = decay_period(budget.initial_rank, steps)
        hp_text = (
            f"Layer roles left in high precision: {', '.join(args.high_precision)}."
            if args.high_precision
            else "Every linear of the transformer is quantized (no layer stays high precision)."
        )
        command = "python benchmarks/paper_table.py" + (" --quick" if args.quick else "")
        body = f"""Command: `{command}` (qvgen-demo flow helpers; wall time {wall / 60:.1f} min).
Machine: the shared 2-core CPU box, no GPU, 1 intra-op thread ({platform.processor() or platform.machine()},
torch {torch.__version__}). Teacher: the embedded tiny Wan (`qvgen/demo/assets/tiny_wan_teacher`).
Budget of every QAT method: {steps} steps, batch {budget.batch_size}, AdamW lr {budget.lr:g} (latent weights, Φ,
other), weight-qparam lr {budget.qparam_lr:g}, activation-clip lr {budget.act_clip_lr:g}, cosine schedule with 10 % warm-up, caption
dropout 0.1, {clips} procedural clips (world 4000) encoded by the teacher's VAE + UMT5, seed {args.seed}. QVGen:
Φ from SVD(W − Q(W)) at r0 = {budget.initial_rank}, halved every {period} steps, gone before the last step.
{hp_text} Evaluation: {n_prompts}
held-out prompts (captions of world 5000), one video each (seed {args.seed} + k), {sampling_steps} UniPC steps,
CFG {guidance:g} (the teacher's model-card setting), 64×64×9; students run as their real low-bit deploy
exports. Teacher weights sha256 {teacher_hash} (all its safetensors, in path order).

{markdown_table(rows)}

`{line}`
"""
        write_section(body)
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
