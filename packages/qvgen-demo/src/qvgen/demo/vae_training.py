"""The teacher's components and phase 1 of its training: the 4× `AutoencoderKLWan` learns the world.

The VAE sees single frames first (cheap; the spatial path, colours and shapes), then whole clips (the
causal temporal path), with L1 + L2 (object pixels weighted up) plus a small KL term. The per-channel
statistics of its latents then go into its config (``latents_mean``/``latents_std``), so the family's
normalisation maps them to unit scale.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from qvgen.core import known_import_noise_dropped
from qvgen.demo.teacher_config import TeacherConfig
from qvgen.demo.world import ClipPool, ClipShape, clip_pool, heldout_clips, unit_frames
from qvgen.models import Components, get_family

# Usually qvgen.models has imported diffusers quietly already; if not, its known import lines are dropped here.
with known_import_noise_dropped():
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

TEACHER_VAE: Final[Mapping[str, Any]] = MappingProxyType(
    {"base_dim": 8, "z_dim": 16, "dim_mult": [1, 2, 2], "num_res_blocks": 1,
     "temperal_downsample": [True, True], "scale_factor_spatial": 4, "scale_factor_temporal": 4}
)  # fmt: skip
"""The teacher's `AutoencoderKLWan`: two spatial stages (4×, a 9×64×64 clip → a 3×16×16 latent), 4× in
time, 178 k parameters (the real Wan 2.1 VAE: base_dim 96, dim_mult [1, 2, 4, 4], 8×)."""


def clip_shape(cfg: TeacherConfig) -> ClipShape:
    """The clips of the teacher's world."""
    return ClipShape(cfg.frames, cfg.height, cfg.width, cfg.world_style)


def build_teacher_components(
    seed: int, patch_size: int, num_layers: int = 2, ffn_dim: int = 256, z_dim: int = 16,
    text_length: int = 16, num_heads: int = 2,
) -> Components:  # fmt: skip
    """The tiny Wan factory's UMT5, tokenizer (prompts of `text_length` tokens), scheduler and transformer
    (spatial patch `patch_size`, `num_heads` heads of 64 channels, `num_layers` blocks with feed-forward width `ffn_dim`), with the 4×
    `TEACHER_VAE` at `z_dim` latent channels (the transformer's in/out channels); every model freshly
    initialised from `seed`."""
    family = get_family("wan")
    base = family.build_tiny_components(seed=seed)
    base.tokenizer.model_max_length = text_length  # UMT5's relative positions take any length
    torch.manual_seed(seed)
    # neutral latent statistics of the right length until the VAE phase measures them
    stats = {"latents_mean": [0.0] * z_dim, "latents_std": [1.0] * z_dim}
    vae: Any = AutoencoderKLWan(**{**TEACHER_VAE, "z_dim": z_dim, **stats})
    vae.eval()
    sizes = {"patch_size": (1, patch_size, patch_size), "num_layers": num_layers, "ffn_dim": ffn_dim,
             "num_attention_heads": num_heads,
             "in_channels": z_dim, "out_channels": z_dim}  # fmt: skip
    torch.manual_seed(seed)
    base_config: Any = base.transformer.config
    transformer: Any = WanTransformer3DModel.from_config({**base_config, **sizes}).eval()
    return Components(transformer, vae, base.text_encoder, base.tokenizer, base.scheduler)


