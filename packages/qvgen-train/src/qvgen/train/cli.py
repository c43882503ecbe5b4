"""`qvgen-train {run,precompute,schema,import-reference}`: the command line over `run(cfg)`, the shard
writer and the importer of the reference implementation's checkpoints."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import yaml
from pydantic import BaseModel

from qvgen.core import cli_main, schema_json
from qvgen.entrypoints.qvgen_train import IMPORT_GROUP_MAPPINGS as IMPORT_GROUP_MAPPINGS
from qvgen.entrypoints.qvgen_train import build_parser as _parser
from qvgen.train.config import ConfigError, RunConfig, load_config
from qvgen.train.precompute import PrecomputeConfig, load_precompute_config, precompute

# The parser lives in the console script's module (argparse + qvgen.core only): `qvgen-train --help` and a
# wrong flag are answered there before torch is imported. `SCHEMA_NAMES` there lists these keys.
SCHEMAS: dict[str, type[BaseModel]] = {"run": RunConfig, "precompute": PrecomputeConfig}


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
        print(f"qvgen-train: error: {_one_line(e)}", file=sys.stderr)
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

        again = " ".join([f"qvgen-train run {args.config}", *(f"--set {o}" for o in args.overrides)])
        again += " --set checkpoint.resume_from=latest"
        result = run(cfg, overwrite=args.overwrite, resume_command=again)
        print(f"final student: {result.fake_quant_dir}")
        if result.deploy_dir is not None:
            print(f"deploy (low-bit) student: {result.deploy_dir}")
        return 0
    if args.overwrite:
        cfg = cfg.model_copy(update={"writer": cfg.writer.model_copy(update={"on_change": "rebuild"})})
    out = precompute(cfg)
    print(f"shards: {out}")
    return 0


def _one_line(e: ConfigError) -> str:
    """A config error as one line (qvgen.core already writes each invalid field with its problem on it)."""
    return " ".join(str(e).split())


def _import_reference(args: argparse.Namespace) -> int:
    from qvgen.train.reference import ReferenceImportError, import_reference

    try:
        timesteps = [float(t) for t in args.sampling_timesteps.split(",") if t.strip()]
        out = import_reference(
            args.folder, args.base, args.out, family=args.family, weight_bits=args.weight_bits,
            act_bits=args.act_bits, groups=args.groups, reference_fix=args.reference_fix,
            expected_groups=args.expected_groups,
            sampling_timesteps=timesteps, calls_per_step=args.calls_per_step, lora_scale=args.lora_scale,
            overwrite=args.overwrite,
        )  # fmt: skip
    except (ReferenceImportError, FileNotFoundError, ValueError) as e:
        print(f"qvgen-train: error: {e}", file=sys.stderr)
        return 2
    print(f"student: {out}")
    return 0


def console_main() -> None:
    sys.exit(main())


if __name__ == "__main__":  # `accelerate launch -m qvgen.train.cli run CONFIG.yaml`
    console_main()
