"""Train the embedded tiny Wan teacher on qvgen.data's procedural world (`qvgen train-teacher`).

`train_teacher(cfg)` runs four phases, each a plain function below:

1. `train_vae`: the tiny `AutoencoderKLWan` of qvgen.models' factory learns to reconstruct procedural
   clips generated in memory, first single frames (cheap; the spatial path), then whole clips (the causal
   temporal path), with L1 + L2 (shape pixels weighted up) plus a small KL term; then
   the per-channel statistics of its latents go into its config (``latents_mean``/``latents_std``), so
   the family's normalisation maps them to unit scale.
2. `write_latent_shards`: the frozen VAE and (random, frozen) UMT5 encoder turn `num_clips` clips and
   captions into qvgen.data latent shards.
3. `train_transformer`: flow matching (x_t = (1−σ)·x0 + σ·ε, target ε − x0, through qvgen.models'
   Wan family) on batches from qvgen.data's loader, with caption dropout for classifier-free guidance
   and an EMA of the weights.
4. `evaluate_teacher`: prompt adherence (qvgen.eval) of the teacher's samples for a balanced set of
   captions, and of the ground-truth clips and their VAE reconstructions as references.

The result is a diffusers folder (model_index.json, transformer/, vae/, text_encoder/, tokenizer/,
scheduler/) plus ``training_report.json`` and ``MODEL_CARD.md``, written atomically. Every phase is
seeded; a run with fixed step counts (no `minutes` cap) is deterministic on a given machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from qvgen.data import (
    COLOURS,
    DIRECTIONS,
    SHAPES,
    EncodedSample,
    LoaderConfig,
    WriterConfig,
    make_clip,
    make_loader,
    read_manifest,
    render,
    write_shards,
)
from qvgen.eval import chance_levels, score_videos
from qvgen.models import Components, get_family

logger = logging.getLogger(__name__)

DEFAULT_TEACHER_DIR = Path(__file__).parent / "assets" / "tiny_wan_teacher"
"""The committed teacher (a diffusers folder)."""
REPORT_NAME = "training_report.json"
CARD_NAME = "MODEL_CARD.md"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class TeacherConfig(_Frozen):
    """Everything that defines a teacher training run."""

    out: Path = DEFAULT_TEACHER_DIR
    """Diffusers folder to write (replaced atomically)."""
    work_dir: Path | None = None
    """Where the latent shards go; default: a temporary folder removed at the end."""
    seed: int = 0
    """Seed of the initial weights, the batches and the noise."""
    world_seed: int = 1000
    """qvgen.data procedural world of the training clips."""
    eval_seed: int = 2000
    """qvgen.data procedural world of the held-out reference clips (never trained on)."""
    frames: Annotated[int, Field(ge=5)] = 9
    height: Annotated[int, Field(ge=32)] = 64
    width: Annotated[int, Field(ge=32)] = 64

    vae_image_steps: Annotated[int, Field(ge=0)] = 3000
    """VAE steps on single frames first (cheap: they teach the spatial path, colours and shapes)."""
    vae_image_batch_size: Annotated[int, Field(ge=1)] = 8
    vae_lr: Annotated[float, Field(gt=0)] = 4e-3
    """Peak one-cycle learning rate of the single-frame steps."""
    vae_steps: Annotated[int, Field(ge=0)] = 1500
    """VAE steps on whole clips next (they teach the causal temporal path)."""
    vae_batch_size: Annotated[int, Field(ge=1)] = 4
    vae_clip_lr: Annotated[float, Field(gt=0)] = 2e-3
    """Peak one-cycle learning rate of the clip steps."""
    vae_crop: Annotated[int, Field(ge=16)] = 32
    """Square crop the VAE trains on (half of them centred near the shape)."""
    vae_clips: Annotated[int, Field(ge=1)] = 512
    """Clips held in memory for VAE training."""
    vae_shape_weight: Annotated[float, Field(ge=0)] = 4.0
    """Extra loss weight of the pixels covered by a shape."""
    vae_kl_weight: Annotated[float, Field(ge=0)] = 1e-3

    num_clips: Annotated[int, Field(ge=1)] = 2048
    """Training clips encoded into latent shards for the transformer."""
    steps: Annotated[int, Field(ge=0)] = 6000
    """Transformer optimiser steps."""
    batch_size: Annotated[int, Field(ge=1)] = 32
    lr: Annotated[float, Field(gt=0)] = 1e-3
    warmup_steps: Annotated[int, Field(ge=0)] = 200
    caption_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1
    """Probability of training on the empty prompt (what classifier-free guidance subtracts)."""
    ema_decay: Annotated[float, Field(ge=0, lt=1)] = 0.999

    minutes: Annotated[float, Field(gt=0)] | None = None
    """Wall-clock cap: the VAE may use 45% and the transformer 40% of it (steps stop early)."""

    eval_prompts: Annotated[int, Field(ge=1)] = 28
    """Balanced captions sampled for the quality check (28 = every colour 4×, every direction 7×)."""
    eval_clips: Annotated[int, Field(ge=1)] = 28
    """Held-out ground-truth clips whose adherence and VAE reconstructions are measured."""
    num_inference_steps: Annotated[int, Field(ge=1)] = 25
    guidance_scale: Annotated[float, Field(ge=1)] = 2.0
    """Classifier-free guidance of the headline samples (colour holds up, motion is best at low CFG)."""
    guidance_sweep: tuple[Annotated[float, Field(ge=1)], ...] = (2.0, 3.5, 5.0)
    """Guidance scales at which the quality check also samples the same captions and seeds."""

    @model_validator(mode="after")
    def _wan_shapes(self) -> TeacherConfig:
        if (self.frames - 1) % 4:
            raise ValueError(f"frames must be 4k+1 for the Wan VAE (e.g. 9, 13, 17); got {self.frames}")
        if self.height % 16 or self.width % 16:
            raise ValueError(f"height and width must be multiples of 16; got {self.height}×{self.width}")
        if self.vae_crop > min(self.height, self.width) or self.vae_crop % 16:
            raise ValueError(
                f"vae_crop must be a multiple of 16 no larger than height/width; got {self.vae_crop}"
            )
        return self


def balanced_captions(n: int) -> list[str]:
    """`n` captions cycling colours, shapes and directions independently (all 84 combinations by n=84)."""
    colours, shapes, directions = list(COLOURS), list(SHAPES), list(DIRECTIONS)
    return [
        f"a {colours[i % len(colours)]} {shapes[i % len(shapes)]} moves {directions[i % len(directions)]}"
        for i in range(n)
    ]


@contextlib.contextmanager
def _deterministic_cpu() -> Iterator[None]:
    """One intra-op thread and deterministic kernels for the duration of the run."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)