def _crop_batch(
    pool: ClipPool, crop: int, gen: torch.Generator, batch: int, frames: int
) -> tuple[Tensor, Tensor]:
    """Crops (B, 3, frames, c, c) and their object masks: three in four centred near an object (±c/4).

    With `frames` = 1 each crop is one random frame of a clip, otherwise the whole clip.
    """
    videos, masks, centres = pool.videos, pool.masks, pool.centres
    h, w = videos.shape[-2:]
    index = torch.randint(0, videos.shape[0], (batch,), generator=gen).tolist()
    first = torch.randint(0, videos.shape[2] - frames + 1, (batch,), generator=gen).tolist()
    jitter = torch.randint(-crop // 4, crop // 4 + 1, (batch, 2), generator=gen).tolist()
    anywhere = torch.rand(batch, 2, generator=gen).tolist()
    xs, ms = [], []
    for j, (i, f) in enumerate(zip(index, first)):
        if j % 4 != 3:
            cx, cy = centres[i, f : f + frames].mean(0).tolist()
            x0, y0 = round(cx - crop / 2 + jitter[j][0]), round(cy - crop / 2 + jitter[j][1])
        else:
            x0, y0 = round(anywhere[j][0] * (w - crop)), round(anywhere[j][1] * (h - crop))
        x0, y0 = min(max(x0, 0), w - crop), min(max(y0, 0), h - crop)
        xs.append(videos[i, :, f : f + frames, y0 : y0 + crop, x0 : x0 + crop])
        ms.append(masks[i, :, f : f + frames, y0 : y0 + crop, x0 : x0 + crop])
    return torch.stack(xs), torch.stack(ms)


def _fit(
    vae: Any, optimizer: torch.optim.Optimizer, pool: ClipPool, gen: torch.Generator, cfg: TeacherConfig,
    phase: tuple[str, int, int, int, float], stop: Callable[[], bool], progress: bool,
) -> dict[str, Any]:  # fmt: skip
    """One one-cycle phase of `steps` VAE steps on crops of `frames` frames; returns its loss log."""
    name, steps, batch, frames, lr = phase
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=max(steps, 1), pct_start=0.05
    )
    losses: list[float] = []
    running = torch.zeros(())
    steps_done = 0
    bar = tqdm(range(steps), desc=f"teacher VAE {name}", unit="step", disable=not progress)
    for step in bar:
        if stop():
            break
        x, mask = _crop_batch(pool, cfg.vae_crop, gen, batch, frames)
        weight = 1.0 + cfg.vae_shape_weight * mask
        posterior = vae.encode(x).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=gen)
        recon = vae.decode(posterior.mean + posterior.std * noise).sample
        err = recon - x
        rec_loss = ((err.abs() + err.square()) * weight).mean() / weight.mean()
        kl = posterior.kl().mean() / x[0].numel()
        loss = rec_loss + cfg.vae_kl_weight * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        running += rec_loss.detach()
        steps_done = step + 1
        if steps_done % 50 == 0:
            losses.append(round(float(running) / 50, 5))
            running.zero_()
            bar.set_postfix(recon=f"{losses[-1]:.4f}")
    bar.close()
    return {"steps": steps_done, "recon_loss_every_50": losses}


def _optimizer(vae: Any, lr: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(vae.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.0)


def train_vae(
    vae: Any, cfg: TeacherConfig, stop: Callable[[], bool] = lambda: False, progress: bool = True
) -> dict[str, Any]:
    """Fit the VAE to procedural crops (single frames, then clips); store its latent statistics."""
    started = time.monotonic()
    gen = torch.Generator().manual_seed(cfg.seed)
    pool = clip_pool(cfg.world_seed, cfg.vae_clips, clip_shape(cfg), cfg.max_objects)
    with torch.no_grad():  # start with posterior std ≈ 0.02 so the sampled latents carry signal at once
        vae.quant_conv.bias[vae.config.z_dim :] = -8.0
    vae.train()
    optimizer = _optimizer(vae, cfg.vae_lr)
    log: dict[str, Any] = {}
    phases = [
        ("images", cfg.vae_image_steps, cfg.vae_image_batch_size, 1, cfg.vae_lr),
        ("clips", cfg.vae_steps, cfg.vae_batch_size, cfg.frames, cfg.vae_clip_lr),
    ]
    for phase in phases:
        log[phase[0]] = _fit(vae, optimizer, pool, gen, cfg, phase, stop, progress)
    vae.eval()
    mean, std = latent_stats(vae, pool.videos)
    vae.register_to_config(latents_mean=mean, latents_std=std)
    log["steps"] = log["images"]["steps"] + log["clips"]["steps"]
    log["seconds"] = round(time.monotonic() - started, 1)
    return log


def finetune_vae(
    vae: Any, cfg: TeacherConfig, stop: Callable[[], bool] = lambda: False, progress: bool = True
) -> dict[str, Any]:
    """More whole-clip steps (fresh optimizer and generator, its own one-cycle schedule) after
    `train_vae`; stores the new latent statistics."""
    started = time.monotonic()
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    pool = clip_pool(cfg.world_seed, cfg.vae_clips, clip_shape(cfg), cfg.max_objects)
    vae.train()
    phase = ("clips_finetune", cfg.vae_finetune_steps, cfg.vae_batch_size, cfg.frames, cfg.vae_finetune_lr)
    log = _fit(vae, _optimizer(vae, cfg.vae_finetune_lr), pool, gen, cfg, phase, stop, progress)
    vae.eval()
    mean, std = latent_stats(vae, pool.videos)
    vae.register_to_config(latents_mean=mean, latents_std=std)
    log["seconds"] = round(time.monotonic() - started, 1)
    return log


def finetune_decoder(
    vae: Any, cfg: TeacherConfig, stop: Callable[[], bool] = lambda: False, progress: bool = True
) -> dict[str, Any]:
    """Whole-clip steps on the decoder alone (encoder, latents and their statistics unchanged), with the
    object boundaries weighted ×(1 + `vae_edge_weight`): sharper corners for the same latents."""
    started = time.monotonic()
    gen = torch.Generator().manual_seed(cfg.seed + 3)
    pool = clip_pool(cfg.world_seed, cfg.vae_clips, clip_shape(cfg), cfg.max_objects)
    params = [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]
    vae.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=cfg.vae_decoder_lr, betas=(0.9, 0.99), weight_decay=0.0)
    steps = cfg.vae_decoder_steps
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg.vae_decoder_lr, total_steps=max(steps, 1), pct_start=0.05
    )
    losses: list[float] = []
    running = torch.zeros(())
    steps_done = 0
    for step in tqdm(range(steps), desc="teacher VAE decoder", unit="step", disable=not progress):
        if stop():
            break
        vae.train()
        x, mask = _crop_batch(pool, cfg.vae_crop, gen, cfg.vae_batch_size, cfg.frames)
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mean
        dilated = F.max_pool3d(mask, (1, 3, 3), 1, (0, 1, 1))
        eroded = -F.max_pool3d(-mask, (1, 3, 3), 1, (0, 1, 1))
        weight = 1.0 + cfg.vae_shape_weight * mask + cfg.vae_edge_weight * (dilated - eroded)
        err = vae.decode(z).sample - x
        loss = ((err.abs() + err.square()) * weight).mean() / weight.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        running += loss.detach()
        steps_done = step + 1
        if steps_done % 50 == 0:
            losses.append(round(float(running) / 50, 5))
            running.zero_()
    vae.requires_grad_(False)
    vae.eval()
    return {"steps": steps_done, "loss_every_50": losses, "seconds": round(time.monotonic() - started, 1)}


