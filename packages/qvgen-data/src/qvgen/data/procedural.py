"""A procedural video world: coloured shapes moving over textured backgrounds, with matching captions.

Every clip is a pure function of (seed, index), so a test or a metric can regenerate the ground truth
(shape, colour, direction, per-frame centroids, pixels) of any clip it finds on disk.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, get_args

import av
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

ShapeName = Literal["circle", "square", "triangle"]
Direction = Literal["left", "right", "up", "down"]
SHAPES: Final[tuple[ShapeName, ...]] = get_args(ShapeName)
DIRECTIONS: Final[dict[Direction, tuple[float, float]]] = {
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
}
COLOURS: Final[dict[str, tuple[int, int, int]]] = {
    "red": (230, 30, 30),
    "green": (30, 200, 40),
    "blue": (40, 70, 240),
    "yellow": (240, 220, 30),
    "purple": (170, 40, 210),
    "orange": (250, 140, 20),
    "white": (250, 250, 250),
}


@dataclass(frozen=True, slots=True)
class MovingShape:
    """One object: what it is and where its centroid is on every frame ((F, 2) pixels, x then y)."""

    shape: ShapeName
    colour: str
    direction: Direction
    radius: float
    centroids: Tensor

    @property
    def phrase(self) -> str:
        return f"a {self.colour} {self.shape} moves {self.direction}"


@dataclass(frozen=True, slots=True)
class ProceduralClip:
    """A rendered clip: its objects, caption and frames (3, F, H, W) float32 in [-1, 1]."""

    objects: tuple[MovingShape, ...]
    caption: str
    frames: Tensor


def caption_for(objects: Sequence[MovingShape]) -> str:
    """ "a red square moves left", objects joined with " and "."""
    return " and ".join(o.phrase for o in objects)


def sample_objects(
    rng: np.random.Generator, *, count: int, frames: int, height: int, width: int
) -> tuple[MovingShape, ...]:
    """Draw `count` objects with distinct (colour, shape) pairs whose whole path stays inside the frame."""
    objects: list[MovingShape] = []
    used: set[tuple[str, str]] = set()
    colours = list(COLOURS)
    directions = list(DIRECTIONS)
    while len(objects) < count:
        shape = SHAPES[rng.integers(len(SHAPES))]
        colour = colours[rng.integers(len(colours))]
        if (colour, shape) in used:
            continue
        used.add((colour, shape))
        direction = directions[rng.integers(len(directions))]
        radius = float(rng.uniform(0.10, 0.16) * min(height, width))
        dx, dy = DIRECTIONS[direction]
        extent = width if dx else height
        travel = float(rng.uniform(0.35, 0.5)) * (extent - 2 * radius)
        lo_x, hi_x = radius + max(0.0, -dx * travel), width - radius - max(0.0, dx * travel)
        lo_y, hi_y = radius + max(0.0, -dy * travel), height - radius - max(0.0, dy * travel)
        start = torch.tensor([rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y)], dtype=torch.float32)
        steps = torch.linspace(0.0, 1.0, frames, dtype=torch.float32)[:, None]
        centroids = start + steps * travel * torch.tensor([dx, dy], dtype=torch.float32)
        objects.append(MovingShape(shape, colour, direction, radius, centroids))
    return tuple(objects)


def textured_background(rng: np.random.Generator, height: int, width: int) -> Tensor:
    """A static, muted background (3, H, W) in [0, 1]: smooth colour blobs plus fine grain."""
    coarse = torch.from_numpy(rng.uniform(0.15, 0.45, size=(1, 3, 6, 6)).astype(np.float32))
    smooth = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)[0]
    grain = torch.from_numpy(rng.normal(0.0, 0.03, size=(1, height, width)).astype(np.float32))
    return (smooth + grain).clamp(0.0, 1.0)


def shape_mask(shape: ShapeName, centre: Tensor, radius: float, height: int, width: int) -> Tensor:
    """Boolean (H, W) mask of one shape whose centroid is `centre` (x, y)."""
    ys = torch.arange(height, dtype=torch.float32)[:, None] + 0.5
    xs = torch.arange(width, dtype=torch.float32)[None, :] + 0.5
    dx, dy = xs - centre[0], ys - centre[1]
    match shape:
        case "circle":
            return dx**2 + dy**2 <= radius**2
        case "square":
            return (dx.abs() <= radius) & (dy.abs() <= radius)
        case "triangle":  # apex up, centroid at 2/3 of the height below the apex
            h = 2.0 * radius
            top, bottom = -2.0 * h / 3.0, h / 3.0
            inside_y = (dy >= top) & (dy <= bottom)
            return inside_y & (dx.abs() <= radius * (dy - top) / h)


def render(objects: Sequence[MovingShape], background: Tensor) -> Tensor:
    """Frames (3, F, H, W) in [-1, 1]: `background` (3, H, W) in [0, 1] with the objects drawn in order."""
    _, height, width = background.shape
    n_frames = objects[0].centroids.shape[0] if objects else 1
    out = background[:, None].repeat(1, n_frames, 1, 1)
    for obj in objects:
        colour = torch.tensor(COLOURS[obj.colour], dtype=torch.float32)[:, None] / 255.0
        for f in range(n_frames):
            mask = shape_mask(obj.shape, obj.centroids[f], obj.radius, height, width)
            out[:, f][:, mask] = colour
    return out * 2.0 - 1.0


def make_clip(
    seed: int, index: int, *, frames: int = 17, height: int = 64, width: int = 64, max_objects: int = 2
) -> ProceduralClip:
    """Clip `index` of the world `seed`: 1..max_objects objects on a textured background, deterministic."""
    if frames < 2 or height < 16 or width < 16 or max_objects < 1:
        raise ValueError(
            f"make_clip needs frames >= 2, height/width >= 16, max_objects >= 1; "
            f"got frames={frames} height={height} width={width} max_objects={max_objects}"
        )
    rng = np.random.default_rng([seed, index])
    count = int(rng.integers(1, max_objects + 1))
    objects = sample_objects(rng, count=count, frames=frames, height=height, width=width)
    frames_t = render(objects, textured_background(rng, height, width))
    return ProceduralClip(objects=objects, caption=caption_for(objects), frames=frames_t)


def encode_mp4(frames: Tensor, fps: int = 8) -> bytes:
    """H.264 mp4 bytes of frames (3, F, H, W) in [-1, 1] (H and W even), near-lossless (crf 4)."""
    _, n, height, width = frames.shape
    pixels = ((frames.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).numpy()
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "4", "threads": "1"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv444p"
        for i in range(n):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels[i], format="rgb24")))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def write_procedural_dataset(
    out_dir: str | Path,
    n: int,
    *,
    seed: int,
    frames: int = 17,
    height: int = 64,
    width: int = 64,
    max_objects: int = 2,
    fps: int = 8,
) -> Path:
    """Write clips 0..n-1 of world `seed` as `videos/<i>.mp4` plus `captions.csv`; return the csv path.

    The csv has the OpenVid-1M columns `video` (relative path) and `caption`, plus `seed` and `index`
    so `make_clip(seed, index, ...)` regenerates each clip's ground truth.
    """
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        clip = make_clip(seed, i, frames=frames, height=height, width=width, max_objects=max_objects)
        rel = f"videos/{i:06d}.mp4"
        _atomic_write(out / rel, encode_mp4(clip.frames, fps=fps))
        rows.append({"video": rel, "caption": clip.caption, "seed": seed, "index": i})
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=["video", "caption", "seed", "index"])
    writer.writeheader()
    writer.writerows(rows)
    _atomic_write(out / "captions.csv", table.getvalue().encode())
    return out / "captions.csv"


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
