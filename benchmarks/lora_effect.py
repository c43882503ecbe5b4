"""A real LoRA on the W4A4 models (issue 35): the "every object red" LoRA on teacher, RTN and QVGen deploy.

1. The LoRA: `qvgen.demo.lora_training.train_colour_lora` on the embedded full-precision tiny Wan teacher
   (procedural clips whose objects are recoloured red, captions unchanged; PEFT rank 8 on every attention
   and FFN Linear; diffusers format), or an existing one with `--lora DIR`.
2. The W4A4 deploy models with the demo's own functions: RTN (`run_config("rtn")`, PTQ) and QVGen
   (`run_config("qvgen")` at `--qat-steps` on `build_shards` clips), or a demo's run folder with `--run-dir`
   (its `runs/rtn-w4a4/final/deploy` and `runs/qvgen-w4a4/final/deploy`).
3. Held-out prompts: the demo's one-object held-out captions (`held_out_prompts`, world 5000) whose colour
   is not red (a red caption would be red without the LoRA), the first `--prompts` of them, one video each
   at the teacher's sampling settings, the same seeds for every model.
4. Six models through `qvgen.eval.compare_models` with the adherence scorer: teacher, RTN, QVGen, each
   without and with the LoRA (`pipe.load_lora_weights`; on the deploy models through
   `qvgen.models.enable_lora_`). A video is *red* when every object the scorer matched to a clause has
   red as its nearest palette colour (the scorer's own colour detector); shape and motion are the scorer's
   adherence to the original caption (what the LoRA must leave alone). Each red fraction has a 95 % Wilson
   interval; LoRA − no LoRA is also given as a paired difference (95 % t interval) over the same videos.

Writes a `### lora_effect` subsection into the `## lora` section of benchmarks/RESULTS.md (unless
--no-write); the printed output ends with the line
`lora red_fraction_teacher=… red_fraction_teacher_lora=… red_fraction_rtn_lora=… red_fraction_qvgen_lora=… n_prompts=N`.
Usage: python benchmarks/lora_effect.py [--prompts N] [--lora-steps N] [--qat-steps N] [--clips N]
[--lora DIR] [--run-dir DIR] [--out DIR] [--no-write]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

from qvgen.core import atomic_write_text, file_sha256
from qvgen.demo import (
    DEFAULT_TEACHER_DIR,
    LORA_WEIGHTS_NAME,
    LoraTrainConfig,
    TrainBudget,
    build_shards,
    held_out_prompts,
    run_config,
    teacher_clip_shape,
    teacher_sampling,
    teacher_world_style,
    train_colour_lora,
    train_variant,
)
from qvgen.eval import (
    AdherenceScorer,
    Attribute,
    Contender,
    DeployModel,
    FullPrecisionModel,
    LoadedModel,
    SamplingSettings,
    VariantReport,
    VideoAdherence,
    compare_models,
    load_model,
    paired_diff_ci,
    plan_items,
)
from qvgen.models import enable_lora_

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## lora"
SUBSECTION = "### lora_effect"
COLOUR = "red"


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion k / n."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def is_coloured(record: object, colour: str) -> bool:
    """Whether every clause of a video's adherence record was matched to an object of `colour`."""
    objects = getattr(record, "objects", ())
    return bool(objects) and all(o.matched is not None and o.matched.colour == colour for o in objects)


def mean(records: list[VideoAdherence], attribute: Attribute, n: int) -> float:
    """Mean of one adherence check over `n` videos; unscorable or missing ones count 0 (the demo's table)."""
    return sum(r.value(attribute) for r in records) / n


def red_flags(model: VariantReport) -> list[bool]:
    return [s.adherence is not None and is_coloured(s.adherence, COLOUR) for s in model.samples]


def prompts_without(colour: str, n: int, shape: tuple[int, int, int], teacher: Path) -> tuple[str, ...]:
    """The first `n` one-object held-out captions of the demo whose colour is not `colour`."""
    style = teacher_world_style(teacher)
    for pool in range(n, 85):
        found = [p for p in held_out_prompts(pool, shape, style=style) if f" {colour} " not in f" {p} "]
        if len(found) >= n:
            return tuple(found[:n])
    raise ValueError(f"the held-out world has fewer than {n} one-object captions without {colour!r}")


