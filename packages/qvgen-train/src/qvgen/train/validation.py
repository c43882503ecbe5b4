"""Validation clips: sample the current student through its family's pipeline and write mp4 files."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn


def write_validation_clips(family: Any, cfg: Any, student: nn.Module, step: int) -> list[Path]:
    """Sample every `cfg.logging.validation.prompts` with `student` (Φ included) → `validation/step-N-i.mp4`.

    The VAE, text encoder and scheduler come from `cfg.model.checkpoint`; the student is put in eval mode
    for sampling and back in train mode after. Sampling uses a fixed seed so clips compare across steps.
    """
    from qvgen.data import write_video

    val = cfg.logging.validation
    out_dir = Path(cfg.output_dir) / "validation"
    out_dir.mkdir(parents=True, exist_ok=True)
    components = family.load(cfg.model.checkpoint, dtype=cfg.model.dtype)
    param = next(student.parameters())
    components.vae.to(param.device)
    components.text_encoder.to(device=param.device, dtype=torch.float32)
    pipe = family.pipeline(dataclasses.replace(components, transformer=student), cfg.model)
    written = []
    was_training = student.training
    student.eval()
    try:
        for i, prompt in enumerate(val.prompts):
            kwargs = family.sample_kwargs(
                components,
                prompt=prompt,
                num_frames=val.num_frames,
                height=val.height,
                width=val.width,
                num_inference_steps=val.num_inference_steps,
                guidance_scale=val.guidance_scale,
                generator=torch.Generator().manual_seed(cfg.train.seed + i),
                output_type="np",
            )
            with torch.no_grad():
                frames = pipe(**kwargs).frames[0]
            written.append(write_video(frames, out_dir / f"step-{step:08d}-{i}.mp4", fps=val.fps))
    finally:
        student.train(was_training)
    return written
