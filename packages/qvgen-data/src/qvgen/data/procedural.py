"""A procedural video world: coloured shapes moving over textured backgrounds, with matching captions.

Every clip is a pure function of (seed, index), so a test or a metric can regenerate the ground truth
(shape, colour, direction, per-frame centroids, pixels) of any clip it finds on disk.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from qvgen.core import atomic_write_bytes
from qvgen.data.video import encode_video

ShapeName = Literal["circle", "square", "triangle", "bar", "column"]
ShapeSet = Literal["outline", "elongated"]
SHAPE_SETS: Final[dict[ShapeSet, tuple[ShapeName, ...]]] = {
    "outline": ("circle", "square", "triangle"),
    "elongated": ("circle", "bar", "column"),
}
"""The shapes a world draws. "outline": shapes that differ in their outline only (a square's corners are
about 2 % of a 64×64 frame). "elongated": a disc, a horizontal bar and a vertical column, which differ in
their extent (aspect ratio 1, 2.5 and 0.4) and so at the scale of a tiny transformer's tokens."""
SHAPES: Final[tuple[ShapeName, ...]] = SHAPE_SETS["outline"]
"""The default world's shapes."""
ALL_SHAPES: Final[tuple[ShapeName, ...]] = get_args(ShapeName)
"""Every shape word of the caption grammar (all worlds)."""
ELONGATION: Final = (1.25, 0.5)
"""Half-extents of a bar (along, across) as multiples of its radius: a 2.5 r × r rectangle."""
Direction = Literal["left", "right", "up", "down"]
DIRECTIONS: Final[dict[Direction, tuple[float, float]]] = {
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
}
COLOURS: Final[dict[str, tuple[int, int, int]]] = {
    "red": (225, 25, 25),
    "green": (30, 190, 50),
    "blue": (30, 70, 250),
    "yellow": (245, 230, 30),
    "purple": (190, 30, 200),
    "orange": (255, 135, 0),
    "white": (250, 250, 250),
}
"""The palette (RGB 0..255). Every pair lies at least 100 apart (blue–purple about 170)."""
RADIUS_FRACTION: Final[tuple[float, float]] = (0.12, 0.17)
"""Object radius range as a fraction of min(H, W) (a 64×64 frame: 7.7–10.9 px, i.e. 2–2.7 latent pixels
of a 4× VAE)."""
TRAVEL_FRACTION: Final[tuple[float, float]] = (0.35, 0.5)
"""Centroid travel over a clip, as a fraction of the room left along the direction of motion."""
MIN_GAP: Final = 2.0
"""Pixels kept free between the bounding boxes of two objects on every frame."""
RESTARTS: Final = 50
"""Times `sample_objects` starts a set of objects afresh when the last one finds no room."""
PLAIN_GREY: Final = 0.3
"""Level (0..1, all three channels) of the plain background: far from every palette colour."""
Background = Literal["textured", "plain"]
Layout = Literal["random", "lanes"]
LANE_TRAVEL: Final[tuple[float, float]] = (0.6, 0.8)
"""Centroid travel in the "lanes" layout, as a fraction of the room left along the direction of motion."""
LANE_JITTER: Final = 0.05
"""Largest offset of a "lanes" object from its anchor, as a fraction of min(H, W)."""
LANE_SHRINK: Final = 0.75
"""Radius factor of the objects of a two-object clip in the "lanes" layout (two lanes share the frame)."""


@dataclass(frozen=True, slots=True)
class WorldStyle:
    """How a world looks: its background and the size of its objects (the default: textured, small)."""

    background: Background = "textured"
    radius_fraction: tuple[float, float] = RADIUS_FRACTION
    """Object radius range as a fraction of min(H, W)."""
    layout: Layout = "random"
    """Where objects go. "random": anywhere their path fits (rejection sampling keeps two apart). "lanes":
    the i-th of n objects lives in the i-th of n horizontal bands of the frame (first clause on top), starts
    at the back of its motion and sits across it near the band's middle (offsets up to `LANE_JITTER`), and
    travels `LANE_TRAVEL` of its room; a caption then fixes its clip up to small offsets and sizes."""
    lane_shrink: float = LANE_SHRINK
    """Radius factor of the objects of a two-object "lanes" clip (two bands share the frame height, so large
    objects must shrink to leave room for vertical motion)."""
    shapes: ShapeSet = "outline"
    """Which shapes the world draws (`SHAPE_SETS`)."""

    def __post_init__(self) -> None:
        lo, hi = self.radius_fraction
        if not 0.02 <= lo <= hi <= 0.3:
            raise ValueError(
                f"WorldStyle.radius_fraction must satisfy 0.02 <= lo <= hi <= 0.3; got {(lo, hi)}"
            )
        if not 0.25 <= self.lane_shrink <= 1.0:
            raise ValueError(f"WorldStyle.lane_shrink must lie in [0.25, 1]; got {self.lane_shrink}")