@torch.no_grad()
def latent_stats(vae: Any, videos: Tensor, batch: int = 16) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the posterior means of `videos`."""
    means = torch.cat(
        [vae.encode(videos[i : i + batch]).latent_dist.mean for i in range(0, len(videos), batch)]
    )
    return means.mean(dim=(0, 2, 3, 4)).tolist(), means.std(dim=(0, 2, 3, 4)).clamp_min(1e-3).tolist()


def summary(report: Any) -> dict[str, float]:
    """colour / shape / motion / overall of a `qvgen.eval` adherence report, rounded."""
    return {k: round(float(getattr(report, k)), 4) for k in ("colour", "shape", "motion", "overall")}


@torch.no_grad()
def reconstruction_check(
    vae: Any, seed: int, shape: ClipShape, one_object: int, two_object: int, batch: int = 8
) -> dict[str, Any]:
    """Adherence and PSNR of the ground truth and of the VAE's reconstructions of held-out clips."""
    clips = heldout_clips(seed, shape, one_object, two_object)
    truth = torch.stack([c.frames for c in clips])
    recon = torch.cat(
        [vae.decode(vae.encode(truth[i : i + batch]).latent_dist.mean).sample.clamp(-1, 1)
         for i in range(0, len(truth), batch)]
    )  # fmt: skip
    psnr = 10 * torch.log10(4.0 / (recon - truth).square().mean(dim=(1, 2, 3, 4)))
    captions = [c.caption for c in clips]
    out: dict[str, Any] = {"psnr_db": round(float(psnr.mean()), 2)}
    for name, videos in (("ground_truth", truth), ("vae_reconstruction", recon)):
        out[name] = split_scores([unit_frames(v) for v in videos], captions, one_object)
    return out


def split_scores(videos: list[Any], captions: list[str], one_object: int) -> dict[str, Any]:
    """Adherence of all videos, of the first `one_object` (one-object captions) and of the rest."""
    from qvgen.eval import score_videos  # imported on use: sampling and training do not need eval

    out = {"all": summary(score_videos(videos, captions))}
    if 0 < one_object < len(videos):
        out["one_object"] = summary(score_videos(videos[:one_object], captions[:one_object]))
        out["two_object"] = summary(score_videos(videos[one_object:], captions[one_object:]))
    return out
