"""The paper's main table in miniature, on the embedded tiny Wan teacher, with confidence intervals.

Rows: full precision (the teacher), RTN (min-max PTQ, no training), LSQ QAT (LSQ+ weights and learned
activation clipping, no Φ) and QVGen (the same plus Φ decayed to rank 0), at W4A4 and W3A3. LSQ and QVGen
get the same budget (steps, learning rates, batch, latent shards of procedural world 4000 encoded by the
teacher's own VAE + UMT5) and are trained with several training seeds. Every student is evaluated as its
real low-bit deploy export on held-out prompts (captions of procedural world 5000, one- and two-object),
each sampled with several seeds (video k of the plan seeded `seed + k`, the same for every model):

- prompt adherence colour / shape / motion and their mean (`qvgen.eval.AdherenceScorer` on the exact
  frames; unscorable videos count 0 and are counted);
- PSNR of the decoded frames and MSE of the final latents against the teacher at the same seed;
- denoiser error: relative MSE of every transformer call against the teacher's call at the same step.

Each cell is a mean over videos with its 95 % t interval; for trained methods a video's value is first
averaged over the training seeds (the spread of the per-seed means is shown beside). QVGen − LSQ is a
paired difference over the same videos. Before any training, the metric itself is checked on the
ground-truth clips of the held-out prompts and on negative controls (one attribute of the caption changed).

Writes the `## paper_table` section of benchmarks/RESULTS.md (unless --no-write); its last line is
`paper_table fp_colour=… … qvgen_minus_lsq_w3a3=… ci95_w3a3=…`.
Usage: python benchmarks/paper_table.py [--quick] [--out DIR] [--steps N] [--train-seeds N] …
The full table on a small machine: run `--bits 4 --out A` and `--bits 3 --out B` side by side (one core
each), then `--merge A B` (same setting options) writes the one table from their records.
`--decay-fraction 0.5` ends QVGen's rank decay at half the steps instead of the paper's last step (RESULTS.md,
`## qvgen_ablations` session 11: removing Φ in the last period costs a short budget a little).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch

from qvgen.core import atomic_write_text
from qvgen.data import SHAPE_SETS, ShapeName
from qvgen.demo import (
    DEFAULT_TEACHER_DIR,
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
    train_variant,
)
from qvgen.eval import (
    ATTRIBUTES,
    EvalReport,
    MeanCI,
    VariantReport,
    chance_levels,
    change_attribute,
    load_report,
    mean_ci,
    paired_diff_ci,
    score_values,
    score_videos,
    write_report,
)
from qvgen.train import RunConfig

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## paper_table"


@dataclass(frozen=True)
class Setting:
    steps: int
    clips: int
    prompts: int
    two_object: int
    sampling_seeds: int
    train_seeds: int


SETTINGS = {
    "quick": Setting(steps=300, clips=256, prompts=32, two_object=8, sampling_seeds=2, train_seeds=1),
    "full": Setting(steps=1500, clips=2048, prompts=64, two_object=16, sampling_seeds=2, train_seeds=3),
}
LABELS = {"rtn": "RTN (PTQ)", "lsq": "LSQ QAT (no Φ)", "qvgen": "QVGen (Φ + rank decay)"}
METRICS = ("overall", "colour", "shape", "motion", "psnr_db", "latent_mse", "step_relative_mse")


def _per_video(model: VariantReport) -> dict[str, list[float]]:
    """Every metric of every video of `model`, in plan order (adherence: unscorable counts 0)."""
    out: dict[str, list[float]] = {k: [] for k in METRICS}
    for s in model.samples:
        adherence = s.adherence
        if adherence is None:
            raise ValueError(f"{model.name}: sample {s.prompt!r} has no adherence score")
        for k, v in score_values(adherence).items():
            out[k].append(v)
        if s.fidelity is not None:
            steps = [e.relative_mse for e in s.fidelity.step_errors]
            out["psnr_db"].append(s.fidelity.psnr_db)
            out["latent_mse"].append(s.fidelity.latent_mse)
            out["step_relative_mse"].append(sum(steps) / len(steps) if steps else 0.0)
    return {k: v for k, v in out.items() if v}


@dataclass(frozen=True)
class Cell:
    """One (method, bits) cell: per-video values averaged over its training seeds, and per-seed means."""

    label: str
    bits: str
    videos: dict[str, list[float]]
    seed_means: dict[str, list[float]]
    unscorable: int
    num_videos: int

    def ci(self, key: str) -> MeanCI:
        return mean_ci(self.videos[key])


def make_cell(label: str, bits: str, models: list[VariantReport]) -> Cell:
    per_seed = [_per_video(m) for m in models]
    keys = per_seed[0].keys()
    videos = {k: [float(np.mean(col)) for col in zip(*(p[k] for p in per_seed), strict=True)] for k in keys}
    seed_means = {k: [float(np.mean(p[k])) for p in per_seed] for k in keys}
    unscorable = sum(s.adherence is not None and s.adherence.unscorable is not None
                     for m in models for s in m.samples)  # fmt: skip
    return Cell(label, bits, videos, seed_means, unscorable, sum(len(m.samples) for m in models))


def by_prompt(cell: Cell, sampling_seeds: int) -> Cell:
    """`cell` with each prompt's videos (its `sampling_seeds` consecutive ones, plan order) averaged into one
    value, so that intervals and paired differences count prompts, not videos."""
    videos = {
        k: [float(x) for x in np.asarray(v).reshape(-1, sampling_seeds).mean(1)]
        for k, v in cell.videos.items()
    }
    return Cell(cell.label, cell.bits, videos, cell.seed_means, cell.unscorable, cell.num_videos)


def _fmt(ci: MeanCI, digits: int = 3) -> str:
    return f"{ci.mean:.{digits}f}" + ("" if ci.ci95 is None else f" ± {ci.ci95:.{digits}f}")


def metric_check(
    clips: list, shapes: Sequence[ShapeName], rng_seed: int = 0
) -> tuple[dict[str, float], dict[str, float]]:
    """Adherence of the held-out ground-truth clips, and of the same clips against captions with one
    attribute changed (the changed clause's pass rate per attribute: must be <= chance + 0.1)."""
    frames = [((c.frames.permute(1, 2, 3, 0) + 1) / 2).numpy() for c in clips]
    truth = score_videos(frames, [c.caption for c in clips])
    negative = {}
    for attribute in ATTRIBUTES:
        rng = random.Random(rng_seed)
        changed = [change_attribute(c.caption, attribute, rng, shapes=shapes) for c in clips]
        report = score_videos(frames, changed)
        field = f"{attribute}_ok"
        negative[attribute] = float(np.mean([getattr(v.objects[0], field) if v.objects else False
                                             for v in report.videos]))  # fmt: skip
    return {"colour": truth.colour, "shape": truth.shape, "motion": truth.motion}, negative


def loss_windows(losses: list[float], windows: int = 10) -> list[float]:
    """Mean loss over `windows` equal consecutive spans of the run."""
    arr = np.asarray(losses, dtype=np.float64)
    return [float(w.mean()) for w in np.array_split(arr, windows) if w.size]


def mean_loss_windows(runs: Sequence[list[float]]) -> list[float] | None:
    """Each tenth's mean loss, averaged over the trained runs among `runs` (None when none was trained)."""
    trained = [loss_windows(losses) for losses in runs if losses]
    return [float(x) for x in np.mean(trained, axis=0)] if trained else None


def loss_row(label: str, windows: list[float]) -> str:
    """A markdown row of the loss-curve tables: the tenths, then the last tenth's change over the one before."""
    return (
        f"| {label} | "
        + " → ".join(f"{x:.4f}" for x in windows)
        + f" | {100 * (windows[-1] / windows[-2] - 1):+.1f} % |"
    )


LOSS_TABLE_HEAD = [
    "| run | loss, mean of each tenth of training (first → last) | last tenth vs the one before |",
    "| --- | --- | ---: |",
]


def curve(losses: list[float], points: int = 60) -> tuple[tuple[int, float], ...]:
    """A smoothed (window-mean) loss curve with about `points` points, for the HTML report."""
    arr = np.asarray(losses, dtype=np.float64)
    chunks = np.array_split(np.arange(arr.size), min(points, arr.size))
    return tuple((int(c[-1]) + 1, float(arr[c].mean())) for c in chunks if c.size)


def teacher_snapshot(source: Path, out: Path) -> tuple[Path, str]:
    """A copy of the teacher (the same weights for every method even if it is replaced meanwhile)."""
    teacher = out / "teacher"
    if teacher.exists():
        shutil.rmtree(teacher)
    shutil.copytree(source, teacher)
    return teacher, teacher_digest(teacher)


def train_all(args: argparse.Namespace, teacher: Path, shards: Path, budget: TrainBudget, seeds: list[int]):
    """Every student; a finished run with the same config is reused (its `trained.json`)."""
    plan = [("rtn", b, 0) for b in args.bits]
    plan += [(m, b, s) for b in args.bits for m in args.methods for s in seeds]
    runs = {}
    for method, bits, seed in plan:
        name = f"{method}-w{bits}a{bits}" + ("" if method == "rtn" else f"-s{seed}")
        cfg = run_config(
            method, bits, teacher, shards, budget.model_copy(update={"seed": seed}), args.out / "runs" / name,
            progress=False, high_precision_roles=args.high_precision,
        )  # fmt: skip
        marker = args.out / "runs" / f"{name}.trained.json"
        runs[name] = (method, bits, seed, train_cached(cfg, marker, teacher_hash=teacher_digest(teacher)))
    return runs


def train_cached(cfg: RunConfig, marker: Path, *, teacher_hash: str) -> dict:
    """Train `cfg` unless `marker` records a finished run of the same config and teacher weights (then reuse
    it); returns the marker's record: key, teacher, recipe, deploy folder, Φ's final rank, losses and training
    seconds. A record of another recipe or teacher whose student still exists is refused, not retrained over
    (training starts by deleting the run folder)."""
    name = marker.name.removesuffix(".trained.json")
    # the config holds only paths to the teacher and shards: the teacher's weights enter the key themselves
    key = hashlib.sha256(f"{cfg.model_dump_json()};teacher={teacher_hash}".encode()).hexdigest()[:16]
    previous = json.loads(marker.read_text()) if marker.is_file() else {}
    if previous and Path(previous["deploy_dir"]).is_dir():
        if previous.get("config") == key:
            print(f"{name}: reused ({marker})", flush=True)
            return previous
        raise ValueError(
            f"{marker}: records a finished run of another recipe or teacher (key {previous.get('config')}, now "
            f"{key}); training it again would delete that student: use another --out, or delete the record "
            f"and {Path(previous['deploy_dir']).parents[1]} to retrain"
        )
    t = time.perf_counter()
    result = train_variant(cfg)
    done = {"config": key, "teacher": teacher_hash, "recipe": recipe_view(cfg.model_dump(mode="json")),
            "deploy_dir": str(result.deploy_dir), "phi_rank": result.phi_rank,
            "losses": list(result.losses), "train_s": time.perf_counter() - t,
            "decay_period": None if cfg.aux is None else cfg.aux.decay.period}  # fmt: skip
    atomic_write_text(marker, json.dumps(done))
    print(
        f"{name}: {cfg.train.max_steps} steps in {done['train_s']:.0f} s, Φ rank {result.phi_rank}",
        flush=True,
    )
    return done


def recipe_view(config: dict) -> dict:
    """The parts of a run config that make its student what it is, without the run's paths: what `--merge`
    compares between a record and the recipe it is asked to tabulate."""
    view = {k: config[k] for k in ("optim", "train", "quant", "aux", "method") if k in config}
    view["data"] = {k: v for k, v in config.get("data", {}).items() if k != "shards"}
    return view


def run_records(folder: Path, report_name: str) -> dict[str, dict]:
    """The trained-run records of the students in `folder/report_name`: its `runs.json` (written when it
    was sampled), else, for folders sampled before that file existed, the current `runs/*.trained.json`."""
    frozen = folder / report_name / "runs.json"
    if frozen.is_file():
        return json.loads(frozen.read_text())
    print(f"{folder}/{report_name}: no runs.json; reading loss curves from {folder}/runs (they may belong to "
          "a later recipe trained in the same folder)", flush=True)  # fmt: skip
    return {
        m.name.removesuffix(".trained.json"): json.loads(m.read_text())
        for m in sorted((folder / "runs").glob("*.trained.json"))
    }


def add_setting_arguments(parser: argparse.ArgumentParser, out: Path) -> None:
    """`--quick`, `--out` (default `out`), `--teacher` and the options that override a `Setting`'s counts
    (shared with benchmarks/baselines.py and benchmarks/qvgen_ablations.py)."""
    parser.add_argument("--quick", action="store_true", help="the 30-minute variant (paper_table's SETTINGS)")
    parser.add_argument("--out", type=Path, default=out, help="work folder")
    parser.add_argument("--teacher", type=Path, default=DEFAULT_TEACHER_DIR, help="teacher diffusers folder")
    parser.add_argument("--steps", type=int, help="training steps of every QAT method")
    parser.add_argument("--clips", type=int, help="procedural training clips")
    parser.add_argument(
        "--prompts", type=int, help="held-out prompts (a quarter two-object unless --two-object)"
    )
    parser.add_argument("--two-object", type=int, help="how many of the prompts have two objects")
    parser.add_argument("--sampling-seeds", type=int, help="videos per prompt (noise seeds)")


def resolve_setting(args: argparse.Namespace) -> Setting:
    """`--quick` or the full `Setting`, with the counts given on the command line put in (a custom
    `--prompts` without `--two-object` makes a quarter of them two-object)."""
    base = SETTINGS["quick" if args.quick else "full"]
    prompts = args.prompts or base.prompts
    two_object = base.two_object if args.two_object is None else args.two_object
    if args.prompts and args.two_object is None:
        two_object = prompts // 4
    return Setting(
        steps=base.steps if args.steps is None else args.steps,
        clips=args.clips or base.clips,
        prompts=prompts,
        two_object=two_object,
        sampling_seeds=args.sampling_seeds or base.sampling_seeds,
        train_seeds=args.train_seeds or base.train_seeds,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_setting_arguments(parser, Path("outputs/paper_table"))
    parser.add_argument("--train-seeds", type=int, help="training seeds of LSQ and QVGen")
    parser.add_argument("--bits", type=int, nargs="+", default=[4, 3], choices=(3, 4))
    parser.add_argument("--methods", nargs="+", default=["lsq", "qvgen"], choices=("lsq", "qvgen"))
    parser.add_argument("--lr", type=float, default=TrainBudget().lr, help="lr of latent weights, Φ, other")
    parser.add_argument("--phi-lr", type=float, help="lr of Φ (default: --lr)")
    parser.add_argument("--initial-rank", type=int, default=TrainBudget().initial_rank, help="QVGen's r0")
    parser.add_argument(
        "--decay-fraction", type=float, default=TrainBudget().decay_fraction,
        help="share of the steps within which QVGen's Φ decays to nothing (default: all of them, as the paper)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="first training seed and the sampling seed")
    parser.add_argument(
        "--high-precision", nargs="*", default=[], metavar="ROLE",
        help="qvgen.quant layer roles left unquantized in every student (default: none)",
    )  # fmt: skip
    parser.add_argument(
        "--report", default="report", help="report subfolder of --out (ablations: another name)"
    )
    parser.add_argument(
        "--intervals", choices=("videos", "prompts"), default="videos",
        help="unit of the 95 %% intervals: every video (default), or every prompt (its sampling seeds' videos "
        "averaged first: videos of one prompt are not independent)",
    )  # fmt: skip
    parser.add_argument("--no-write", action="store_true", help="do not touch benchmarks/RESULTS.md")
    parser.add_argument(
        "--merge", nargs="+", type=Path, metavar="OUT",
        help="no training or sampling: the table of earlier runs' work folders (e.g. one per --bits, run side "
        "by side on a small machine), from their report.json and trained-run records; give the setting "
        "options they ran with",
    )  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    run = resolve_setting(args)
    steps, clips, n_prompts, two_object = run.steps, run.clips, run.prompts, run.two_object
    sampling_seeds = run.sampling_seeds
    seeds = [args.seed + k for k in range(run.train_seeds)]
    if args.merge:  # read-only: hash the teacher where it is (a snapshot would overwrite a merged folder's)
        if any(args.out.resolve() == folder.resolve() for folder in args.merge):
            raise SystemExit(
                f"paper_table: --out {args.out} is one of the --merge folders; give another --out"
            )
        teacher, teacher_hash = args.teacher, teacher_digest(args.teacher)
    else:
        teacher, teacher_hash = teacher_snapshot(args.teacher, args.out)
    budget = TrainBudget(
        steps=steps, lr=args.lr, phi_lr=args.phi_lr, initial_rank=args.initial_rank,
        decay_fraction=args.decay_fraction,
    )  # fmt: skip
    decay_end = decay_steps(budget)
    period = decay_period(budget.initial_rank, decay_end)  # QVGen's; what --merge checks its runs against
    shape = teacher_clip_shape(teacher)
    style = teacher_world_style(teacher)
    held_out = list(held_out_clips(n_prompts, shape, two_object=two_object, style=style))
    prompts = [c.caption for c in held_out]
    sampling_steps, guidance = teacher_sampling(teacher)
    print(f"paper_table: {steps} steps, {clips} clips, {n_prompts} prompts ({two_object} two-object) × "
          f"{sampling_seeds} seeds, training seeds {seeds}, teacher {teacher_hash}", flush=True)  # fmt: skip

    truth, negative = metric_check(held_out, SHAPE_SETS[style.shapes])
    chance = chance_levels(SHAPE_SETS[style.shapes])
    print(f"metric check: ground truth {truth}, changed attribute {negative}, chance {chance}", flush=True)

    if args.merge:

        def expected_recipe(method: str, bits: int, seed: int) -> dict:
            cfg = run_config(
                method, bits, teacher, args.out / "shards", budget.model_copy(update={"seed": seed}),
                args.out / "runs" / "x", progress=False, high_precision_roles=args.high_precision,
            )  # fmt: skip
            return recipe_view(cfg.model_dump(mode="json"))

        planned = [p for p in prompts for _ in range(sampling_seeds)]
        runs, report = merge_runs(
            args.merge, args.report, teacher_hash, steps, period, recipe=expected_recipe, prompts=planned
        )
        args.bits = sorted({r[1] for r in runs.values()}, reverse=True)
        args.methods = [m for m in ("lsq", "qvgen") if any(r[0] == m for r in runs.values())]
        seeds = sorted({r[2] for r in runs.values() if r[0] != "rtn"})
        eval_s = 0.0
        print(f"merged {len(runs)} runs of {', '.join(map(str, args.merge))}: bits {args.bits}", flush=True)
    else:
        shards = build_shards(teacher, args.out, clips)
        print(f"shards ready ({time.perf_counter() - start:.0f} s)", flush=True)
        runs = train_all(args, teacher, shards, budget, seeds)
        t_eval = time.perf_counter()
        evaluation = evaluate(
            teacher, [(name, Path(r[3]["deploy_dir"])) for name, r in runs.items()], prompts,
            args.out / args.report, seed=args.seed, sampling_steps=sampling_steps, guidance_scale=guidance,
            clip_shape=shape, videos_per_prompt=sampling_seeds, progress=False,
        )  # fmt: skip
        eval_s = time.perf_counter() - t_eval
        report = evaluation.report
        curves = {name: curve(r[3]["losses"]) for name, r in runs.items() if r[3]["losses"]}
        report = report.model_copy(update={"training_curves": curves})
        write_report(report, args.out / args.report)
        # the records of exactly these students, for --merge and compare_runs (runs/ may change later)
        atomic_write_text(
            args.out / args.report / "runs.json", json.dumps({n: r[3] for n, r in runs.items()})
        )

    by_name = {v.name: v for v in report.variants}
    fp = make_cell("full precision (teacher)", "FP32", [report.teacher])
    cells: dict[tuple[str, int], Cell] = {}
    for bits in args.bits:
        for method in ("rtn", *args.methods):
            models = [by_name[n] for n, r in runs.items() if r[0] == method and r[1] == bits]
            cells[(method, bits)] = make_cell(LABELS[method], f"W{bits}A{bits}", models)
    n_two = two_object * sampling_seeds
    if args.intervals == "prompts":
        fp = by_prompt(fp, sampling_seeds)
        cells = {key: by_prompt(cell, sampling_seeds) for key, cell in cells.items()}
        n_two = two_object
    two_fp = mean_ci(fp.videos["overall"][-n_two:]) if n_two else None
    one_fp = mean_ci(fp.videos["overall"][: len(fp.videos["overall"]) - n_two])

    table = cell_table(fp, cells.values())
    kinds = kind_table(fp, cells.values(), n_two)
    diffs = {}
    diff_lines = ["| bits | metric | QVGen − LSQ (paired, mean ± 95 % CI) |", "| --- | --- | ---: |"]
    if {"lsq", "qvgen"} <= set(args.methods):
        for bits in args.bits:
            q, lq = cells[("qvgen", bits)], cells[("lsq", bits)]
            for key, digits in (("overall", 3), ("psnr_db", 2), ("latent_mse", 4), ("step_relative_mse", 4)):
                d = paired_diff_ci(q.videos[key], lq.videos[key])
                diffs[(bits, key)] = d
                diff_lines.append(f"| W{bits}A{bits} | {key} | {_fmt(d, digits)} |")
    loss_lines = list(LOSS_TABLE_HEAD)
    for bits in args.bits:
        for method in args.methods:
            seqs = [
                r[3]["losses"] for r in runs.values() if r[0] == method and r[1] == bits and r[3]["losses"]
            ]
            w = mean_loss_windows(seqs)
            if w is not None:
                loss_lines.append(loss_row(f"{method}-w{bits}a{bits} (mean of {len(seqs)} seeds)", w))
    wall = time.perf_counter() - start

    def val(key: tuple[str, int], metric: str = "overall") -> str:
        return f"{cells[key].ci(metric).mean:.3f}" if key in cells else "nan"

    def dval(bits: int, half: bool = False) -> str:
        d = diffs.get((bits, "overall"))
        if d is None:
            return "nan"
        if half:
            return "nan" if d.ci95 is None else f"{d.ci95:.3f}"
        return f"{d.mean:+.3f}"

    line = (
        f"paper_table fp_colour={fp.ci('colour').mean:.3f} fp_shape={fp.ci('shape').mean:.3f} "
        f"fp_motion={fp.ci('motion').mean:.3f} fp_two_object={'nan' if two_fp is None else f'{two_fp.mean:.3f}'} "
        f"rtn_w4a4_adherence={val(('rtn', 4))} lsq_w4a4_adherence={val(('lsq', 4))} "
        f"qvgen_w4a4_adherence={val(('qvgen', 4))} lsq_w3a3_adherence={val(('lsq', 3))} "
        f"qvgen_w3a3_adherence={val(('qvgen', 3))} qvgen_minus_lsq_w4a4={dval(4)} "
        f"qvgen_minus_lsq_w3a3={dval(3)} ci95_w3a3={dval(3, half=True)}"
    )
    train_s = sum(r[3]["train_s"] for r in runs.values() if "train_s" in r[3])
    print(table, "\n", kinds, "\n", "\n".join(diff_lines), "\n", "\n".join(loss_lines), sep="\n")
    folders = args.merge or [args.out]
    plots = ", ".join(f"`{(d / args.report / 'report.html').resolve()}`" for d in folders)
    print(
        f"report: {plots} ({wall / 60:.1f} min; training {train_s / 60:.1f} min, sampling {eval_s / 60:.1f} min)"
    )
    if not args.no_write:
        gone = "before the last step" if decay_end == steps else f"by step {decay_end} of {steps}"
        hp_text = (
            f"Layer roles left in high precision: {', '.join(args.high_precision)}."
            if args.high_precision
            else "Every linear of the transformer is quantized (no layer stays high precision)."
        )
        command = "python " + " ".join(["benchmarks/paper_table.py", *sys.argv[1:]])
        teacher_text = (
            "the embedded tiny Wan (`qvgen/demo/assets/tiny_wan_teacher`)"
            if args.teacher.resolve() == DEFAULT_TEACHER_DIR.resolve()
            else f"`{args.teacher}`"
        )
        timing = (
            f"a merge of {len(folders)} work folders, nothing trained or sampled by it; their training took "
            f"{train_s / 60:.1f} min in all" if args.merge else
            f"wall time {wall / 60:.1f} min: training {train_s / 60:.1f} min, sampling and scoring {eval_s / 60:.1f} min"
        )  # fmt: skip
        body = f"""Command: `{command}` ({timing}). Machine: the shared 2-core CPU box, no GPU, 1 intra-op thread
({platform.machine()}, torch {torch.__version__}), niced and sharing the CPU with other jobs.
Teacher: {teacher_text}, weights sha256 {teacher_hash} (all its safetensors, in path order).
Budget of every QAT method: {steps} steps, batch {budget.batch_size}, AdamW lr {budget.lr:g} (latent weights,
other), Φ lr {budget.phi_lr or budget.lr:g}, weight-qparam lr {budget.qparam_lr:g}, activation-clip lr
{budget.act_clip_lr:g}, cosine schedule with 10 % warm-up, caption dropout 0.1, {clips} procedural clips (world
4000, one or two objects) encoded by the teacher's VAE + UMT5, training seeds {seeds}. QVGen: Φ from
SVD(W − Q(W)) at r0 = {budget.initial_rank}, halved every {period} steps, gone {gone}. {hp_text}
Evaluation: {n_prompts} held-out prompts (captions of world 5000; the last {two_object} have two objects) ×
{sampling_seeds} sampling seeds = {n_prompts * sampling_seeds} videos per model, {sampling_steps} UniPC steps, CFG {guidance:g}
(the teacher's model-card setting), {shape[1]}×{shape[2]}×{shape[0]}; students run as their real low-bit deploy exports.
Cells: mean ± 95 % t interval over videos (trained methods: each video's value averaged over the training
seeds first; "per-seed adherence" lists each training seed's mean). Unscorable videos (no object found)
count 0 and are counted.

Metric check on the {len(held_out)} ground-truth clips of these prompts: colour {truth["colour"]:.3f}, shape
{truth["shape"]:.3f}, motion {truth["motion"]:.3f}; with one attribute of the caption changed the changed clause
passes colour {negative["colour"]:.3f} / shape {negative["shape"]:.3f} / motion {negative["motion"]:.3f} (chance
{chance["colour"]:.3f} / {chance["shape"]:.3f} / {chance["motion"]:.3f}). Teacher adherence on one-object prompts
{_fmt(one_fp)}, on two-object prompts {"—" if two_fp is None else _fmt(two_fp)}.

{table}

By caption kind (one-object: {n_prompts - two_object} prompts × {sampling_seeds} seeds; two-object: {two_object} × {sampling_seeds}):

{kinds}

{chr(10).join(diff_lines)}

Training loss (the curves are plotted in {plots}):

{chr(10).join(loss_lines)}

`{line}`
"""
        write_section(body)
    print(line)
    return 0


RUN_NAME = re.compile(r"^(rtn|lsq|qvgen)-w(\d)a\2(?:-s(\d+))?$")


def merge_runs(
    folders: Sequence[Path],
    report_name: str,
    teacher_hash: str,
    steps: int,
    period: int | None = None,
    *,
    recipe: Callable[[str, int, int], dict] | None = None,
    prompts: Sequence[str] | None = None,
) -> tuple[dict[str, tuple[str, int, int, dict]], EvalReport]:
    """The trained runs and one `EvalReport` of several paper_table work folders that sampled the same
    teacher, prompts and seeds (e.g. `--bits 4` and `--bits 3` run side by side). Refuses folders whose
    teacher, teacher samples or training steps differ, runs that appear twice, and QVGen runs whose recorded
    decay period is not `period` (another --decay-fraction or --initial-rank; records written before
    the period was recorded are not checked), runs whose recorded recipe is not `recipe(method, bits, seed)`
    (records written before it was stored are not checked), and reports whose videos are not `prompts`
    (one entry per video, in plan order). The records are the report's own (`run_records`)."""
    runs: dict[str, tuple[str, int, int, dict]] = {}
    variants: dict[str, VariantReport] = {}
    curves: dict[str, tuple[tuple[int, float], ...]] = {}
    merged: EvalReport | None = None
    for folder in folders:
        report = load_paired_report(folder, report_name, teacher_hash, merged, folders[0])
        if prompts is not None and [s.prompt for s in report.teacher.samples] != list(prompts):
            raise ValueError(f"{folder}/{report_name}/report.json: its videos are not the planned prompts × "
                             "sampling seeds (another --prompts, --two-object or --sampling-seeds)")  # fmt: skip
        if merged is None:
            merged = report
        for name, record in run_records(folder, report_name).items():
            marker = folder / "runs" / f"{name}.trained.json"
            match = RUN_NAME.match(name)
            if match is None:
                raise ValueError(f"{marker}: not a paper_table run name (method-wNaN[-sK])")
            if recipe is not None and "recipe" in record:  # records written before it was stored: unchecked
                want = recipe(match[1], int(match[2]), int(match[3] or 0))
                if record["recipe"] != want:
                    diff = sorted(k for k in want.keys() | record["recipe"].keys()
                                  if want.get(k) != record["recipe"].get(k))  # fmt: skip
                    raise ValueError(f"{marker}: trained with another recipe than the one asked for "
                                     f"(differs in {', '.join(diff)}); give the options it ran with")  # fmt: skip
            if match[1] != "rtn" and len(record["losses"]) != steps:
                raise ValueError(f"{marker}: {len(record['losses'])} training steps, not --steps {steps}")
            recorded = record.get("decay_period")
            if match[1] == "qvgen" and None not in (recorded, period) and recorded != period:
                raise ValueError(f"{marker}: Φ halved every {recorded} steps, not {period} "
                                 "(another --decay-fraction or --initial-rank)")  # fmt: skip
            if name in runs:
                raise ValueError(f"{marker}: run {name} is in more than one folder")
            runs[name] = (match[1], int(match[2]), int(match[3] or 0), record)
        variants.update((v.name, v) for v in report.variants)
        curves.update(report.training_curves)
    assert merged is not None  # argparse's nargs="+" gives at least one folder
    missing = sorted(set(runs) - set(variants))
    if missing:
        raise ValueError(f"runs without samples in the reports: {', '.join(missing)}")
    return runs, merged.model_copy(update={"variants": tuple(variants.values()), "training_curves": curves})


def load_paired_report(
    folder: Path, report_name: str, teacher_hash: str, reference: EvalReport | None, reference_folder: Path
) -> EvalReport:
    """`folder`'s report, refused unless its teacher snapshot hashes to `teacher_hash` and (given `reference`,
    the report of `reference_folder`) its teacher videos are the reference's: what makes the students' videos
    of different work folders pairable."""
    digest = teacher_digest(folder / "teacher")
    if digest != teacher_hash:
        raise ValueError(f"{folder}/teacher: weights sha256 {digest}, not the teacher's {teacher_hash}")
    report = load_report(folder / report_name / "report.json")
    if reference is not None and report.teacher.samples != reference.teacher.samples:
        raise ValueError(f"{folder}/{report_name}/report.json: its teacher samples differ from "
                         f"{reference_folder}'s (other prompts, seeds or sampling settings)")  # fmt: skip
    return report


def teacher_digest(teacher: Path) -> str:
    """Short sha256 of a teacher snapshot's safetensors (in path order), as `teacher_snapshot` reports it."""
    if not teacher.is_dir():
        raise ValueError(f"{teacher}: no teacher snapshot (not a paper_table work folder)")
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(teacher.rglob("*.safetensors"))))
    return digest.hexdigest()[:12]


def cell_table(fp: Cell, cells: Iterable[Cell]) -> str:
    """The markdown table of the FP row and `cells`: mean ± 95 % CI of every metric, per-seed adherence."""
    lines = [
        "| model | bits | adherence | colour | shape | motion | PSNR vs teacher (dB) | latent MSE "
        "| denoiser rel. MSE | per-seed adherence | unscorable |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for cell in (fp, *cells):

        def get(key: str, digits: int = 3, cell: Cell = cell) -> str:
            return _fmt(cell.ci(key), digits) if key in cell.videos else "—"

        spread = ", ".join(f"{x:.3f}" for x in cell.seed_means["overall"])
        lines.append(
            f"| {cell.label} | {cell.bits} | {get('overall')} | {get('colour')} | {get('shape')} | {get('motion')} "
            f"| {get('psnr_db', 2)} | {get('latent_mse', 4)} | {get('step_relative_mse', 4)} | {spread} "
            f"| {cell.unscorable}/{cell.num_videos} |"
        )
    return "\n".join(lines)


def kind_table(fp: Cell, cells: Iterable[Cell], two_object_videos: int) -> str:
    """Adherence of every row on one-object captions (per attribute and overall) and on two-object
    captions (overall): the last `two_object_videos` videos of the plan have two objects."""
    lines = ["| model | bits | one object: colour / shape / motion | one object | two objects |",
             "| --- | --- | --- | ---: | ---: |"]  # fmt: skip
    for cell in (fp, *cells):
        split = len(cell.videos["overall"]) - two_object_videos

        def mean(key: str, two: bool = False, cell: Cell = cell, split: int = split) -> str:
            values = cell.videos[key][split:] if two else cell.videos[key][:split]
            return f"{np.mean(values):.3f}" if values else "—"

        attrs = " / ".join(mean(k) for k in ("colour", "shape", "motion"))
        lines.append(
            f"| {cell.label} | {cell.bits} | {attrs} | {mean('overall')} | {mean('overall', True)} |"
        )
    return "\n".join(lines)


def write_section(body: str, heading: str = SECTION) -> None:
    """Replace (or append) the `heading` section of RESULTS.md (default `## paper_table`), leaving the
    others alone."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    # --- issue 16: keep the `### baselines` subsection that benchmarks/baselines.py appends ---
    old = pattern.search(text)
    kept = ""
    if old is not None and "\n### baselines\n" in old.group(0):
        kept = old.group(0)[old.group(0).index("### baselines") :].strip() + "\n\n"
    # --- end issue 16 ---
    section = f"{heading}\n\n{body.strip()}\n\n{kept}"
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    atomic_write_text(RESULTS, text.rstrip() + "\n")


if __name__ == "__main__":
    sys.exit(main())
