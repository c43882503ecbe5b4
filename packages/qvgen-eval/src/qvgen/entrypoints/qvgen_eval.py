"""The `qvgen-eval` console script: its argument parser, then `qvgen.eval.cli.main`.

A module outside `qvgen.eval` (whose package imports torch), so `--help` and a wrong flag are answered by
`build_parser` before torch, diffusers or transformers are imported; only a parsed command goes on to
`qvgen.eval.cli` (known third-party import noise dropped), which parses again with the same parser.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qvgen.core import add_override_argument, run_quiet_cli

DESCRIPTION = (
    "`qvgen-eval {sample,compare,vbench,schema}`: each command reads one YAML config (+ `--set` overrides)."
)
SCHEMA_NAMES = ("compare", "report", "sample", "vbench", "vbench-report")
"""What `qvgen-eval schema` prints: the keys of `qvgen.eval.cli.SCHEMAS`."""


def build_parser() -> argparse.ArgumentParser:
    """The `qvgen-eval` parser (argparse and qvgen.core only)."""
    parser = argparse.ArgumentParser(prog="qvgen-eval", description=DESCRIPTION)
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
        if name == "sample":
            p.add_argument(
                "--overwrite",
                action="store_true",
                help="resample the videos in out_dir whose sidecar differs from this config and model (or "
                "that have none), instead of refusing the run; same as --set on_change=resample",
            )
    s = sub.add_parser("schema", help="print the JSON schema of a config or report")
    s.add_argument("which", choices=SCHEMA_NAMES)
    return parser


def main() -> None:
    # --help and usage errors exit here, before any heavy import; `--debug` may stand anywhere (cli_main).
    build_parser().parse_args([a for a in sys.argv[1:] if a != "--debug"])
    run_quiet_cli("qvgen.eval.cli")


if __name__ == "__main__":
    main()
