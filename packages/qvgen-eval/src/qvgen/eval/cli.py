"""`qvgen-eval {sample,compare,vbench,schema}`: each command reads one YAML config (+ `--set` overrides)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

from qvgen.core import add_override_argument, atomic_write_text, cli_main, load_config, schema_json
from qvgen.eval.config import CompareConfig, SampleConfig
from qvgen.eval.report import EvalReport
from qvgen.eval.vbench import VBenchConfig, VBenchReport

SCHEMAS: dict[str, type[BaseModel]] = {
    "sample": SampleConfig,
    "compare": CompareConfig,
    "vbench": VBenchConfig,
    "report": EvalReport,
    "vbench-report": VBenchReport,
}

_COMMAND_CONFIGS: dict[str, type[SampleConfig] | type[CompareConfig] | type[VBenchConfig]] = {
    "sample": SampleConfig,
    "compare": CompareConfig,
    "vbench": VBenchConfig,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qvgen-eval", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show the full traceback of any error")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (
        ("sample", "generate {prompt}-{index}.mp4 videos (splits the work under `accelerate launch`)"),
        ("compare", "teacher vs variants at the same seeds: metrics, report.json, report.html"),
        ("vbench", "run VBench on a folder of videos and aggregate its scores"),
    ):
        p = sub.add_parser(name, help=help_)
        p.add_argument(
            "config",
            type=Path,
            nargs="?" if name == "vbench" else None,
            help=f"{name} config YAML (fields: `qvgen-eval schema {name}`; an example in packages/qvgen-eval/README.md)",
        )
        add_override_argument(p, "sampling.num_inference_steps=4" if name != "vbench" else "device=cuda")
        p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
        p.add_argument(
            "--progress",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="progress bars (default: only when stdout is a terminal)",
        )
        if name == "vbench":
            p.add_argument(
                "--parse",
                type=Path,
                metavar="RESULTS_JSON",
                help="only parse an existing VBench *_eval_results.json (no run)",
            )
            p.add_argument("--out", type=Path, help="where to write the typed report (default: stdout)")
    s = sub.add_parser("schema", help="print the JSON schema of a config or report")
    s.add_argument("which", choices=sorted(SCHEMAS))
    return parser


def _emit(model: BaseModel, out: Path | None) -> None:
    text = model.model_dump_json(indent=2)
    if out is None:
        print(text)
        return
    atomic_write_text(out, text + "\n")
    print(f"wrote {out}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns 2 on a config error, 1 on another user error (a truncated or corrupted model
    folder, a missing file, a full disk: ValueError/OSError), printed as one message without a
    traceback, 0 on success. `--debug` (anywhere on the line) lets every error propagate."""
    return cli_main("qvgen-eval", _dispatch, argv)


def _dispatch(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    if args.command == "schema":
        print(schema_json(SCHEMAS[args.which]))
        return 0
    try:
        if args.command == "vbench" and args.parse is not None:
            from qvgen.eval.vbench import parse_results

            _emit(parse_results(args.parse), args.out)
            return 0
        if args.config is None:
            raise ValueError("vbench: pass a config file, or --parse RESULTS_JSON")
        cls = _COMMAND_CONFIGS[args.command]
        cfg: SampleConfig | CompareConfig | VBenchConfig = load_config(cls, args.config, args.overrides)
    except ValueError as e:
        print(f"qvgen-eval {args.command}: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(cfg.model_dump_json(indent=2))
        return 0
    from qvgen.models import progress_default, set_hf_progress_bars

    set_hf_progress_bars(progress_default(args.progress))
    if isinstance(cfg, SampleConfig):
        from qvgen.eval.sample import sample

        result = sample(cfg)
        print(
            f"rank {result.rank}/{result.world_size}: wrote {len(result.written)}, skipped {len(result.skipped)}"
        )
    elif isinstance(cfg, CompareConfig):
        from qvgen.eval.compare import compare

        report = compare(cfg)
        print(f"wrote {cfg.out_dir / 'report.json'} and {cfg.out_dir / 'report.html'}")
        for v in report.variants:
            print(
                f"  {v.name}: "
                + ", ".join(f"{k}={val:.5g}" for k, val in sorted(v.summary.scalars().items()))
            )
    else:
        from qvgen.eval.vbench import run_vbench

        _emit(run_vbench(cfg), args.out or cfg.output_dir / "vbench_report.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
