"""The teacher's procedural world: training clips, held-out evaluation sets, lossless latent shards.

Frames go from `qvgen.data.make_clip` straight into the VAE and the shard writer (no video file in
between), so two builds of the same world give the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from qvgen.data import (
    COLOURS,
    DEFAULT_STYLE,
    DIRECTIONS,
    SHAPES,
    EncodedSample,
    ProceduralClip,
    ShapeName,
    WorldStyle,
    WriterConfig,
    make_clip,
    render,
    write_shards,
)
from qvgen.models import Components, get_family


@dataclass(frozen=True)
class ClipShape:
    """Frames, height and width of the world's clips, and how the world looks."""

    frames: int = 9
    height: int = 64
    width: int = 64
    style: WorldStyle = DEFAULT_STYLE


def world_clip(seed: int, index: int, shape: ClipShape, *, max_objects: int = 2,
               num_objects: int | None = None) -> ProceduralClip:  # fmt: skip
    """Clip `index` of world `seed` at `shape`."""
    return make_clip(
        seed, index, frames=shape.frames, height=shape.height, width=shape.width,
        max_objects=max_objects, num_objects=num_objects, style=shape.style,
    )  # fmt: skip


def heldout_clips(seed: int, shape: ClipShape, one_object: int, two_object: int) -> list[ProceduralClip]:
    """`one_object` one-object clips then `two_object` two-object clips of world `seed`."""
    return [
        world_clip(seed, i, shape, num_objects=1 if i < one_object else 2)
        for i in range(one_object + two_object)
    ]


def balanced_captions(n: int, shapes: Sequence[ShapeName] = SHAPES) -> list[str]:
    """`n` one-object captions cycling colours, `shapes` and directions independently (all 84 by n=84)."""
    colours, directions = list(COLOURS), list(DIRECTIONS)
    clips = []
    for i in range(n):
        colour = colours[i % len(colours)]
        article = "an" if colour[0] in "aeiou" else "a"
        clips.append(f"{article} {colour} {shapes[i % len(shapes)]} moves {directions[i % len(directions)]}")
    return clips


def unit_frames(frames: Tensor) -> np.ndarray:
    """(3, F, H, W) in [-1, 1] → (F, H, W, 3) in [0, 1] (what `qvgen.eval` scores)."""
    return ((frames.clamp(-1, 1).permute(1, 2, 3, 0) + 1) / 2).numpy()


@dataclass(frozen=True)
class ClipPool:
    """Clips (N, 3, F, H, W) in [-1, 1], object masks (N, 1, F, H, W), object centre tracks (N, F, 2)."""

    videos: Tensor
    masks: Tensor
    centres: Tensor


def clip_pool(seed: int, n: int, shape: ClipShape, max_objects: int) -> ClipPool:
    """The first `n` clips of world `seed`; each clip's centre track follows one of its objects at random."""
    clips = [world_clip(seed, i, shape, max_objects=max_objects) for i in range(n)]
    # The same objects drawn over a background of -1 (→ -3 after render's scaling) mark their pixels.
    below = torch.full((3, shape.height, shape.width), -1.0)
    masks = torch.stack([(render(c.objects, below) > -2.5).any(0, keepdim=True) for c in clips])
    rng = np.random.default_rng([seed, n])
    centres = torch.stack([c.objects[int(rng.integers(len(c.objects)))].centroids for c in clips])
    return ClipPool(torch.stack([c.frames for c in clips]), masks.float(), centres)


def write_world_shards(
    components: Components, seed: int, num_clips: int, shape: ClipShape, shard_dir: Path, *,
    max_objects: int = 2, batch: int = 16, progress: bool = True,
) -> str:  # fmt: skip
    """Encode clips 0..num_clips-1 of world `seed` with the Wan VAE + UMT5 of `components` into qvgen.data
    latent shards in `shard_dir` (frames rendered in memory, no video file); returns the encoder name."""
    encoder = get_family("wan").encoder(components)

    def samples() -> Iterator[EncodedSample]:
        starts = range(0, num_clips, batch)
        for start in tqdm(starts, desc="teacher latents", unit="batch", disable=not progress):
            clips = [
                world_clip(seed, i, shape, max_objects=max_objects)
                for i in range(start, min(start + batch, num_clips))
            ]
            moments = encoder.encode_videos(torch.stack([c.frames for c in clips]))
            text = encoder.encode_prompts([c.caption for c in clips])
            for j, clip in enumerate(clips):
                yield EncodedSample(
                    id=f"{seed}-{start + j:06d}",
                    caption=clip.caption,
                    latents_mean=moments.mean[j],
                    latents_logvar=None if moments.logvar is None else moments.logvar[j],
                    text_embeddings=text.embeddings[j],
                    text_length=int(text.lengths[j]),
                    video_shape=(shape.frames, shape.height, shape.width),
                )

    writer = WriterConfig(samples_per_shard=256, latent_dtype="float32", text_dtype="float32", family="wan")
    write_shards(samples(), shard_dir, writer, encoder_name=encoder.name)
    return encoder.name
