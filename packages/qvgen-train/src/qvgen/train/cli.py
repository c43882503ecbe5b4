"""`qvgen-train {run,precompute,schema}`: the command line over `run(cfg)` and the shard writer."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import yaml
from pydantic import BaseModel

from qvgen.train.config import ConfigError, RunConfig, load_config
from qvgen.train.precompute import PrecomputeConfig, load_precompute_config, precompute

SCHEMAS: dict[str, type[BaseModel]] = {"run": RunConfig, "precompute": PrecomputeConfig}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qvgen-train", description="QVGen quantization-aware distillation.")
    sub = parser.add_subparsers(dest="command", required=True)

    run_p = sub.add_parser(
        "run", help="train (or, with train.max_steps=0, only quantize) and export a student"
    )
    run_p.add_argument("config", help="run config YAML (see configs/ and `qvgen-train schema`)")
    run_p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one field, e.g. --set train.max_steps=4 (value parsed as YAML)",
    )
    run_p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")

    pre_p = sub.add_parser(
        "precompute", help="encode videos + captions into latent shards with a family's encoder"
    )
    pre_p.add_argument("config", help="precompute config YAML (`qvgen-train schema precompute`)")
    pre_p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    pre_p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")

    schema_p = sub.add_parser("schema", help="print the JSON schema of a config file")
    schema_p.add_argument("which", nargs="?", choices=sorted(SCHEMAS), default="run")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for an invalid config). Other errors propagate."""
    args = _parser().parse_args(argv)
    if args.command == "schema":
        print(json.dumps(SCHEMAS[args.which].model_json_schema(), indent=2))
        return 0
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


def console_main() -> None:
    sys.exit(main())


if __name__ == "__main__":  # `accelerate launch -m qvgen.train.cli run CONFIG.yaml`
    console_main()
