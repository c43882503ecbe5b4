"""The `qvgen` command: `qvgen demo` (QVGen end to end on the embedded teacher), `qvgen train-teacher` and
`qvgen train-lora`."""

from __future__ import annotations

from collections.abc import Sequence

from qvgen.core import cli_main
from qvgen.demo.flow import DemoConfig, run_demo
from qvgen.demo.teacher_cli import cli_main as train_teacher_main
from qvgen.demo.teacher_cli import config_from_args as teacher_config_from_args

# The parser lives in the console script's module (argparse + qvgen.core only): `qvgen --help` and a wrong
# flag are answered there before torch is imported.
from qvgen.entrypoints.qvgen import build_parser as build_parser
from qvgen.models import progress_default, set_hf_progress_bars

DEFAULTS = DemoConfig()


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
    if args.command == "train-lora":
        from qvgen.demo.lora_training import LoraTrainConfig, train_colour_lora

        try:
            lora_cfg = LoraTrainConfig(
                out=args.out, teacher=args.teacher or DEFAULTS.teacher, colour=args.colour, steps=args.steps,
                rank=args.rank, num_clips=args.clips, progress=not args.no_progress,
            )  # fmt: skip
        except ValueError as e:  # pydantic's ValidationError is a ValueError
            print(f"qvgen train-lora: {e}")
            return 2
        print(f"qvgen train-lora: {train_colour_lora(lora_cfg).resolve()}")
        return 0
    if args.command == "demo":
        try:
            demo_cfg = DemoConfig(
                out=args.out, teacher=args.teacher or DEFAULTS.teacher, steps=args.steps, prompts=args.prompts,
                seed=args.seed,
                bits=args.bits, num_clips=args.clips, progress=progress_default(args.progress),
                sampling_steps=args.sampling_steps, guidance_scale=args.guidance, threads=args.threads,
                lora=args.lora,
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