DEFAULT_STYLE: Final = WorldStyle()
"""The default world's look: textured background, radii `RADIUS_FRACTION`."""


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
        article = "an" if self.colour[0] in "aeiou" else "a"
        return f"{article} {self.colour} {self.shape} moves {self.direction}"

    def extents(self) -> tuple[float, float, float, float]:
        """Bounding box around the centroid: (left, right, up, down) in pixels."""
        r = self.radius
        if self.shape == "triangle":
            return (r, r, 4.0 * r / 3.0, 2.0 * r / 3.0)
        half_w, half_h = half_size(self.shape, r)
        return (half_w, half_w, half_h, half_h)


@dataclass(frozen=True, slots=True)
class ProceduralClip:
    """A rendered clip: its objects, caption and frames (3, F, H, W) float32 in [-1, 1]."""

    objects: tuple[MovingShape, ...]
    caption: str
    frames: Tensor


def caption_for(objects: Sequence[MovingShape]) -> str:
    """ "a red square moves left", objects joined with " and "."""
    return " and ".join(o.phrase for o in objects)


def _apart(a: MovingShape, b: MovingShape) -> bool:
    """Whether the bounding boxes of `a` and `b` stay at least `MIN_GAP` apart on every frame."""
    al, ar, au, ad = a.extents()
    bl, br, bu, bd = b.extents()
    ax, ay = a.centroids[:, 0], a.centroids[:, 1]
    bx, by = b.centroids[:, 0], b.centroids[:, 1]
    gap_x = torch.maximum(bx - bl - (ax + ar), ax - al - (bx + br))
    gap_y = torch.maximum(by - bu - (ay + ad), ay - au - (by + bd))
    return bool((torch.maximum(gap_x, gap_y) >= MIN_GAP).all())


def _draw_kind(
    rng: np.random.Generator, colours: list[str], shapes: tuple[ShapeName, ...]
) -> tuple[ShapeName, str, Direction]:
    """What an object is (one of `shapes`, one of `colours`, direction), drawn in that order."""
    shape = shapes[rng.integers(len(shapes))]
    colour = colours[rng.integers(len(colours))]
    directions = list(DIRECTIONS)
    return shape, colour, directions[rng.integers(len(directions))]


def _draw_object(
    rng: np.random.Generator, frames: int, height: int, width: int, radius_fraction: tuple[float, float],
    shapes: tuple[ShapeName, ...],
) -> MovingShape:  # fmt: skip
    shape, colour, direction = _draw_kind(rng, list(COLOURS), shapes)
    radius = float(rng.uniform(*radius_fraction) * min(height, width))
    left, right, up, down = MovingShape(shape, colour, direction, radius, torch.zeros(1, 2)).extents()
    dx, dy = DIRECTIONS[direction]
    room = width - left - right if dx else height - up - down
    travel = float(rng.uniform(*TRAVEL_FRACTION)) * room
    lo_x, hi_x = left + max(0.0, -dx * travel), width - right - max(0.0, dx * travel)
    lo_y, hi_y = up + max(0.0, -dy * travel), height - down - max(0.0, dy * travel)
    start = torch.tensor([rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y)], dtype=torch.float32)
    steps = torch.linspace(0.0, 1.0, frames, dtype=torch.float32)[:, None]
    centroids = start + steps * travel * torch.tensor([dx, dy], dtype=torch.float32)
    return MovingShape(shape, colour, direction, radius, centroids)


def _lane_object(
    rng: np.random.Generator, frames: int, width: int, band: tuple[float, float], radius: float,
    taken: set[str], shapes: tuple[ShapeName, ...],
) -> MovingShape:  # fmt: skip
    """One object of the "lanes" layout inside the horizontal band (top, bottom) pixels."""
    shape, colour, direction = _draw_kind(rng, [c for c in COLOURS if c not in taken], shapes)
    left, right, up, down = MovingShape(shape, colour, direction, radius, torch.zeros(1, 2)).extents()
    top, bottom = band
    dx, dy = DIRECTIONS[direction]
    jitter = LANE_JITTER * min(width, bottom - top)
    # along the motion: from the back of the room; across it: the middle of the band or of the width
    lo_along, hi_along = (left, width - right) if dx else (top + up, bottom - down)
    lo_across, hi_across = (top + up, bottom - down) if dx else (left, width - right)
    if hi_along <= lo_along or hi_across < lo_across:
        raise ValueError(f"an object of radius {radius:.1f} px does not fit a band of {bottom - top:.1f} px")
    room = hi_along - lo_along
    travel = float(rng.uniform(*LANE_TRAVEL)) * room
    back = float(rng.uniform(0.0, min(jitter, room - travel)))
    start_along = lo_along + back if (dx or dy) > 0 else hi_along - back
    middle = (lo_across + hi_across) / 2.0
    across = min(max(middle + float(rng.uniform(-jitter, jitter)), lo_across), hi_across)
    start = torch.tensor([start_along, across] if dx else [across, start_along], dtype=torch.float32)
    steps = torch.linspace(0.0, 1.0, frames, dtype=torch.float32)[:, None]
    centroids = start + steps * travel * torch.tensor([dx, dy], dtype=torch.float32)
    return MovingShape(shape, colour, direction, radius, centroids)


