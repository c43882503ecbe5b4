"""The `qvgen` command. For now `qvgen demo`: build the tiny model, save it, load it back, sample a clip."""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from qvgen.demo.teacher import add_cli as add_train_teacher_cli
from qvgen.demo.teacher import cli_main as train_teacher_main
from qvgen.demo.teacher import config_from_args as teacher_config_from_args

DEFAULT_PROMPT = "a red square moves left"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qvgen", description="QVGen quantization-aware training for video DiTs."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="build the tiny offline model, save and reload it, sample a short clip, write an mp4",
    )
    demo.add_argument(
        "--out", type=Path, default=Path("outputs/demo"), help="output folder (default: %(default)s)"
    )
    demo.add_argument(
        "--family", choices=("wan", "cogvideox"), default="wan", help="model family (default: wan)"
    )
    demo.add_argument("--steps", type=int, default=4, help="sampling steps (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the model weights and the sample")
    demo.add_argument("--prompt", default=DEFAULT_PROMPT, help="text prompt (default: %(default)r)")
    add_train_teacher_cli(sub)
    return parser


def run_demo(out: Path, family_name: str, *, steps: int, seed: int, prompt: str) -> Path:
    """Tiny checkpoint → diffusers folder → load through the family → 64×64×9 clip → mp4 path."""
    import torch
    from diffusers.utils import export_to_video

    from qvgen.models import get_family

    family = get_family(family_name)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = family.save_tiny(out / f"tiny-{family_name}", seed=seed)
    components = family.load(checkpoint, "float32")
    pipe = family.pipeline(components)
    kwargs = family.sample_kwargs(components, height=64, width=64, num_frames=9, num_inference_steps=steps)
    frames = pipe(
        prompt=prompt,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
        **kwargs,
    ).frames[0]
    video = out / f"demo-{family_name}.mp4"
    fd, tmp = tempfile.mkstemp(prefix=f".{video.stem}.", suffix=".mp4", dir=out)
    os.close(fd)
    try:
        export_to_video(list(frames), tmp, fps=8)
        os.replace(tmp, video)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return video


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "train-teacher":
        try:
            cfg = teacher_config_from_args(args)
        except ValueError as e:  # pydantic's ValidationError is a ValueError
            print(f"qvgen train-teacher: {e}")
            return 2
        return train_teacher_main(cfg)
    if args.command == "demo":
        if args.steps < 1:
            print(f"qvgen demo: --steps must be at least 1; got {args.steps}")
            return 2
        video = run_demo(args.out, args.family, steps=args.steps, seed=args.seed, prompt=args.prompt)
        print(f"qvgen demo: wrote {video.resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
