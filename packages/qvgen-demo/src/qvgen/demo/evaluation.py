"""Phase 4 of the teacher's training: the quality check (prompt adherence via `qvgen.eval`).

Held-out captions come from a world seed never trained on (`eval_seed`): `eval_one_object` one-object
and `eval_two_object` two-object clips; the teacher samples each caption with `eval_sample_seeds` noise
seeds; the same clips (ground truth) and their VAE reconstructions are the references.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from qvgen.data import SHAPE_SETS
from qvgen.demo.teacher_config import TeacherConfig
from qvgen.demo.vae_training import clip_shape, reconstruction_check, split_scores
from qvgen.demo.world import heldout_clips
from qvgen.models import Components, get_family


@torch.no_grad()
def sample_teacher(
    components: Components, captions: list[str], cfg: TeacherConfig, seed: int,
    guidance: float | None = None, batch: int = 32,
) -> np.ndarray:  # fmt: skip
    """Videos (N, F, H, W, 3) in [0, 1] from the Wan pipeline, generator `seed + i` for caption i.

    `guidance` defaults to `cfg.guidance_scale`.
    """
    family = get_family("wan")
    pipe = family.pipeline(components)
    kwargs = family.sample_kwargs(
        components, height=cfg.height, width=cfg.width, num_frames=cfg.frames,
        num_inference_steps=cfg.num_inference_steps,
        guidance_scale=cfg.guidance_scale if guidance is None else guidance,
    )  # fmt: skip
    out = []
    for start in range(0, len(captions), batch):
        part = captions[start : start + batch]
        generators = [torch.Generator().manual_seed(seed + start + i) for i in range(len(part))]
        out.append(np.asarray(pipe(prompt=part, generator=generators, output_type="np", **kwargs).frames))
    return np.concatenate(out)


def heldout_captions(cfg: TeacherConfig) -> list[str]:
    """The quality check's captions: one-object ones first, then two-object ones."""
    clips = heldout_clips(cfg.eval_seed, clip_shape(cfg), cfg.eval_one_object, cfg.eval_two_object)
    return [c.caption for c in clips]


def score_teacher(components: Components, cfg: TeacherConfig, guidance: float) -> dict[str, Any]:
    """Adherence of the teacher's samples of the held-out captions (all / one-object / two-object)."""
    captions = heldout_captions(cfg)
    n, k = len(captions), cfg.eval_sample_seeds
    videos = [
        sample_teacher(components, captions, cfg, cfg.eval_seed + 10_000 * s, guidance) for s in range(k)
    ]
    # Order: every one-object sample of every seed first, then the two-object ones.
    ones = [v[i] for v in videos for i in range(cfg.eval_one_object)]
    twos = [v[i] for v in videos for i in range(cfg.eval_one_object, n)]
    one_caps = captions[: cfg.eval_one_object] * k
    two_caps = captions[cfg.eval_one_object :] * k
    return split_scores(ones + twos, one_caps + two_caps, len(ones))


@torch.no_grad()
def evaluate_teacher(components: Components, cfg: TeacherConfig) -> dict[str, Any]:
    """Adherence of teacher samples (at each guidance scale), of the held-out ground-truth clips and of
    their VAE reconstructions."""
    from qvgen.eval import chance_levels

    shape = clip_shape(cfg)
    refs = reconstruction_check(
        components.vae, cfg.eval_seed, shape, cfg.eval_one_object, cfg.eval_two_object
    )
    by_guidance = {
        str(g): score_teacher(components, cfg, g)
        for g in dict.fromkeys((cfg.guidance_scale, *cfg.guidance_sweep))
    }
    return {
        "teacher": by_guidance[str(cfg.guidance_scale)],
        "teacher_by_guidance": by_guidance,
        "ground_truth": refs["ground_truth"],
        "vae_reconstruction": refs["vae_reconstruction"],
        "vae_psnr_db": refs["psnr_db"],
        "chance": {k: round(v, 4) for k, v in chance_levels(SHAPE_SETS[cfg.shapes]).items()},
        "captions": heldout_captions(cfg),
    }