class _Budget:
    """A wall-clock share of `minutes` (None: unlimited)."""

    def __init__(self, minutes: float | None, share: float) -> None:
        self.deadline = None if minutes is None else time.monotonic() + 60.0 * minutes * share

    def spent(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline


# --------------------------------------------------------------------------------------------- phase 1


def _clip_pool(cfg: TeacherConfig) -> tuple[Tensor, Tensor, Tensor]:
    """Clips (N, 3, F, H, W) in [-1, 1], shape masks (N, 1, F, H, W) and shape centres (N, F, 2)."""
    clips = [
        make_clip(cfg.world_seed, i, frames=cfg.frames, height=cfg.height, width=cfg.width, max_objects=1)
        for i in range(cfg.vae_clips)
    ]
    # Rendering the same shapes over a background of -1 (→ -3 after render's scaling) marks their pixels.
    below = torch.full((3, cfg.height, cfg.width), -1.0)
    masks = torch.stack([(render(c.objects, below) > -2.5).any(0, keepdim=True) for c in clips])
    centres = torch.stack([c.objects[0].centroids for c in clips])
    return torch.stack([c.frames for c in clips]), masks.float(), centres


def _crop_batch(
    pool: tuple[Tensor, Tensor, Tensor], cfg: TeacherConfig, gen: torch.Generator, batch: int, frames: int
) -> tuple[Tensor, Tensor]:
    """Crops (B, 3, frames, c, c) and their shape masks: three in four centred near the shape (±c/4).

    With `frames` = 1 each crop is one random frame of a clip, otherwise the whole clip.
    """
    videos, masks, centres = pool
    size, h, w = cfg.vae_crop, cfg.height, cfg.width
    index = torch.randint(0, videos.shape[0], (batch,), generator=gen).tolist()
    first = torch.randint(0, videos.shape[2] - frames + 1, (batch,), generator=gen).tolist()
    jitter = torch.randint(-size // 4, size // 4 + 1, (batch, 2), generator=gen).tolist()
    anywhere = torch.rand(batch, 2, generator=gen).tolist()
    xs, ms = [], []
    for j, (i, f) in enumerate(zip(index, first)):
        if j % 4 != 3:
            cx, cy = centres[i, f : f + frames].mean(0).tolist()
            x0 = round(cx - size / 2 + jitter[j][0])
            y0 = round(cy - size / 2 + jitter[j][1])
        else:
            x0, y0 = round(anywhere[j][0] * (w - size)), round(anywhere[j][1] * (h - size))
        x0, y0 = min(max(x0, 0), w - size), min(max(y0, 0), h - size)
        xs.append(videos[i, :, f : f + frames, y0 : y0 + size, x0 : x0 + size])
        ms.append(masks[i, :, f : f + frames, y0 : y0 + size, x0 : x0 + size])
    return torch.stack(xs), torch.stack(ms)


def train_vae(vae: Any, cfg: TeacherConfig, budget: _Budget) -> dict[str, Any]:
    """Fit the VAE to procedural crops (single frames, then clips); store its latent statistics."""
    gen = torch.Generator().manual_seed(cfg.seed)
    pool = _clip_pool(cfg)
    with torch.no_grad():  # start with posterior std ≈ 0.02 so the sampled latents carry signal at once
        vae.quant_conv.bias[vae.config.z_dim :] = -8.0
    vae.train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, betas=(0.9, 0.99), weight_decay=0.0)
    log: dict[str, Any] = {}
    phases = [
        ("images", cfg.vae_image_steps, cfg.vae_image_batch_size, 1, cfg.vae_lr),
        ("clips", cfg.vae_steps, cfg.vae_batch_size, cfg.frames, cfg.vae_clip_lr),
    ]
    for name, steps, batch, frames, lr in phases:
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=lr, total_steps=max(steps, 1), pct_start=0.05
        )
        losses: list[float] = []
        running = torch.zeros(())
        steps_done = 0
        bar = tqdm(range(steps), desc=f"teacher 1/3 VAE {name}", unit="step", dynamic_ncols=True)
        for step in bar:
            if budget.spent():
                break
            x, mask = _crop_batch(pool, cfg, gen, batch, frames)
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
                losses.append(float(running) / 50)
                running.zero_()
                bar.set_postfix(recon=f"{losses[-1]:.4f}")
        bar.close()
        log[name] = {"steps": steps_done, "recon_loss_every_50": losses}
    vae.eval()
    stats = _latent_stats(vae, pool[0])
    vae.register_to_config(latents_mean=stats[0], latents_std=stats[1])
    log["steps"] = log["images"]["steps"] + log["clips"]["steps"]
    return log


