"""The `qvgen` console script: its argument parser, then `qvgen.demo.cli.main`.

A module outside `qvgen.demo` (whose package imports torch), so `--help` and a wrong flag are answered by
`build_parser` before torch, diffusers or transformers are imported; only a parsed command goes on to
`qvgen.demo.cli` (known third-party import noise dropped), which parses again with the same parser.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from qvgen.core import add_override_argument, run_quiet_cli


def build_parser() -> argparse.ArgumentParser:
    """The `qvgen` parser (argparse and qvgen.core only); its defaults are `DemoConfig`'s (a test checks)."""
    parser = argparse.ArgumentParser(
        prog="qvgen", description="QVGen quantization-aware training for video DiTs."
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback of any error")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="QVGen W4A4 training on the embedded tiny Wan teacher, compared with RTN and the teacher",
        description=(
            "Build latent shards with the embedded teacher's encoders, train a W4A4 QVGen student (Φ decayed "
            "to rank 0), export it as real low-bit weights, sample held-out prompts with the teacher, an RTN "
            "baseline and the student, write an HTML report and print a table."
        ),
    )
    demo.add_argument(
        "--out",
        type=Path,
        default=Path("outputs/demo"),
        help="output folder; a rerun replaces the runs and report an earlier demo left there "
        "(default: %(default)s)",
    )
    demo.add_argument("--steps", type=int, default=600, help="QVGen training steps (default: %(default)s)")
    demo.add_argument(
        "--prompts",
        type=int,
        default=12,
        help="held-out prompts, one video each (default: %(default)s)",
    )
    demo.add_argument("--seed", type=int, default=0, help="training and sampling seed (default: %(default)s)")
    demo.add_argument(
        "--bits",
        type=int,
        choices=(3, 4),
        default=4,
        help="WnAn bit width (default: %(default)s)",
    )
    demo.add_argument(
        "--clips",
        type=int,
        default=512,
        help="procedural training clips (default: %(default)s)",
    )
    demo.add_argument(
        "--teacher",
        type=Path,
        default=None,
        help="teacher diffusers folder (default: the embedded one)",
    )
    demo.add_argument(
        "--sampling-steps",
        type=int,
        default=None,
        help="denoising steps per video (default: the teacher's own evaluation setting)",
    )
    demo.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="classifier-free guidance scale (default: the teacher's own evaluation setting)",
    )
    demo.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default: %(default)s; more only contend on a shared CPU)",
    )
    demo.add_argument(
        "--lora",
        type=Path,
        default=None,
        help="a diffusers-format LoRA folder (qvgen train-lora); every model also runs with it (+lora rows)",
    )
    demo.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars (default: only when stdout is a terminal)",
    )
    _add_train_teacher(sub)
    _add_train_lora(sub)
    return parser


def _add_train_teacher(subparsers: Any) -> None:
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


def _add_train_lora(subparsers: Any) -> None:
    """Register `qvgen train-lora` (defaults: `qvgen.demo.lora_training.LoraTrainConfig`'s, a test checks)."""
    p = subparsers.add_parser(
        "train-lora",
        help="train a LoRA on the tiny Wan teacher that draws every object in one colour (needs peft)",
        description=(
            "Train a PEFT LoRA on the attention and FFN Linears of a teacher on procedural clips whose objects "
            "are recoloured while their captions keep the original colour words; save it in the diffusers "
            "format (pipe.load_lora_weights reads it, also on W4A4 qvgen pipelines)."
        ),
    )
    p.add_argument("--out", type=Path, required=True, help="output folder of the LoRA")
    p.add_argument(
        "--teacher", type=Path, default=None, help="teacher diffusers folder (default: the embedded one)"
    )
    p.add_argument("--colour", default="red", help="palette colour of every object (default: %(default)s)")
    p.add_argument("--steps", type=int, default=300, help="training steps (default: %(default)s)")
    p.add_argument("--rank", type=int, default=8, help="LoRA rank (default: %(default)s)")
    p.add_argument("--clips", type=int, default=256, help="procedural training clips (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def main() -> None:
    # --help and usage errors exit here, before any heavy import; `--debug` may stand anywhere (cli_main).
    build_parser().parse_args([a for a in sys.argv[1:] if a != "--debug"])
    run_quiet_cli("qvgen.demo.cli")


if __name__ == "__main__":
    main()
