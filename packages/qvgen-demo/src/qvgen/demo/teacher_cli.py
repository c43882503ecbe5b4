"""`qvgen train-teacher`: arguments, config, and the guard around the committed teacher."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qvgen.core import add_override_argument, apply_overrides_to_tree, validate_config
from qvgen.demo.teacher import reevaluate_teacher, train_teacher
from qvgen.demo.teacher_config import DEFAULT_TEACHER_DIR, EVAL_FIELDS, REPORT_NAME, TeacherConfig, recipe_of


def add_cli(subparsers: Any) -> None:
    """Register `qvgen train-teacher` on the `qvgen` command's subparsers."""
    p = subparsers.add_parser(
        "train-teacher",
        help="train the tiny Wan teacher on the procedural world (VAE, latent shards, transformer)",
        description="Train the tiny Wan teacher and write it as a diffusers folder with a model card.",
        epilog=(
            "--set takes any other TeacherConfig field, its value parsed as YAML, e.g. --set batch_size=16 "
            "--set guidance_sweep=[2.0,4.0]."
        ),
    )
    p.add_argument(
        "--out", type=Path, default=None,
        help="output folder (default: the embedded teacher, which needs --overwrite-embedded)",
    )  # fmt: skip
    p.add_argument(
        "--overwrite-embedded", action="store_true",
        help="allow replacing the committed teacher inside the installed package",
    )  # fmt: skip
    p.add_argument(
        "--work-dir", type=Path, default=None,
        help="folder for the trained VAE and the latent shards, reused by a rerun (default: temporary)",
    )  # fmt: skip
    p.add_argument(
        "--recipe-of", type=Path, default=None, metavar="TEACHER",
        help="start from the recipe a trained teacher folder was trained with (its training_report.json "
        "config; e.g. the embedded teacher's), then apply --set and the options here",
    )  # fmt: skip
    p.add_argument("--minutes", type=float, default=None, help="wall-clock cap; phases stop early when spent")
    p.add_argument("--steps", type=int, default=None, help="transformer steps (default: TeacherConfig.steps)")
    p.add_argument(
        "--vae-steps", type=int, default=None, help="VAE clip steps (default: TeacherConfig.vae_steps)"
    )
    p.add_argument(
        "--evaluate-only", action="store_true",
        help="re-run only the quality check of the teacher in --out (with --set evaluation settings)",
    )  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_override_argument(p, "seed=1")  # --set KEY=VALUE: any other TeacherConfig field (YAML values)


def config_from_args(args: Any) -> TeacherConfig:
    """`TeacherConfig` from parsed `train-teacher` arguments (qvgen.core's ``--set`` grammar: YAML values).

    Only the fields given are set (`--evaluate-only` reads `model_fields_set`); the named options win over
    ``--set``. Bad keys or values raise `qvgen.core.ConfigError` (a ValueError) naming the field.
    """
    if args.recipe_of is not None and args.evaluate_only:
        raise ValueError(
            "--recipe-of trains a teacher and --evaluate-only re-checks the one in --out: give one"
        )
    values = apply_overrides_to_tree(recipe_of(args.recipe_of) if args.recipe_of else {}, args.overrides)
    for key in ("out", "work_dir", "minutes", "steps", "vae_steps"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    source = "train-teacher" + (f" --recipe-of {args.recipe_of}" if args.recipe_of else "")
    source += "".join(f" --set {item}" for item in args.overrides)
    return validate_config(TeacherConfig, values, source)


def writes_embedded(cfg: TeacherConfig) -> bool:
    """Whether `cfg.out` is the committed teacher folder."""
    return cfg.out.expanduser().resolve() == DEFAULT_TEACHER_DIR.resolve()


def cli_main(
    cfg: TeacherConfig,
    *,
    evaluate_only: bool = False,
    overwrite_embedded: bool = False,
    progress: bool = True,
) -> int:
    """Run `qvgen train-teacher` for `cfg` (or only its quality check); prints the folder and adherence."""
    if writes_embedded(cfg) and not overwrite_embedded:
        print(
            f"qvgen train-teacher: refusing to overwrite the committed teacher {DEFAULT_TEACHER_DIR}; "
            "pass --out DIR to write elsewhere, or --overwrite-embedded to replace it"
        )
        return 2
    if evaluate_only:
        changes = {k: getattr(cfg, k) for k in cfg.model_fields_set & EVAL_FIELDS}
        out = reevaluate_teacher(cfg.out, **changes)
    else:
        out = train_teacher(cfg, progress=progress)
    quality = json.loads((out / REPORT_NAME).read_text())["quality"]
    print(f"qvgen train-teacher: wrote {out}")
    for part, scores in quality["teacher"].items():
        print(f"adherence {part} " + " ".join(f"{k}={v:.3f}" for k, v in scores.items()))
    return 0