def lane_objects(
    rng: np.random.Generator, *, count: int, frames: int, height: int, width: int,
    radius_fraction: tuple[float, float], lane_shrink: float = LANE_SHRINK,
    shapes: tuple[ShapeName, ...] = SHAPES,
) -> tuple[MovingShape, ...]:  # fmt: skip
    """`count` objects of distinct colours in the "lanes" layout (see `WorldStyle.layout`); never touching."""
    if count > len(COLOURS):
        raise ValueError(f"at most {len(COLOURS)} objects of distinct colours fit the palette; got {count}")
    shrink = 1.0 if count == 1 else lane_shrink
    band = (height - (count - 1) * MIN_GAP) / count
    objects: list[MovingShape] = []
    for i in range(count):
        top = i * (band + MIN_GAP)
        radius = float(rng.uniform(*radius_fraction)) * min(height, width) * shrink
        objects.append(
            _lane_object(rng, frames, width, (top, top + band), radius, {o.colour for o in objects}, shapes)
        )
    return tuple(objects)


def sample_objects(
    rng: np.random.Generator,
    *,
    count: int,
    frames: int,
    height: int,
    width: int,
    max_tries: int = 1000,
    radius_fraction: tuple[float, float] = RADIUS_FRACTION,
    shapes: tuple[ShapeName, ...] = SHAPES,
) -> tuple[MovingShape, ...]:
    """Draw `count` objects of distinct colours whose whole path stays inside the frame and whose bounding
    boxes never come closer than `MIN_GAP` pixels (rejection sampling, deterministic for a given `rng`)."""
    if count > len(COLOURS):
        raise ValueError(f"at most {len(COLOURS)} objects of distinct colours fit the palette; got {count}")
    # Large objects can leave no room for the next one: then the whole set is drawn again (`RESTARTS` times).
    for _ in range(RESTARTS + 1):
        objects: list[MovingShape] = []
        for _ in range(max_tries):
            if len(objects) == count:
                break
            obj = _draw_object(rng, frames, height, width, radius_fraction, shapes)
            if all(obj.colour != o.colour and _apart(obj, o) for o in objects):
                objects.append(obj)
        if len(objects) == count:
            return tuple(objects)
    raise ValueError(f"cannot place {count} separate objects in a {height}×{width} frame")


def textured_background(rng: np.random.Generator, height: int, width: int) -> Tensor:
    """A static, muted background (3, H, W) in [0, 1]: smooth colour blobs plus fine grain."""
    coarse = torch.from_numpy(rng.uniform(0.15, 0.45, size=(1, 3, 6, 6)).astype(np.float32))
    smooth = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)[0]
    grain = torch.from_numpy(rng.normal(0.0, 0.03, size=(1, height, width)).astype(np.float32))
    return (smooth + grain).clamp(0.0, 1.0)


def half_size(shape: ShapeName, radius: float) -> tuple[float, float]:
    """Half width and half height of a shape's bounding box, centred on its centroid (a triangle's is not)."""
    along, across = ELONGATION[0] * radius, ELONGATION[1] * radius
    return {"bar": (along, across), "column": (across, along)}.get(shape, (radius, radius))