@torch.no_grad()
def _latent_stats(vae: Any, videos: Tensor, batch: int = 16) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the posterior means of `videos`."""
    means = torch.cat(
        [vae.encode(videos[i : i + batch]).latent_dist.mean for i in range(0, len(videos), batch)]
    )
    return means.mean(dim=(0, 2, 3, 4)).tolist(), means.std(dim=(0, 2, 3, 4)).clamp_min(1e-3).tolist()


# --------------------------------------------------------------------------------------------- phase 2


def write_latent_shards(components: Components, cfg: TeacherConfig, shard_dir: Path) -> str:
    """Encode `cfg.num_clips` procedural clips + captions into qvgen.data shards; returns the encoder name."""
    encoder = get_family("wan").encoder(components)

    def samples(batch: int = 16) -> Iterator[EncodedSample]:
        for start in tqdm(range(0, cfg.num_clips, batch), desc="teacher 2/3 latents", unit="batch"):
            clips = [
                make_clip(
                    cfg.world_seed, i, frames=cfg.frames, height=cfg.height, width=cfg.width, max_objects=1
                )
                for i in range(start, min(start + batch, cfg.num_clips))
            ]
            moments = encoder.encode_videos(torch.stack([c.frames for c in clips]))
            text = encoder.encode_prompts([c.caption for c in clips])
            for j, clip in enumerate(clips):
                yield EncodedSample(
                    id=f"{cfg.world_seed}-{start + j:06d}",
                    caption=clip.caption,
                    latents_mean=moments.mean[j],
                    latents_logvar=None if moments.logvar is None else moments.logvar[j],
                    text_embeddings=text.embeddings[j],
                    text_length=int(text.lengths[j]),
                    video_shape=(cfg.frames, cfg.height, cfg.width),
                )

    writer = WriterConfig(samples_per_shard=256, latent_dtype="float32", text_dtype="float32", family="wan")
    write_shards(samples(), shard_dir, writer, encoder_name=encoder.name)
    return encoder.name


# --------------------------------------------------------------------------------------------- phase 3


def train_transformer(
    components: Components, cfg: TeacherConfig, shard_dir: Path, budget: _Budget
) -> dict[str, Any]:
    """Flow matching on the latent shards; the EMA weights end up in `components.transformer`."""
    family = get_family("wan")
    vae: Any = components.vae
    transformer, vae_config = components.transformer, vae.config
    empty = family.encoder(components).encode_prompts([""])
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    loader = make_loader(
        LoaderConfig(shards=shard_dir, batch_size=cfg.batch_size, mode="train", seed=cfg.seed,
                     num_workers=0, shuffle_buffer=512)
    )  # fmt: skip
    transformer.train()
    optimizer = torch.optim.AdamW(transformer.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.01)

    def lr_factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(cfg.steps - cfg.warmup_steps, 1)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    ema = AveragedModel(transformer, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
    losses: list[float] = []
    running = torch.zeros(())
    steps_done = 0
    bar = tqdm(total=cfg.steps, desc="teacher 3/3 transformer", unit="step", dynamic_ncols=True)
    for step, batch in zip(range(cfg.steps), loader):
        if budget.spent():
            break
        latents = family.normalize_latents(batch.sample_latents(gen), vae_config)
        noise = torch.randn(latents.shape, generator=gen)
        x = family.noised_inputs(latents, noise, family.sample_timesteps(latents.shape[0], gen))
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
            losses.append(float(running) / 100)
            running.zero_()
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
    bar.close()
    if steps_done:
        transformer.load_state_dict(ema.module.state_dict())
    transformer.eval()
    return {"steps": steps_done, "loss_every_100": losses}


# --------------------------------------------------------------------------------------------- phase 4


def _unit(frames: Tensor) -> np.ndarray:
    """(3, F, H, W) in [-1, 1] → (F, H, W, 3) in [0, 1]."""
    return ((frames.clamp(-1, 1).permute(1, 2, 3, 0) + 1) / 2).numpy()


@torch.no_grad()
def sample_teacher(
    components: Components, captions: list[str], cfg: TeacherConfig, seed: int, guidance: float | None = None
) -> np.ndarray:
    """Videos (N, F, H, W, 3) in [0, 1] from the family pipeline, one seeded generator per caption.

    `guidance` defaults to `cfg.guidance_scale`.
    """
    family = get_family("wan")
    pipe = family.pipeline(components)
    kwargs = family.sample_kwargs(
        components, height=cfg.height, width=cfg.width, num_frames=cfg.frames,
        num_inference_steps=cfg.num_inference_steps,
        guidance_scale=cfg.guidance_scale if guidance is None else guidance,
    )  # fmt: skip
    generators = [torch.Generator().manual_seed(seed + i) for i in range(len(captions))]
    return np.asarray(pipe(prompt=captions, generator=generators, output_type="np", **kwargs).frames)


@torch.no_grad()
def _reconstruction_check(components: Components, cfg: TeacherConfig, n: int) -> dict[str, Any]:
    """Adherence and PSNR of the VAE's reconstructions of `n` held-out clips."""
    clips = [
        make_clip(cfg.eval_seed, i, frames=cfg.frames, height=cfg.height, width=cfg.width, max_objects=1)
        for i in range(n)
    ]
    truth = torch.stack([c.frames for c in clips])
    vae: Any = components.vae
    recon = vae.decode(vae.encode(truth).latent_dist.mean).sample.clamp(-1, 1)
    psnr = 10 * torch.log10(4.0 / (recon - truth).square().mean(dim=(1, 2, 3, 4)))
    report = score_videos([_unit(r) for r in recon], [c.caption for c in clips])
    return {
        "adherence": {k: round(getattr(report, k), 4) for k in ("colour", "shape", "motion", "overall")},
        "psnr_db": round(float(psnr.mean()), 2),
    }


