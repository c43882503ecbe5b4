"""The `qvgen` command: `qvgen demo` (QVGen end to end on the embedded teacher) and `qvgen train-teacher`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from qvgen.core import cli_main
from qvgen.demo.flow import DemoConfig, run_demo
from qvgen.demo.teacher_cli import add_cli as add_train_teacher_cli
from qvgen.demo.teacher_cli import cli_main as train_teacher_main
from qvgen.demo.teacher_cli import config_from_args as teacher_config_from_args
from qvgen.models import progress_default, set_hf_progress_bars

DEFAULTS = DemoConfig()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qvgen", description="QVGen quantization-aware training for video DiTs."
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback of any error")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="QVGen W4A4 training on the embedded tiny Wan teacher, compared with RTN and the teacher",
        description=(
            "Build latent shards with the embedded teacher's encoders, train a W4A4 QVGen student (Φ decayed "
            "to rank 0), export it as real low-bit weights, sample held-out prompts with the teacher, an RTN "
            "baseline and the student, write an HTML report and print a table."
        ),
    )
    demo.add_argument(
        "--out",
        type=Path,
        default=DEFAULTS.out,
        help="output folder; a rerun replaces the runs and report an earlier demo left there "
        "(default: %(default)s)",
    )
    demo.add_argument(
        "--steps", type=int, default=DEFAULTS.steps, help="QVGen training steps (default: %(default)s)"
    )
    demo.add_argument(
        "--prompts",
        type=int,
        default=DEFAULTS.prompts,
        help="held-out prompts, one video each (default: %(default)s)",
    )
    demo.add_argument(
        "--seed", type=int, default=DEFAULTS.seed, help="training and sampling seed (default: %(default)s)"
    )
    demo.add_argument(
        "--bits",
        type=int,
        choices=(3, 4),
        default=DEFAULTS.bits,
        help="WnAn bit width (default: %(default)s)",
    )
    demo.add_argument(
        "--clips",
        type=int,
        default=DEFAULTS.num_clips,
        help="procedural training clips (default: %(default)s)",
    )
    demo.add_argument(
        "--teacher",
        type=Path,
        default=DEFAULTS.teacher,
        help="teacher diffusers folder (default: the embedded one)",
    )
    demo.add_argument(
        "--sampling-steps",
        type=int,
        default=DEFAULTS.sampling_steps,
        help="denoising steps per video (default: the teacher's own evaluation setting)",
    )
    demo.add_argument(
        "--guidance",
        type=float,
        default=DEFAULTS.guidance_scale,
        help="classifier-free guidance scale (default: the teacher's own evaluation setting)",
    )
    demo.add_argument(
        "--threads",
        type=int,
        default=DEFAULTS.threads,
        help="torch intra-op threads (default: %(default)s; more only contend on a shared CPU)",
    )
    demo.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars (default: only when stdout is a terminal)",
    )
    add_train_teacher_cli(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; a user error (ValueError/OSError: a bad folder, a full disk) is printed as one message
    with exit 1; `--debug` (anywhere on the line) lets every error propagate with its traceback."""
    return cli_main("qvgen", _dispatch, argv)


def _dispatch(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "train-teacher":
        try:
            cfg = teacher_config_from_args(args)
        except ValueError as e:  # pydantic's ValidationError is a ValueError
            print(f"qvgen train-teacher: {e}")
            return 2
        return train_teacher_main(
            cfg, evaluate_only=args.evaluate_only, overwrite_embedded=args.overwrite_embedded,
            progress=not args.no_progress,
        )  # fmt: skip
    if args.command == "demo":
        try:
            demo_cfg = DemoConfig(
                out=args.out, teacher=args.teacher, steps=args.steps, prompts=args.prompts, seed=args.seed,
                bits=args.bits, num_clips=args.clips, progress=progress_default(args.progress),
                sampling_steps=args.sampling_steps, guidance_scale=args.guidance, threads=args.threads,
            )  # fmt: skip
        except ValueError as e:  # pydantic's ValidationError is a ValueError
            print(f"qvgen demo: {e}")
            return 2
        set_hf_progress_bars(demo_cfg.progress)
        result = run_demo(demo_cfg)
        print(result.table())
        print(
            f"Φ rank at the end of training: {result.phi_rank}; deploy export: {result.deploy_dir.resolve()}"
        )
        print(f"qvgen demo: report {result.report_html.resolve()} ({result.wall_s:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