def shape_mask(shape: ShapeName, centre: Tensor, radius: float, height: int, width: int) -> Tensor:
    """Boolean (H, W) mask of one shape whose centroid is `centre` (x, y)."""
    ys = torch.arange(height, dtype=torch.float32)[:, None] + 0.5
    xs = torch.arange(width, dtype=torch.float32)[None, :] + 0.5
    dx, dy = xs - centre[0], ys - centre[1]
    match shape:
        case "circle":
            return dx**2 + dy**2 <= radius**2
        case "square" | "bar" | "column":
            half_w, half_h = half_size(shape, radius)
            return (dx.abs() <= half_w) & (dy.abs() <= half_h)
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
    seed: int,
    index: int,
    *,
    frames: int = 17,
    height: int = 64,
    width: int = 64,
    max_objects: int = 2,
    num_objects: int | None = None,
    style: WorldStyle = DEFAULT_STYLE,
) -> ProceduralClip:
    """Clip `index` of the world `seed`: 1..max_objects objects (or exactly `num_objects`) on the background
    of `style`, deterministic."""
    if (
        frames < 2
        or height < 16
        or width < 16
        or max_objects < 1
        or (num_objects is not None and num_objects < 1)
    ):
        raise ValueError(
            f"make_clip needs frames >= 2, height/width >= 16, max_objects >= 1, num_objects >= 1; "
            f"got frames={frames} height={height} width={width} max_objects={max_objects} "
            f"num_objects={num_objects}"
        )
    rng = np.random.default_rng([seed, index])
    drawn = int(rng.integers(1, max_objects + 1))
    count = drawn if num_objects is None else num_objects
    size = {"count": count, "frames": frames, "height": height, "width": width}
    shapes = SHAPE_SETS[style.shapes]
    if style.layout == "lanes":
        objects = lane_objects(
            rng, **size, radius_fraction=style.radius_fraction, lane_shrink=style.lane_shrink, shapes=shapes
        )
    else:
        objects = sample_objects(rng, **size, radius_fraction=style.radius_fraction, shapes=shapes)
    if style.background == "plain":
        background = torch.full((3, height, width), PLAIN_GREY)
    else:
        background = textured_background(rng, height, width)
    frames_t = render(objects, background)
    return ProceduralClip(objects=objects, caption=caption_for(objects), frames=frames_t)


def encode_mp4(frames: Tensor, fps: int = 8) -> bytes:
    """H.264 mp4 bytes of frames (3, F, H, W) in [-1, 1], near-lossless (crf 4, full-resolution colour)."""
    pixels = ((frames.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).numpy()
    return encode_video(pixels, fps, crf=4, pixel_format="yuv444p")


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
        atomic_write_bytes(out / rel, encode_mp4(clip.frames, fps=fps))
        rows.append({"video": rel, "caption": clip.caption, "seed": seed, "index": i})
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=["video", "caption", "seed", "index"])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(out / "captions.csv", table.getvalue().encode())
    return out / "captions.csv"


# --- the caption grammar, read back ------------------------------------------------------------------


class CaptionGrammarError(ValueError):
    """A caption outside the grammar ``a|an <colour> <shape> moves <direction> [and ...]``."""


@dataclass(frozen=True, slots=True)
class CaptionClause:
    """One clause of a caption: what should be drawn and where it should go."""

    colour: str
    shape: ShapeName
    direction: Direction

    @property
    def phrase(self) -> str:
        """The clause as `caption_for` writes it ("an orange circle moves up")."""
        article = "an" if self.colour[0] in "aeiou" else "a"
        return f"{article} {self.colour} {self.shape} moves {self.direction}"


def parse_caption(caption: str) -> tuple[CaptionClause, ...]:
    """``"a red square moves left and an orange circle moves up"`` → one `CaptionClause` per clause.

    The inverse of `caption_for` over the world's vocabulary (`COLOURS`, `SHAPES`, `DIRECTIONS`). Case and
    surrounding whitespace are ignored, and so is one trailing full stop; either article is accepted.
    Anything else raises `CaptionGrammarError` naming the caption and the offending clause or word.
    """
    text = " ".join(caption.strip().lower().removesuffix(".").split())
    grammar = (
        f"'a <colour> <shape> moves <direction>' joined by ' and ', colour in {sorted(COLOURS)}, "
        f"shape in {list(ALL_SHAPES)}, direction in {list(DIRECTIONS)}"
    )
    if not text:
        raise CaptionGrammarError(f"empty caption; expected {grammar}")
    clauses = []
    for clause in text.split(" and "):
        words = clause.split(" ")
        if len(words) != 5 or words[0] not in ("a", "an") or words[3] != "moves":
            raise CaptionGrammarError(f"caption {caption!r}: clause {clause!r} is not {grammar}")
        colour, shape, direction = words[1], words[2], words[4]
        for field, word, allowed in (
            ("colour", colour, tuple(COLOURS)),
            ("shape", shape, ALL_SHAPES),
            ("direction", direction, tuple(DIRECTIONS)),
        ):
            if word not in allowed:
                raise CaptionGrammarError(
                    f"caption {caption!r}: unknown {field} {word!r}; expected one of {sorted(allowed)}"
                )
        known_direction = next(d for d in DIRECTIONS if d == direction)  # narrowed to `Direction`
        clauses.append(CaptionClause(colour, ALL_SHAPES[ALL_SHAPES.index(shape)], known_direction))
    return tuple(clauses)