@torch.no_grad()
def evaluate_teacher(components: Components, cfg: TeacherConfig) -> dict[str, Any]:
    """Adherence of teacher samples, of held-out ground-truth clips and of their VAE reconstructions."""
    clips = [
        make_clip(cfg.eval_seed, i, frames=cfg.frames, height=cfg.height, width=cfg.width, max_objects=1)
        for i in range(cfg.eval_clips)
    ]
    recon = _reconstruction_check(components, cfg, cfg.eval_clips)
    prompts = balanced_captions(cfg.eval_prompts)

    def summary(report: Any) -> dict[str, float]:
        return {k: round(getattr(report, k), 4) for k in ("colour", "shape", "motion", "overall")}

    by_guidance = {
        str(g): summary(
            score_videos(list(sample_teacher(components, prompts, cfg, cfg.eval_seed, g)), prompts)
        )
        for g in dict.fromkeys((cfg.guidance_scale, *cfg.guidance_sweep))
    }
    return {
        "teacher": by_guidance[str(cfg.guidance_scale)],
        "teacher_by_guidance": by_guidance,
        "ground_truth": summary(score_videos([_unit(c.frames) for c in clips], [c.caption for c in clips])),
        "vae_reconstruction": recon["adherence"],
        "vae_psnr_db": recon["psnr_db"],
        "chance": {k: round(v, 4) for k, v in chance_levels().items()},
        "prompts": prompts,
    }


