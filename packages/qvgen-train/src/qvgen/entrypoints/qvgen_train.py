"""The `qvgen-train` console script: its argument parser, then `qvgen.train.cli.main`.

A module outside `qvgen.train` (whose package imports torch), so `--help` and a wrong flag are answered by
`build_parser` before torch, diffusers or transformers are imported; only a parsed command goes on to
`qvgen.train.cli` (known third-party import noise dropped), which parses again with the same parser.
Under accelerate: ``accelerate launch -m qvgen.entrypoints.qvgen_train run CONFIG.yaml``.
"""

from __future__ import annotations

import argparse
import sys

from qvgen.core import add_override_argument, run_quiet_cli

SCHEMA_NAMES = ("precompute", "run")
"""The configs `qvgen-train schema` prints (`qvgen.train.cli.SCHEMAS`)."""
IMPORT_GROUP_MAPPINGS = ("mod", "counter", "reference")
"""`--groups` of import-reference: `qvgen.train.reference.GroupMapping`'s values (torch stays unimported here)."""


def build_parser() -> argparse.ArgumentParser:
    """The `qvgen-train` parser (argparse and qvgen.core only)."""
    parser = argparse.ArgumentParser(prog="qvgen-train", description="QVGen quantization-aware distillation.")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of any error")
    sub = parser.add_subparsers(dest="command", required=True)

    run_p = sub.add_parser(
        "run", help="train (or, with train.max_steps=0, only quantize) and export a student"
    )
    run_p.add_argument("config", help="run config YAML (see configs/ and `qvgen-train schema`)")
    add_override_argument(run_p)
    run_p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    run_p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars (default: only when stdout is a terminal and logging.progress_bar is true)",
    )
    run_p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a run folder an earlier `qvgen-train run` wrote (finished, or started with another "
        "config) by a fresh run, instead of refusing",
    )

    pre_p = sub.add_parser(
        "precompute", help="encode videos + captions into latent shards with a family's encoder"
    )
    pre_p.add_argument("config", help="precompute config YAML (`qvgen-train schema precompute`)")
    pre_p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one field, e.g. --set batch_size=4 (value parsed as YAML; repeatable)",
    )
    pre_p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    pre_p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars (default: only when stdout is a terminal)",
    )
    pre_p.add_argument(
        "--overwrite",
        action="store_true",
        help="rebuild the shards whose inputs changed since the last run instead of refusing; same as "
        "--set writer.on_change=rebuild",
    )

    imp = sub.add_parser(
        "import-reference",
        help="convert a ModelTC/QVGen checkpoint (diffusers transformer folder) into a qvgen student manifest",
    )
    imp.add_argument("folder", help="the reference's transformer/ folder (config.json + safetensors)")
    imp.add_argument(
        "--base", required=True, help="full diffusers folder of the base model (VAE, text encoder, ...)"
    )
    imp.add_argument(
        "--out", required=True,
        help="output folder of the student manifest, written whole: a new or empty folder, or one an earlier "
        "import-reference wrote (never --base or the checkpoint, nor inside or around them); a folder holding "
        "anything else is refused, never replaced",
    )  # fmt: skip
    imp.add_argument("--family", choices=["wan", "cogvideox"], help="default: from config.json's _class_name")
    imp.add_argument(
        "--weight-bits", type=int,
        help="default: the width the weight codes imply; a contradicting one is refused",
    )  # fmt: skip
    imp.add_argument(
        "--act-bits", type=int, help="default: the weight width (the released checkpoints are WnAn)"
    )
    imp.add_argument("--expected-groups", type=int, help="refuse a checkpoint with another clip-group count")
    imp.add_argument(
        "--groups", choices=IMPORT_GROUP_MAPPINGS, default="mod",
        help="reference: replay the reference's own sampling call counter (reproduces the released "
        "checkpoints' videos); mod: g = int(t) mod G (its training grouping); counter: its sampling counter "
        "on one schedule, by timestep",
    )  # fmt: skip
    imp.add_argument(
        "--reference-fix", action=argparse.BooleanOptionalAction, default=True,
        help="--groups reference: as the reference's inference with --fix (its released scripts; default) "
        "or without it (group G-1 for every call)",
    )  # fmt: skip
    imp.add_argument(
        "--sampling-timesteps", default="",
        help="counter mode: the sampler's timesteps, comma separated (scheduler.timesteps after set_timesteps)",
    )  # fmt: skip
    imp.add_argument(
        "--calls-per-step", type=int, help="counter mode: transformer calls per step (Wan 2, CogVideoX 1)"
    )
    imp.add_argument("--lora-scale", type=float, default=1.0, help="--qa_lora checkpoints: W + scale·B·A")
    imp.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a student folder an earlier import wrote from other inputs, instead of refusing",
    )

    schema_p = sub.add_parser("schema", help="print the JSON schema of a config file")
    schema_p.add_argument("which", nargs="?", choices=SCHEMA_NAMES, default="run")
    return parser


def main() -> None:
    # --help and usage errors exit here, before any heavy import; `--debug` may stand anywhere (cli_main).
    build_parser().parse_args([a for a in sys.argv[1:] if a != "--debug"])
    run_quiet_cli("qvgen.train.cli")


if __name__ == "__main__":
    main()
