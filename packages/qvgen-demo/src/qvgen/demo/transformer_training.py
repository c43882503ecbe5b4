"""Phase 3 of the teacher's training: Wan flow matching of the transformer on the latent shards.

x_t = (1−σ)·x0 + σ·ε, target ε − x0 — the noising and prediction come from qvgen.models' Wan family
(the same functions qvgen.train's recipe calls), with caption dropout for classifier-free guidance and
an EMA of the weights.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from qvgen.data import LoaderConfig, make_loader
from qvgen.demo.teacher_config import TeacherConfig
from qvgen.models import Components, WanSpec, get_family


def lr_factor(step: int, steps: int, warmup: int) -> float:
    """Linear warm-up over `warmup` steps, then cosine from 1 to 0.05 at `steps`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(steps - warmup, 1)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def train_transformer(
    components: Components, cfg: TeacherConfig, shard_dir: Path,
    stop: Callable[[], bool] = lambda: False, progress: bool = True, *, stage: int = 1,
) -> dict[str, Any]:  # fmt: skip
    """Flow matching on the latent shards; the EMA weights end up in `components.transformer`.

    Stage 1: `steps` steps from scratch at lr `lr`, σ shift `train_flow_shift`; stage 2 continues from the
    stage-1 weights for `finetune_steps` steps at lr `finetune_lr`, σ shift `finetune_flow_shift` (more
    steps at high noise, where the layout of a sample is decided), with fresh optimizer, EMA and batches.
    """
    started = time.monotonic()
    if stage == 1:
        steps, lr, warmup, shift = cfg.steps, cfg.lr, cfg.warmup_steps, cfg.train_flow_shift
    else:
        steps, lr, warmup, shift = (
            cfg.finetune_steps,
            cfg.finetune_lr,
            cfg.warmup_steps,
            cfg.finetune_flow_shift,
        )
    offset = 0 if stage == 1 else 100
    family = get_family("wan")
    spec = WanSpec(train_flow_shift=shift)
    vae: Any = components.vae
    transformer, vae_config = components.transformer, vae.config
    empty = family.encoder(components).encode_prompts([""])
    gen = torch.Generator().manual_seed(cfg.seed + 1 + offset)
    loader = make_loader(
        LoaderConfig(shards=shard_dir, batch_size=cfg.batch_size, mode="train", seed=cfg.seed + offset,
                     num_workers=0, shuffle_buffer=1024)
    )  # fmt: skip
    transformer.train()
    optimizer = torch.optim.AdamW(transformer.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, steps, warmup))
    ema = AveragedModel(transformer, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
    losses: list[float] = []
    running = torch.zeros(())
    steps_done = 0
    bar = tqdm(total=steps, desc=f"teacher transformer {stage}", unit="step", disable=not progress)
    for step, batch in zip(range(steps), loader):
        if stop():
            break
        latents = family.normalize_latents(batch.sample_latents(gen), vae_config)
        noise = torch.randn(latents.shape, generator=gen)
        t = family.sample_timesteps(latents.shape[0], gen, spec)
        x = family.noised_inputs(latents, noise, t)
        drop = torch.rand(latents.shape[0], generator=gen) < cfg.caption_dropout
        text = torch.where(drop[:, None, None], empty.embeddings, batch.text_embeddings.float())
        lengths = torch.where(drop, empty.lengths, batch.text_lengths)
        loss = F.mse_loss(family.predict(transformer, x, text, lengths), x.target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(transformer.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        ema.update_parameters(transformer)
        running += loss.detach()
        steps_done = step + 1
        bar.update(1)
        if steps_done % 100 == 0:
            losses.append(round(float(running) / 100, 5))
            running.zero_()
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
    bar.close()
    if steps_done:
        transformer.load_state_dict(ema.module.state_dict())
    transformer.eval()
    return {"steps": steps_done, "loss_every_100": losses, "seconds": round(time.monotonic() - started, 1)}