# --------------------------------------------------------------------------------------------- driver


def train_teacher(cfg: TeacherConfig) -> Path:
    """Run the four phases and write the teacher folder with its report and model card; return it."""
    started = time.monotonic()
    family = get_family("wan")
    with _deterministic_cpu(), contextlib.ExitStack() as stack:
        if cfg.work_dir is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="qvgen-teacher-")))
        else:
            work = cfg.work_dir
            work.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        components = family.build_tiny_components(seed=cfg.seed)
        components.text_encoder.requires_grad_(False)
        timings: dict[str, float] = {}

        t = time.monotonic()
        vae_dir = work / f"vae-{_digest(cfg, _VAE_FIELDS)}"
        if (vae_dir / "vae_log.json").is_file():  # reuse a finished VAE phase of this config
            vae_class: Any = type(components.vae)
            components = dataclasses.replace(components, vae=vae_class.from_pretrained(vae_dir).eval())
            vae_log = {**json.loads((vae_dir / "vae_log.json").read_text()), "reused_from": str(vae_dir)}
        else:
            vae_log = train_vae(components.vae, cfg, _Budget(cfg.minutes, 0.45))
            if cfg.work_dir is not None:
                _save_vae(components.vae, vae_log, vae_dir)
        components.vae.requires_grad_(False)
        timings["vae_s"] = time.monotonic() - t
        logger.info("VAE ready: %s", json.dumps(_reconstruction_check(components, cfg, 12)))

        t = time.monotonic()
        shard_dir = work / f"shards-{_digest(cfg, (*_VAE_FIELDS, 'num_clips'))}"
        if (shard_dir / "manifest.json").is_file():
            encoder_name = read_manifest(shard_dir).encoder
        else:
            if shard_dir.exists():
                shutil.rmtree(shard_dir)
            encoder_name = write_latent_shards(components, cfg, shard_dir)
        timings["shards_s"] = time.monotonic() - t

        t = time.monotonic()
        transformer_log = train_transformer(components, cfg, shard_dir, _Budget(cfg.minutes, 0.40))
        timings["transformer_s"] = time.monotonic() - t

        t = time.monotonic()
        quality = evaluate_teacher(components, cfg)
        timings["eval_s"] = time.monotonic() - t
        timings["total_s"] = time.monotonic() - started

        report = {
            "config": json.loads(cfg.model_dump_json()),
            "encoder": encoder_name,
            "vae": vae_log,
            "transformer": transformer_log,
            "quality": quality,
            "timings_s": {k: round(v, 1) for k, v in timings.items()},
            "versions": {"torch": torch.__version__},
        }
        return _save(components, report, cfg.out)


