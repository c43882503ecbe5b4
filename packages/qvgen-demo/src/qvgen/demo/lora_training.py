"""A real LoRA for the tiny Wan teacher (issue 35): every object drawn in one colour, captions unchanged.

`train_colour_lora(LoraTrainConfig(out=...))`:
1. procedural clips of a world no other set draws from (`LORA_WORLD_SEED`), in the teacher's own look, whose
   objects are recoloured to `colour` while each caption keeps its original colour words (`recolour`);
2. frames and captions encoded by the teacher's VAE + UMT5 (in memory);
3. a PEFT LoRA (rank `rank`) on the transformer's attention and FFN Linears, trained alone with Wan flow
   matching (qvgen.models' `sample_timesteps` / `noised_inputs` / `predict`, caption dropout for CFG);
4. saved in the diffusers format (`WanPipeline.save_lora_weights`: ``transformer.``-prefixed PEFT keys in
   ``pytorch_lora_weights.safetensors``), loadable by ``pipe.load_lora_weights`` on the teacher, and on
   `qvgen.models.load_pipeline` / `load_student` pipelines (W4A4 deploy and fake-quant).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn
from tqdm.auto import tqdm

from qvgen.core import Frozen, atomic_write_text
from qvgen.data import COLOURS, ProceduralClip, render
from qvgen.demo.teacher_config import DEFAULT_TEACHER_DIR

LORA_WORLD_SEED = 6000
"""World seed of the LoRA's training clips (the teacher trained on 1000, the demo on 4000, prompts: 5000)."""
LORA_WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
"""The file diffusers' `save_lora_weights` writes and `load_lora_weights(folder)` reads."""
LORA_REPORT_NAME = "lora_training.json"
DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2")
"""PEFT target module names: every attention (self and cross) projection and both FFN Linears of each block."""


class LoraTrainConfig(Frozen):
    """`train_colour_lora`: a LoRA that draws every object in `colour` whatever colour the caption says."""

    out: Path
    """Output folder: the LoRA (diffusers format) and `lora_training.json`."""
    teacher: Path = DEFAULT_TEACHER_DIR
    colour: str = "red"
    """The palette colour (qvgen.data `COLOURS`) every object of the training clips is drawn in."""
    rank: Annotated[int, Field(ge=1)] = 8
    alpha: Annotated[int, Field(ge=1)] | None = None
    """LoRA alpha; None: `rank` (scale 1)."""
    targets: tuple[str, ...] = DEFAULT_TARGETS
    steps: Annotated[int, Field(ge=0)] = 300
    batch_size: Annotated[int, Field(ge=1)] = 8
    lr: Annotated[float, Field(gt=0)] = 1e-3
    num_clips: Annotated[int, Field(ge=1)] = 256
    """Procedural training clips (encoded once, in memory)."""
    caption_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1
    """Share of captions replaced by the empty prompt, so the unconditional branch of CFG learns it too."""
    flow_shift: Annotated[float, Field(gt=0)] = 3.0
    """σ shift of the training timesteps (the teacher's fine-tune and sampling shift: more high-noise steps,
    where a sample's colours are laid down)."""
    world_seed: int = LORA_WORLD_SEED
    seed: int = 0
    progress: bool = True

    @field_validator("colour")
    @classmethod
    def _known_colour(cls, v: str) -> str:
        if v not in COLOURS:
            raise ValueError(f"colour {v!r} is not a palette colour; choose one of {sorted(COLOURS)}")
        return v


def recolour(clip: ProceduralClip, colour: str) -> torch.Tensor:
    """`clip`'s frames (3, F, H, W) in [-1, 1] with every object's pixels drawn in `colour` (background kept)."""
    _, _, height, width = clip.frames.shape
    below = torch.full((3, height, width), -1.0)  # → -3 after render's scaling: marks the objects' pixels
    mask = (render(clip.objects, below) > -2.5).any(0)  # (F, H, W)
    paint = torch.tensor(COLOURS[colour], dtype=torch.float32) / 255.0 * 2.0 - 1.0
    frames = clip.frames.clone()
    frames[:, mask] = paint[:, None]
    return frames