def contender(name: str, source: FullPrecisionModel | DeployModel, lora: Path | None) -> Contender:
    def load() -> LoadedModel:
        model = load_model("wan", source, "float32", torch.device("cpu"))
        if lora is None:
            return model
        enable_lora_(model.components.transformer)  # a no-op need on the teacher; the deploy layers need it
        model.pipeline.load_lora_weights(str(lora), adapter_name="colour")
        return dataclasses.replace(
            model, facts={**model.identity(), "lora.sha256": file_sha256(lora / LORA_WEIGHTS_NAME)}
        )

    return Contender(name, source.kind, str(source.path), load)


def write_subsection(body: str) -> None:
    """Replace (or append) `### lora_effect` inside `## lora` (created if absent), leaving the rest alone."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    block = f"{SUBSECTION}\n\n{body.strip()}\n"
    section = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    found = section.search(text)
    if found is None:
        text = text.rstrip() + f"\n\n{SECTION}\n\n{block}"
    else:
        old = found.group(0)
        sub = re.compile(rf"^{re.escape(SUBSECTION)}\n.*?(?=^### |^## |\Z)", re.S | re.M)
        new = sub.sub(lambda _: block + "\n", old) if sub.search(old) else old.rstrip() + f"\n\n{block}\n"
        text = text[: found.start()] + new + text[found.end() :]
    atomic_write_text(RESULTS, text.rstrip() + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--prompts", type=int, default=24, help="held-out non-red prompts (default: %(default)s)"
    )
    parser.add_argument(
        "--lora-steps", type=int, default=300, help="LoRA training steps (default: %(default)s)"
    )
    parser.add_argument("--qat-steps", type=int, default=100, help="QVGen W4A4 steps (default: %(default)s)")
    parser.add_argument("--clips", type=int, default=256, help="QVGen training clips (default: %(default)s)")
    parser.add_argument("--lora", type=Path, default=None, help="an existing LoRA folder (skips training)")
    parser.add_argument("--run-dir", type=Path, default=None, help="a demo's output folder (reuse its runs)")
    parser.add_argument("--out", type=Path, default=Path("outputs/lora_effect"))
    parser.add_argument("--no-write", action="store_true", help="do not touch benchmarks/RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    teacher = DEFAULT_TEACHER_DIR
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    t = time.perf_counter()
    lora = args.lora
    if lora is None:
        lora = out / "lora-red"
        train_colour_lora(LoraTrainConfig(out=lora, steps=args.lora_steps, progress=False))
    timings["lora training"] = time.perf_counter() - t

    t = time.perf_counter()
    if args.run_dir is not None:
        rtn_dir = args.run_dir / "runs" / "rtn-w4a4" / "final" / "deploy"
        qvgen_dir = args.run_dir / "runs" / "qvgen-w4a4" / "final" / "deploy"
        qat = f"reused from {args.run_dir}"
    else:
        budget = TrainBudget(steps=args.qat_steps)
        rtn_dir = train_variant(
            run_config("rtn", 4, teacher, None, budget, out / "runs" / "rtn-w4a4", progress=False)
        ).deploy_dir
        shards = build_shards(teacher, out, args.clips)
        qvgen_dir = train_variant(
            run_config("qvgen", 4, teacher, shards, budget, out / "runs" / "qvgen-w4a4", progress=False)
        ).deploy_dir
        qat = f"RTN PTQ + QVGen {args.qat_steps} steps on {args.clips} clips (`run_config`/`train_variant`)"
    timings["W4A4 models"] = time.perf_counter() - t

    shape = teacher_clip_shape(teacher)
    steps, guidance = teacher_sampling(teacher)
    prompts = prompts_without(COLOUR, args.prompts, shape, teacher)
    frames, height, width = shape
    settings = SamplingSettings(
        height=height,
        width=width,
        num_frames=frames,
        num_inference_steps=steps,
        guidance_scale=guidance,
        fps=8,
    )
    fp = FullPrecisionModel(path=teacher)
    rtn = DeployModel(path=rtn_dir, base=teacher)
    qv = DeployModel(path=qvgen_dir, base=teacher)
    t = time.perf_counter()
    report = compare_models(
        "wan",
        contender("teacher", fp, None),
        [
            contender("teacher+lora", fp, lora),
            contender("rtn-w4a4", rtn, None),
            contender("rtn-w4a4+lora", rtn, lora),
            contender("qvgen-w4a4", qv, None),
            contender("qvgen-w4a4+lora", qv, lora),
        ],
        plan_items(list(prompts), 1, 0),
        settings,
        out / "report",
        scorers=(AdherenceScorer(),),
        batch_size=8,
        embed_videos=False,
    )
    timings["sampling 6 models"] = time.perf_counter() - t

    models = {m.name: m for m in (report.teacher, *report.variants)}
    red = {name: red_flags(m) for name, m in models.items()}
    n = len(prompts)
    head = (
        "model",
        "red fraction (95 % Wilson)",
        "Δ red vs no LoRA (paired, 95 % t)",
        "colour*",
        "shape",
        "motion",
        "unscorable",
    )
    lines = [head]
    fraction: dict[str, float] = {}
    for name, m in models.items():
        k = sum(red[name])
        fraction[name] = k / n
        lo, hi = wilson(k, n)
        base = name.removesuffix("+lora")
        delta = "—"
        if base != name:
            d = paired_diff_ci([float(x) for x in red[name]], [float(x) for x in red[base]])
            delta = f"{d.mean:+.3f} ± {d.ci95:.3f}" if d.ci95 is not None else f"{d.mean:+.3f}"
        records = [x.adherence for x in m.samples if x.adherence is not None]
        unscorable = sum(r.unscorable is not None for r in records) + (n - len(records))

        lines.append(
            (name, f"{k}/{n} = {k / n:.3f} [{lo:.3f}, {hi:.3f}]", delta, f"{mean(records, 'colour', n):.3f}",
             f"{mean(records, 'shape', n):.3f}", f"{mean(records, 'motion', n):.3f}", f"{unscorable}/{n}")
        )  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    table = "\n".join(" | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines)
    final = (
        f"lora red_fraction_teacher={fraction['teacher']:.3f} red_fraction_teacher_lora={fraction['teacher+lora']:.3f} "
        f"red_fraction_rtn_lora={fraction['rtn-w4a4+lora']:.3f} "
        f"red_fraction_qvgen_lora={fraction['qvgen-w4a4+lora']:.3f} n_prompts={n}"
    )
    wall = time.perf_counter() - start
    print(table)
    print("colour*: adherence to the caption's own colour word (the LoRA overrides it by design)")
    print("timings s: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()) + f"; total {wall:.0f}")
    print(final)
    if not args.no_write:
        md_rows = ["| " + " | ".join(line) + " |" for line in lines]
        md_rows.insert(1, "|" + "---|" * len(head))
        load = os.getloadavg()
        body = "\n".join(
            [
                f"Command: `{' '.join(['python benchmarks/lora_effect.py', *sys.argv[1:]])}` "
                f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {wall:.0f} s wall on the shared 2-core CPU, "
                f"load average {load[0]:.1f} at the end; {', '.join(f'{k} {v:.0f} s' for k, v in timings.items())}).",
                "",
                f"LoRA: `qvgen.demo.lora_training.train_colour_lora` ({'given: ' + str(args.lora) if args.lora else f'{args.lora_steps} steps'}; "
                "PEFT rank 8 on every attention and FFN Linear of the embedded teacher, trained on procedural clips "
                "recoloured red with their captions unchanged; saved by `WanPipeline.save_lora_weights`). "
                f"W4A4 models: {qat}. Each model samples the same {n} held-out one-object non-red captions "
                f"(the demo's `held_out_prompts`, world 5000), one video each, {steps} steps, CFG {guidance}. "
                "A video is red when every object the adherence scorer matched to a clause has red as its nearest "
                "palette colour; shape and motion are adherence to the original caption (unscorable counts 0).",
                "",
                *md_rows,
                "",
                "`effect_fp`, `effect_rtn_w4a4`, `effect_qvgen_w4a4` of the issue's check line are the three "
                "`red_fraction_*_lora` below.",
                "",
                f"`{final}`",
            ]
        )
        write_subsection(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