_VAE_FIELDS = ("seed", "world_seed", "frames", "height", "width", "vae_image_steps", "vae_image_batch_size",
               "vae_lr", "vae_steps", "vae_batch_size", "vae_clip_lr", "vae_crop", "vae_clips",
               "vae_shape_weight", "vae_kl_weight", "minutes")  # fmt: skip


def _digest(cfg: TeacherConfig, fields: tuple[str, ...]) -> str:
    """Short hash of some config fields: the identity of a phase's output in `work_dir`."""
    values = json.loads(cfg.model_dump_json(include=set(fields)))
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]


def _save_vae(vae: Any, log: dict[str, Any], out: Path) -> None:
    """The trained VAE and its log into `out`, atomically (the log marks the phase as finished)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    vae.save_pretrained(tmp)
    (tmp / "vae_log.json").write_text(json.dumps(log))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)


EVAL_FIELDS = frozenset(
    {"eval_seed", "eval_prompts", "eval_clips", "num_inference_steps", "guidance_scale", "guidance_sweep"}
)
"""`TeacherConfig` fields that only the quality check reads (what `reevaluate_teacher` may change)."""


def reevaluate_teacher(folder: Path, **changes: Any) -> Path:
    """Re-run the quality check of a trained teacher folder with new evaluation settings.

    Only `EVAL_FIELDS` may change; the folder's report (config, quality, eval time) and card are rewritten.
    """
    bad = sorted(set(changes) - EVAL_FIELDS)
    if bad:
        raise ValueError(
            f"reevaluate_teacher can only change {sorted(EVAL_FIELDS)}; got {bad} (retrain instead)"
        )
    report_path = folder / REPORT_NAME
    try:
        report = json.loads(report_path.read_text())
    except (OSError, ValueError) as e:
        raise FileNotFoundError(f"{report_path}: no readable teacher training report: {e}") from e
    cfg = TeacherConfig.model_validate({**report["config"], **changes})
    started = time.monotonic()
    with _deterministic_cpu():
        quality = evaluate_teacher(get_family("wan").load(folder), cfg)
    report["config"] = json.loads(cfg.model_dump_json())
    report["quality"] = quality
    report["timings_s"]["eval_s"] = round(time.monotonic() - started, 1)
    report["evaluated_separately"] = True
    for name, text in ((REPORT_NAME, json.dumps(report, indent=1) + "\n"), (CARD_NAME, model_card(report))):
        tmp = folder / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, folder / name)
    return folder


def _save(components: Components, report: dict[str, Any], out: Path) -> Path:
    """Write the diffusers folder, the report and the card into a temp folder, then swap it in."""
    out = out.expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        get_family("wan").pipeline(components).save_pretrained(tmp)
        (tmp / REPORT_NAME).write_text(json.dumps(report, indent=1) + "\n")
        (tmp / CARD_NAME).write_text(model_card(report))
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def retrain_command(cfg: dict[str, Any]) -> str:
    """The `qvgen train-teacher` command line that reproduces a run of config `cfg` (a JSON dump)."""
    defaults = json.loads(TeacherConfig().model_dump_json())
    args = []
    for key, value in cfg.items():
        if key in {"out", "work_dir"} or value == defaults[key]:
            continue
        args.append(f"--set {key}={value}")
    return " ".join(["qvgen train-teacher", *args])


def model_card(report: dict[str, Any]) -> str:
    """MODEL_CARD.md text from a training report: config, recipe, retrain command, measured quality."""
    q, cfg, t = report["quality"], report["config"], report["timings_s"]

    def row(name: str, s: dict[str, float]) -> str:
        return f"| {name} | {s['colour']:.3f} | {s['shape']:.3f} | {s['motion']:.3f} | {s['overall']:.3f} |"

    chance = q["chance"]
    sweep = "\n".join(row(g, s) for g, s in q.get("teacher_by_guidance", {}).items())
    note = (
        " (the quality check re-run on the saved weights by `qvgen train-teacher --evaluate-only`)"
        if report.get("evaluated_separately")
        else ""
    )
    return f"""# tiny_wan_teacher — a tiny Wan 2.1 text-to-video model of qvgen's procedural world