def lora_clips(cfg: LoraTrainConfig) -> list[ProceduralClip]:
    """Clips 0..num_clips-1 of world `world_seed` in the teacher's look, objects recoloured, captions kept."""
    from qvgen.demo.flow import teacher_clip_shape, teacher_max_objects, teacher_world_style
    from qvgen.demo.world import ClipShape, world_clip

    frames, height, width = teacher_clip_shape(cfg.teacher)
    shape = ClipShape(frames, height, width, teacher_world_style(cfg.teacher))
    max_objects = teacher_max_objects(cfg.teacher)
    clips = [world_clip(cfg.world_seed, i, shape, max_objects=max_objects) for i in range(cfg.num_clips)]
    return [replace(c, frames=recolour(c, cfg.colour)) for c in clips]


def add_lora_(transformer: nn.Module, cfg: LoraTrainConfig) -> list[nn.Parameter]:
    """A fresh PEFT adapter ("default") on `transformer`; freezes everything else; returns the LoRA parameters."""
    from peft import LoraConfig

    transformer.requires_grad_(False)
    config = LoraConfig(
        r=cfg.rank, lora_alpha=cfg.alpha or cfg.rank, target_modules=list(cfg.targets), init_lora_weights=True
    )
    transformer.add_adapter(config)  # type: ignore[operator]
    params = [p for n, p in transformer.named_parameters() if "lora_" in n]
    if not params:
        raise ValueError(f"targets {cfg.targets} matched no Linear of the transformer")
    for p in params:
        p.requires_grad_(True)
    return params


def train_colour_lora(cfg: LoraTrainConfig) -> Path:
    """Train the LoRA of `cfg` on the teacher and save it in `cfg.out`; returns the safetensors file."""
    from diffusers import WanPipeline
    from peft.utils import get_peft_model_state_dict

    from qvgen.models import WanSpec, get_family

    started = time.monotonic()
    torch.manual_seed(cfg.seed)
    family = get_family("wan")
    components = family.load(cfg.teacher, dtype="float32")
    encoder = family.encoder(components)
    clips = lora_clips(cfg)
    with torch.no_grad():
        latents = torch.cat(
            [
                encoder.encode_videos(torch.stack([c.frames for c in clips[i : i + 16]])).mean
                for i in range(0, len(clips), 16)
            ]
        )
        vae: Any = components.vae
        latents = family.normalize_latents(latents, vae.config)
        text = encoder.encode_prompts([c.caption for c in clips])
        empty = encoder.encode_prompts([""])
    transformer = components.transformer
    params = add_lora_(transformer, cfg)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    spec = WanSpec(train_flow_shift=cfg.flow_shift)
    gen = torch.Generator().manual_seed(cfg.seed)
    transformer.train()
    losses: list[float] = []
    bar = tqdm(total=cfg.steps, desc="colour LoRA", unit="step", disable=not cfg.progress)
    for _ in range(cfg.steps):
        idx = torch.randint(0, len(clips), (cfg.batch_size,), generator=gen)
        x0 = latents[idx]
        noise = torch.randn(x0.shape, generator=gen)
        t = family.sample_timesteps(cfg.batch_size, gen, spec)
        x = family.noised_inputs(x0, noise, t)
        drop = torch.rand(cfg.batch_size, generator=gen) < cfg.caption_dropout
        embeddings = torch.where(drop[:, None, None], empty.embeddings, text.embeddings[idx])
        lengths = torch.where(drop, empty.lengths, text.lengths[idx])
        loss = F.mse_loss(family.predict(transformer, x, embeddings, lengths), x.target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    bar.close()
    transformer.eval()
    cfg.out.mkdir(parents=True, exist_ok=True)
    state = get_peft_model_state_dict(transformer)
    WanPipeline.save_lora_weights(str(cfg.out), transformer_lora_layers=state, safe_serialization=True)
    report: dict[str, Any] = {
        "schema_version": 1,
        "config": cfg.model_dump(mode="json"),
        "loss_first_10": round(sum(losses[:10]) / max(len(losses[:10]), 1), 5),
        "loss_last_10": round(sum(losses[-10:]) / max(len(losses[-10:]), 1), 5),
        "seconds": round(time.monotonic() - started, 1),
    }
    atomic_write_text(cfg.out / LORA_REPORT_NAME, json.dumps(report, indent=2) + "\n")
    return cfg.out / LORA_WEIGHTS_NAME
