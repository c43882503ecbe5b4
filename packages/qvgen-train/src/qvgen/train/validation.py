"""Validation clips: sample the current student through its family's pipeline and write mp4 files."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn


class ValidationSampler:
    """Writes `cfg.logging.validation`'s clips with the current student; see `__call__`.

    The VAE, text encoder and scheduler are read from `cfg.model.checkpoint` once, at the first call, in
    `cfg.model.dtype`. They sit on the CPU between validations and on the student's device only while it
    samples, so training keeps that memory the rest of the time.
    """

    def __init__(self, family: Any, cfg: Any) -> None:
        self.family = family
        self.cfg = cfg
        self._components: Any = None

    def __call__(self, student: nn.Module, step: int) -> list[Path]:
        """Sample every validation prompt with `student` (Φ included) → `validation/step-N-i.mp4`.

        The student is put in eval mode for sampling and back in its mode after. Sampling uses a fixed seed
        so clips compare across steps.
        """
        from qvgen.data import write_video

        cfg, family = self.cfg, self.family
        val = cfg.logging.validation
        out_dir = Path(cfg.output_dir) / "validation"
        out_dir.mkdir(parents=True, exist_ok=True)
        if self._components is None:
            self._components = family.load(cfg.model.checkpoint, dtype=cfg.model.dtype)
        # the student replaces the loaded transformer (which is then freed): nothing else is kept
        components = self._components = dataclasses.replace(self._components, transformer=student)
        device = next(student.parameters()).device
        components.vae.to(device)
        components.text_encoder.to(device)
        pipe = family.pipeline(components, cfg.model)
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
            components.vae.to("cpu")
            components.text_encoder.to("cpu")
        return written