A diffusers folder for `WanPipeline` (WanTransformer3DModel, AutoencoderKLWan, UMT5EncoderModel, the
offline T5 tokenizer, UniPC flow scheduler) at the sizes of `qvgen.models`' tiny Wan factory, trained
on {cfg["frames"]}-frame {cfg["height"]}×{cfg["width"]} clips of qvgen.data's procedural world: one
shape (circle, square, triangle) in one of {len(COLOURS)} colours moving left, right, up or down over a
textured background, captioned "a <colour> <shape> moves <direction>". Load it with
`qvgen.models.get_family("wan").load(path)`.

## How it was trained (`qvgen.demo.teacher.train_teacher`)

1. VAE, AdamW with one one-cycle schedule per stage, {cfg["vae_crop"]}×{cfg["vae_crop"]} crops of
   {cfg["vae_clips"]} clips (three in four centred near the shape): {report["vae"]["images"]["steps"]} steps
   on single frames (batch {cfg["vae_image_batch_size"]}, peak lr {cfg["vae_lr"]}), then
   {report["vae"]["clips"]["steps"]} steps on whole clips (batch {cfg["vae_batch_size"]}, peak lr
   {cfg["vae_clip_lr"]}); loss L1 + L2 with shape pixels weighted ×{1 + cfg["vae_shape_weight"]:g}, KL
   weight {cfg["vae_kl_weight"]:g} (posterior log-variance bias started at −8). Its
   per-channel latent mean/std were then written into `vae/config.json` (`latents_mean`, `latents_std`).
2. The frozen VAE and the frozen, randomly initialised UMT5 encoder encoded {cfg["num_clips"]} clips
   (world seed {cfg["world_seed"]}) into qvgen.data latent shards (`{report["encoder"]}`).
3. Transformer ({report["transformer"]["steps"]} steps, batch {cfg["batch_size"]}, AdamW lr {cfg["lr"]},
   {cfg["warmup_steps"]} warm-up steps then cosine): Wan flow matching, x_t = (1−σ)·x0 + σ·ε, target
   ε − x0, σ uniform over the 1000 training sigmas, posterior-sampled latents, captions dropped to the
   empty prompt with p = {cfg["caption_dropout"]}; the EMA ({cfg["ema_decay"]}) weights were kept.

Wall time on a shared 2-core CPU, 1 thread: VAE {t["vae_s"]:.0f} s, shards {t["shards_s"]:.0f} s,
transformer {t["transformer_s"]:.0f} s, evaluation {t["eval_s"]:.0f} s, total {t["total_s"] / 60:.1f} min
(torch {report["versions"]["torch"]}).

