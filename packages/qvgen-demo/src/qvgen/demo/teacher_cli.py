"""`qvgen train-teacher`: its config from the parsed arguments (the parser is `qvgen.entrypoints.qvgen`'s),
and the guard around the committed teacher."""

from __future__ import annotations

import json
from typing import Any

from qvgen.core import apply_overrides_to_tree, validate_config
from qvgen.demo.teacher import reevaluate_teacher, train_teacher
from qvgen.demo.teacher_config import DEFAULT_TEACHER_DIR, EVAL_FIELDS, REPORT_NAME, TeacherConfig, recipe_of


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
