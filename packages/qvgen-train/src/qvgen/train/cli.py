"""`qvgen-train {run,precompute,schema,import-reference}`: the command line over `run(cfg)`, the shard
writer and the importer of the reference implementation's checkpoints."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import yaml
from pydantic import BaseModel

from qvgen.core import add_override_argument, cli_main, schema_json
from qvgen.train.config import ConfigError, RunConfig, load_config
from qvgen.train.precompute import PrecomputeConfig, load_precompute_config, precompute

SCHEMAS: dict[str, type[BaseModel]] = {"run": RunConfig, "precompute": PrecomputeConfig}


def _parser() -> argparse.ArgumentParser:
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

    imp = sub.add_parser(
        "import-reference",
        help="convert a ModelTC/QVGen checkpoint (diffusers transformer folder) into a qvgen student manifest",
    )
    imp.add_argument("folder", help="the reference's transformer/ folder (config.json + safetensors)")
    imp.add_argument(
        "--base", required=True, help="full diffusers folder of the base model (VAE, text encoder, ...)"
    )
    imp.add_argument("--out", required=True, help="output folder of the student manifest")
    imp.add_argument("--family", choices=["wan", "cogvideox"], help="default: from config.json's _class_name")
    imp.add_argument("--weight-bits", type=int, default=4)
    imp.add_argument("--act-bits", type=int, default=4)
    imp.add_argument("--expected-groups", type=int, help="refuse a checkpoint with another clip-group count")
    imp.add_argument(
        "--groups", choices=["mod", "counter"], default="mod",
        help="mod: g = int(t) mod G (the reference's training grouping); counter: reproduce its sampling counter",
    )  # fmt: skip
    imp.add_argument(
        "--sampling-timesteps", default="",
        help="counter mode: the sampler's timesteps, comma separated (scheduler.timesteps after set_timesteps)",
    )  # fmt: skip
    imp.add_argument(
        "--calls-per-step", type=int, help="counter mode: transformer calls per step (Wan 2, CogVideoX 1)"
    )
    imp.add_argument("--lora-scale", type=float, default=1.0, help="--qa_lora checkpoints: W + scale·B·A")

    schema_p = sub.add_parser("schema", help="print the JSON schema of a config file")
    schema_p.add_argument("which", nargs="?", choices=sorted(SCHEMAS), default="run")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code: 2 for an invalid config, 1 for another user error (a bad file or
    sample, a refused checkpoint, a full disk: ValueError/OSError), printed as one message without a
    traceback. `--debug` (anywhere on the line) lets every error propagate with its traceback."""
    return cli_main("qvgen-train", _dispatch, argv)


def _dispatch(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    if args.command == "schema":
        print(schema_json(SCHEMAS[args.which]))
        return 0
    if args.command == "import-reference":
        return _import_reference(args)
    cfg: RunConfig | PrecomputeConfig
    try:
        if args.command == "run":
            cfg = load_config(args.config, args.overrides)
        else:
            cfg = load_precompute_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="")
        return 0
    from qvgen.models import progress_default, set_hf_progress_bars

    shown = progress_default(args.progress)  # --progress/--no-progress, else on only on a terminal
    if isinstance(cfg, RunConfig):
        shown = shown and (args.progress is not None or cfg.logging.progress_bar)
        cfg = cfg.model_copy(update={"logging": cfg.logging.model_copy(update={"progress_bar": shown})})
    set_hf_progress_bars(shown)
    if isinstance(cfg, RunConfig):
        from qvgen.train.recipe import run  # heavy imports only when training

        result = run(cfg)
        print(f"final student: {result.fake_quant_dir}")
        if result.deploy_dir is not None:
            print(f"deploy (low-bit) student: {result.deploy_dir}")
        return 0
    out = precompute(cfg)
    print(f"shards: {out}")
    return 0


def _import_reference(args: argparse.Namespace) -> int:
    from qvgen.train.reference import ReferenceImportError, import_reference

    try:
        timesteps = [float(t) for t in args.sampling_timesteps.split(",") if t.strip()]
        out = import_reference(
            args.folder, args.base, args.out, family=args.family, weight_bits=args.weight_bits,
            act_bits=args.act_bits, groups=args.groups, expected_groups=args.expected_groups,
            sampling_timesteps=timesteps, calls_per_step=args.calls_per_step, lora_scale=args.lora_scale,
        )  # fmt: skip
    except (ReferenceImportError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"student: {out}")
    return 0


def console_main() -> None:
    sys.exit(main())


if __name__ == "__main__":  # `accelerate launch -m qvgen.train.cli run CONFIG.yaml`
    console_main()