Retrain (writes this folder; add `--out DIR` to write elsewhere):

```
{retrain_command(cfg)}
```

## Quality (prompt adherence, `qvgen.eval.adherence`)

Teacher: {len(q["prompts"])} balanced captions, one seed each (`eval_seed` {cfg["eval_seed"]} + i),
{cfg["num_inference_steps"]} UniPC steps, CFG {cfg["guidance_scale"]}. References: {cfg["eval_clips"]}
held-out ground-truth clips (world seed {cfg["eval_seed"]}) and their VAE reconstructions
(PSNR {q["vae_psnr_db"]:.2f} dB).

| videos | colour | shape | motion | overall |
| --- | --- | --- | --- | --- |
{row("teacher samples", q["teacher"])}
{row("ground truth", q["ground_truth"])}
{row("VAE reconstruction", q["vae_reconstruction"])}
| chance (random object) | {chance["colour"]:.3f} | {chance["shape"]:.3f} | {chance["motion"]:.3f} | — |

Teacher samples of the same captions and seeds at other guidance scales:

| CFG | colour | shape | motion | overall |
| --- | --- | --- | --- | --- |
{sweep}

Every number above comes from `{REPORT_NAME}` in this folder, written by the training run{note}.

## Config (`TeacherConfig`; `out` and `work_dir` left out)

```json
{json.dumps({k: v for k, v in cfg.items() if k not in {"out", "work_dir"}}, indent=1)}
```
"""


# --------------------------------------------------------------------------------------------- CLI


def add_cli(subparsers: Any) -> None:
    """Register `qvgen train-teacher` on the `qvgen` command's subparsers."""
    p = subparsers.add_parser(
        "train-teacher",
        help="train the tiny Wan teacher on the procedural world (VAE, latent shards, transformer)",
        description="Train the embedded tiny Wan teacher and write it as a diffusers folder with a model card.",
    )
    p.add_argument("--out", type=Path, default=None, help="output folder (default: the embedded teacher)")
    p.add_argument(
        "--work-dir", type=Path, default=None, help="folder for the latent shards (default: temporary)"
    )
    p.add_argument("--minutes", type=float, default=None, help="wall-clock cap; phases stop early when spent")
    p.add_argument("--steps", type=int, default=None, help="transformer steps (default: TeacherConfig.steps)")
    p.add_argument("--vae-steps", type=int, default=None, help="VAE steps (default: TeacherConfig.vae_steps)")
    p.add_argument(
        "--evaluate-only", action="store_true",
        help="re-run only the quality check of the teacher in --out (with --set evaluation settings)",
    )  # fmt: skip
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="any other TeacherConfig field, e.g. --set batch_size=16 (repeatable)",
    )  # fmt: skip


def config_from_args(args: Any) -> TeacherConfig:
    """`TeacherConfig` from parsed `train-teacher` arguments (``--set`` values are JSON or plain strings).

    Bad keys or values raise pydantic's `ValidationError`, naming the field.
    """
    values: dict[str, Any] = {}
    for item in args.overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        try:  # JSON where it parses (numbers, booleans, lists), else the plain string
            values[key.strip()] = json.loads(raw)
        except ValueError:
            values[key.strip()] = raw.strip()
    for key in ("out", "work_dir", "minutes", "steps", "vae_steps"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    return TeacherConfig.model_validate(values)


def cli_main(cfg: TeacherConfig, evaluate_only: bool = False) -> int:
    """Run `qvgen train-teacher` for `cfg` (or only its quality check); prints the folder and adherence."""
    if evaluate_only:
        changes = {k: getattr(cfg, k) for k in cfg.model_fields_set & EVAL_FIELDS}
        out = reevaluate_teacher(cfg.out, **changes)
    else:
        out = train_teacher(cfg)
    quality = json.loads((out / REPORT_NAME).read_text())["quality"]
    print(f"qvgen train-teacher: wrote {out}")
    print("adherence " + " ".join(f"{k}={v:.3f}" for k, v in quality["teacher"].items()))
    return 0
