"""`qvgen-eval {sample,compare,vbench,schema}`: each command reads one YAML config (+ `--set` overrides)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

from qvgen.core import atomic_write_text, cli_main, load_config, schema_json
from qvgen.entrypoints.qvgen_eval import build_parser as _parser
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
    if isinstance(cfg, SampleConfig) and args.overwrite:
        cfg = cfg.model_copy(update={"on_change": "resample"})
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
