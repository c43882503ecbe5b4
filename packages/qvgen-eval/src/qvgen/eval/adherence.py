"""Weight-free prompt adherence for qvgen.data's procedural world ("a red square moves left").

1. Objects are found without looking at the caption. A pixel is *foreground* when it lies within
   `max_colour_distance` of some palette colour (the world's muted backgrounds lie farther from every
   palette colour). Neighbouring foreground pixels form one region when they are nearest to the same
   palette colour or their RGB differ by less than `link_distance`: a smooth blob is one region whatever
   palette colours its pixels are nearest to, and touching objects of different palette colours stay apart. Regions of at least `min_area` are detections.
2. Detections are linked over frames into tracks (nearest centroid, same colour preferred, jumps of at
   most `max_step`). A track seen on at least `min_presence` of the frames is an *object*. Its colour is
   the palette colour nearest to the median RGB of all its pixels: one object has one colour, so a violet
   blob cannot pass as both "blue" and "purple".
3. The caption is parsed by `qvgen.data.parse_caption` (unknown words raise `CaptionGrammarError`). Its
   n clauses are matched one to one to the n largest objects (by pixel mass): the assignment with the
   most passing checks. Per matched object: colour (nearest palette colour = stated colour), shape (from
   the silhouette's bounding-box aspect ratio, top-half mass and fill ratio) and motion (least-squares
   centroid travel of at least `min_travel`, nearest cardinal direction = stated one). A clause left without an object fails all
   three; extra objects earn nothing.
4. A video with no object at all is *unscorable*: its entry says so (scores None) and the summary counts
   it; the summary means count it as failing every check (a generator that draws nothing did not follow
   its caption) and report the count beside them.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import Field

from qvgen.core import Frozen
from qvgen.data import COLOURS, DIRECTIONS, SHAPES, CaptionClause, ShapeName, parse_caption

Attribute = Literal["colour", "shape", "motion"]
ATTRIBUTES: tuple[Attribute, ...] = ("colour", "shape", "motion")


class AdherenceConfig(Frozen):
    """Thresholds of detection, tracking and the three checks (pixel values on the [0, 1] scale)."""

    max_colour_distance: Annotated[float, Field(gt=0, le=1.0)] = 0.3
    """Largest RGB distance from a palette colour at which a pixel is foreground."""
    link_distance: Annotated[float, Field(gt=0, le=1.0)] = 0.15
    """Largest RGB difference at which neighbouring foreground pixels of different nearest palette colours
    still join one region."""
    min_area: Annotated[float, Field(gt=0, lt=1)] = 0.004
    """Smallest region, as a fraction of the frame, that counts as a detection (16 px at 64×64)."""
    min_presence: Annotated[float, Field(gt=0, le=1)] = 0.5
    """Fraction of frames on which a track must be detected to count as an object."""
    max_step: Annotated[float, Field(gt=0, le=1)] = 0.25
    """Largest centroid jump of a track between consecutive detections, as a fraction of min(H, W)."""
    min_travel: Annotated[float, Field(gt=0, lt=1)] = 0.05
    """Centroid travel over the clip, as a fraction of min(H, W), below which an object is static."""
    triangle_top_mass: Annotated[float, Field(gt=0, lt=0.5)] = 0.375
    """Top-half mass fraction below which a silhouette is a triangle (triangle 0.25, others 0.5)."""
    square_fill: Annotated[float, Field(gt=math.pi / 4, lt=1)] = 0.89
    """Fill ratio above which a non-triangle is a square (square 1.0, circle π/4 ≈ 0.785)."""
    bar_aspect: Annotated[float, Field(gt=1, lt=2.5)] = 1.6
    """Bounding-box width / height at or above which a silhouette is a bar, and at or below whose inverse
    it is a column (bar 2.5, column 0.4, circle, square and triangle 1)."""


class TrackedObject(Frozen):
    """One object found in a video, described without reference to the caption."""

    colour: str
    """Palette colour nearest to the median RGB of the object's pixels."""
    colour_distance: float
    """RGB distance of that median from the palette colour."""
    presence: float
    """Fraction of frames on which the object was detected."""
    mass: int
    """Pixels summed over the frames on which it was detected."""
    fill_ratio: float
    top_mass: float
    aspect: float = 1.0
    """Median bounding-box width / height."""
    shape: str
    displacement: tuple[float, float]
    """Least-squares centroid travel over the clip in pixels (x right, y down)."""
    direction: str | None
    """Nearest cardinal direction of the travel; None when it is below `min_travel`."""


class ObjectAdherence(Frozen):
    """One clause of the caption, the object matched to it (None: none left) and the three verdicts."""

    claim: CaptionClause
    matched: TrackedObject | None
    colour_ok: bool
    shape_ok: bool
    motion_ok: bool


class VideoAdherence(Frozen):
    """Per-video scores: each is the fraction of the caption's clauses that pass that check.

    `unscorable` names why no object could be judged; the scores are then None.
    """

    kind: Literal["adherence"] = "adherence"
    caption: str
    objects: tuple[ObjectAdherence, ...]
    found: tuple[TrackedObject, ...]
    """Every object found, largest first (the first len(objects) were eligible for matching)."""
    unscorable: str | None = None
    colour: float | None
    shape: float | None
    motion: float | None

    @property
    def overall(self) -> float | None:
        if self.colour is None or self.shape is None or self.motion is None:
            return None
        return (self.colour + self.shape + self.motion) / 3.0

    def value(self, attribute: Attribute | Literal["overall"]) -> float:
        """A score with unscorable counted as failing (0.0): what summaries average."""
        v = self.overall if attribute == "overall" else getattr(self, attribute)
        return 0.0 if v is None else float(v)


class AdherenceReport(Frozen):
    """Mean scores over a set of videos (unscorable videos count as 0), with every per-video result."""

    num_videos: int
    num_unscorable: int
    colour: float
    shape: float
    motion: float
    overall: float
    videos: tuple[VideoAdherence, ...]


# --- detection ---------------------------------------------------------------------------------------


def _unit_frames(frames: Any) -> np.ndarray:
    """(F, H, W, 3) float64 in [0, 1] from uint8 or float frames (numpy or torch)."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[0] < 2:
        raise ValueError(f"expected frames [F >= 2, H, W, 3] (RGB, channels last), got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"expected uint8 frames or float frames in [0, 1], got dtype {arr.dtype}")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(
            f"float frames must lie in [0, 1], got [{lo:.3f}, {hi:.3f}]; frames in [-1, 1] "
            "(qvgen.data's clips) need (x + 1) / 2 first"
        )
    return np.clip(arr.astype(np.float64), 0.0, 1.0)


def _palette() -> tuple[list[str], np.ndarray]:
    names = list(COLOURS)
    return names, np.array([COLOURS[c] for c in names], dtype=np.float64) / 255.0


def _region_labels(x: np.ndarray, cfg: AdherenceConfig) -> np.ndarray:
    """Labels (F, H, W) of the regions of foreground pixels joined by similar neighbours; 0: background.

    Each region takes the largest 1-based flat pixel index inside it (max-label propagation).
    """
    _, palette = _palette()
    dist = np.linalg.norm(x[..., None, :] - palette, axis=-1)
    fg = dist.min(axis=-1) < cfg.max_colour_distance
    near = np.where(fg, dist.argmin(axis=-1) + 1, 0)
    h, w = fg.shape[1:]
    link_v = (fg[:, 1:] & fg[:, :-1]) & (
        (near[:, 1:] == near[:, :-1]) | (np.linalg.norm(x[:, 1:] - x[:, :-1], axis=-1) < cfg.link_distance)
    )
    link_h = (fg[:, :, 1:] & fg[:, :, :-1]) & (
        (near[:, :, 1:] == near[:, :, :-1])
        | (np.linalg.norm(x[:, :, 1:] - x[:, :, :-1], axis=-1) < cfg.link_distance)
    )
    labels = np.where(fg, np.arange(1, h * w + 1).reshape(h, w), 0)
    while True:
        grown = labels.copy()
        np.maximum(grown[:, 1:], np.where(link_v, labels[:, :-1], 0), out=grown[:, 1:])
        np.maximum(grown[:, :-1], np.where(link_v, labels[:, 1:], 0), out=grown[:, :-1])
        np.maximum(grown[:, :, 1:], np.where(link_h, labels[:, :, :-1], 0), out=grown[:, :, 1:])
        np.maximum(grown[:, :, :-1], np.where(link_h, labels[:, :, 1:], 0), out=grown[:, :, :-1])
        if np.array_equal(grown, labels):
            return labels
        labels = grown


@dataclass(slots=True)
class _Detection:
    frame: int
    mask: np.ndarray
    centre: np.ndarray
    colour: int


@dataclass(slots=True)
class _Track:
    detections: list[_Detection] = field(default_factory=list)


def _nearest_colour(rgb: np.ndarray) -> tuple[int, float]:
    _, palette = _palette()
    d = np.linalg.norm(palette - rgb, axis=-1)
    return int(d.argmin()), float(d.min())


def _detections(
    x: np.ndarray, labels: np.ndarray, min_pixels: float, limit: int = 8
) -> list[list[_Detection]]:
    out = []
    for f, frame in enumerate(labels):
        ids, counts = np.unique(frame[frame > 0], return_counts=True)
        order = np.argsort(-counts, kind="stable")[:limit]
        dets = []
        for i in order:
            if counts[i] < min_pixels:
                break
            mask = frame == ids[i]
            ys, xs = np.nonzero(mask)
            colour, _ = _nearest_colour(np.median(x[f][mask], axis=0))
            dets.append(_Detection(f, mask, np.array([xs.mean() + 0.5, ys.mean() + 0.5]), colour))
        out.append(dets)
    return out


def _link(per_frame: list[list[_Detection]], max_jump: float) -> list[_Track]:
    """Greedy frame-to-frame linking: cheapest (distance, colour change) pairs first, gated by `max_jump`."""
    tracks: list[_Track] = []
    for dets in per_frame:
        pairs = []
        for i, d in enumerate(dets):
            for k, t in enumerate(tracks):
                last = t.detections[-1]
                dist = float(np.linalg.norm(d.centre - last.centre))
                if dist <= max_jump * (d.frame - last.frame):
                    pairs.append((dist / max_jump + (0.5 if d.colour != last.colour else 0.0), i, k))
        used_d: set[int] = set()
        used_t: set[int] = set()
        for _, i, k in sorted(pairs):
            if i not in used_d and k not in used_t:
                tracks[k].detections.append(dets[i])
                used_d.add(i)
                used_t.add(k)
        tracks += [_Track([d]) for i, d in enumerate(dets) if i not in used_d]
    return tracks


def _describe(track: _Track, x: np.ndarray, cfg: AdherenceConfig) -> TrackedObject:
    names, _ = _palette()
    fills, tops, aspects, times, centres, pixels = [], [], [], [], [], []
    for d in track.detections:
        ys, xs = np.nonzero(d.mask)
        y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
        fills.append(ys.size / ((y1 - y0 + 1) * (x1 - x0 + 1)))
        aspects.append((x1 - x0 + 1) / (y1 - y0 + 1))
        mid = (y0 + y1 + 1) / 2.0  # pixel rows whose centre lies above the bbox middle are the top half
        tops.append(float(np.count_nonzero(ys + 0.5 < mid)) / ys.size)
        times.append(d.frame)
        centres.append(d.centre)
        pixels.append(x[d.frame][d.mask])
    fill, top, aspect = float(np.median(fills)), float(np.median(tops)), float(np.median(aspects))
    if aspect >= cfg.bar_aspect:
        shape = "bar"
    elif aspect <= 1.0 / cfg.bar_aspect:
        shape = "column"
    elif top < cfg.triangle_top_mass:
        shape = "triangle"
    else:
        shape = "square" if fill > cfg.square_fill else "circle"
    n_frames, size = x.shape[0], min(x.shape[1], x.shape[2])
    if len(times) >= 2:
        slope = np.polyfit(np.asarray(times, dtype=np.float64), np.stack(centres), 1)[0]
    else:
        slope = np.zeros(2)
    disp = slope * (n_frames - 1)
    direction = None
    if float(np.linalg.norm(disp)) >= cfg.min_travel * size:
        direction = max(DIRECTIONS, key=lambda d: float(np.dot(disp, DIRECTIONS[d])))
    colour, distance = _nearest_colour(np.median(np.concatenate(pixels), axis=0))
    return TrackedObject(
        colour=names[colour], colour_distance=distance, presence=len(times) / n_frames,
        mass=int(sum(p.shape[0] for p in pixels)), fill_ratio=fill, top_mass=top, aspect=aspect, shape=shape,
        displacement=(float(disp[0]), float(disp[1])), direction=direction,
    )  # fmt: skip


def find_objects(frames: Any, cfg: AdherenceConfig | None = None) -> tuple[TrackedObject, ...]:
    """Every object in a video (F, H, W, 3) — uint8, or float in [0, 1] — largest pixel mass first."""
    cfg = cfg or AdherenceConfig()
    x = _unit_frames(frames)
    size = min(x.shape[1], x.shape[2])
    per_frame = _detections(x, _region_labels(x, cfg), cfg.min_area * x.shape[1] * x.shape[2])
    tracks = _link(per_frame, cfg.max_step * size)
    objects = [
        _describe(t, x, cfg) for t in tracks if len(t.detections) >= max(2, cfg.min_presence * x.shape[0])
    ]
    return tuple(sorted(objects, key=lambda o: -o.mass))


# --- matching and scoring ----------------------------------------------------------------------------


def _verdict(claim: CaptionClause, obj: TrackedObject | None) -> ObjectAdherence:
    if obj is None:
        return ObjectAdherence(claim=claim, matched=None, colour_ok=False, shape_ok=False, motion_ok=False)
    return ObjectAdherence(
        claim=claim,
        matched=obj,
        colour_ok=obj.colour == claim.colour,
        shape_ok=obj.shape == claim.shape,
        motion_ok=obj.direction == claim.direction,
    )


MAX_SCORED_OBJECTS = 6
"""Most clauses one caption may have: matching tries all assignments (6! = 720), so more would be slow."""


def score_video(frames: Any, caption: str, cfg: AdherenceConfig | None = None) -> VideoAdherence:
    """Adherence of one video (F, H, W, 3) — uint8, or float in [0, 1] — to its procedural caption."""
    claims = parse_caption(caption)
    if len(claims) > MAX_SCORED_OBJECTS:
        raise ValueError(
            f"caption {caption!r} names {len(claims)} objects; adherence scores at most {MAX_SCORED_OBJECTS} "
            "(it tries every object-to-clause assignment; the procedural world draws one or two)"
        )
    found = find_objects(frames, cfg)
    if not found:
        return VideoAdherence(
            caption=caption, objects=(), found=(), colour=None, shape=None, motion=None,
            unscorable="no object: no palette-coloured region was tracked on enough frames",
        )  # fmt: skip
    eligible: list[TrackedObject | None] = list(found[: len(claims)])
    eligible += [None] * (len(claims) - len(eligible))
    best: list[ObjectAdherence] = []
    best_total = -1
    for perm in itertools.permutations(eligible):
        out = [_verdict(c, o) for c, o in zip(claims, perm, strict=True)]
        total = sum(o.colour_ok + o.shape_ok + o.motion_ok for o in out)
        if total > best_total:
            best, best_total = out, total
    return VideoAdherence(
        caption=caption,
        objects=tuple(best),
        found=found,
        colour=float(np.mean([o.colour_ok for o in best])),
        shape=float(np.mean([o.shape_ok for o in best])),
        motion=float(np.mean([o.motion_ok for o in best])),
    )


def summarize_adherence(videos: Sequence[VideoAdherence]) -> AdherenceReport:
    """Means of every score over `videos`; unscorable videos count as 0 and are counted."""
    if not videos:
        raise ValueError("summarize_adherence got no videos")
    return AdherenceReport(
        num_videos=len(videos),
        num_unscorable=sum(v.unscorable is not None for v in videos),
        colour=float(np.mean([v.value("colour") for v in videos])),
        shape=float(np.mean([v.value("shape") for v in videos])),
        motion=float(np.mean([v.value("motion") for v in videos])),
        overall=float(np.mean([v.value("overall") for v in videos])),
        videos=tuple(videos),
    )


def score_videos(
    videos: Iterable[Any], captions: Sequence[str], cfg: AdherenceConfig | None = None
) -> AdherenceReport:
    """`score_video` over paired videos and captions, with the mean of every score."""
    results = []
    for i, (frames, caption) in enumerate(itertools.zip_longest(videos, captions)):
        if frames is None or caption is None:
            raise ValueError(f"score_videos: videos and captions differ in length (first unpaired index {i})")
        results.append(score_video(frames, caption, cfg))
    if not results:
        raise ValueError("score_videos got no videos")
    return summarize_adherence(results)


def chance_levels(shapes: Sequence[ShapeName] = SHAPES) -> dict[str, float]:
    """Scores of a model that draws each object with uniformly random colour, shape (of the world's
    `shapes`) and direction."""
    return {"colour": 1 / len(COLOURS), "shape": 1 / len(shapes), "motion": 1 / len(DIRECTIONS)}


def change_attribute(
    caption: str, attribute: Attribute, rng: random.Random, clause: int = 0,
    shapes: Sequence[ShapeName] = SHAPES,
) -> str:  # fmt: skip
    """`caption` with `attribute` of clause `clause` replaced by another value of the world's vocabulary
    (another colour not used by any clause, another of the world's `shapes`, another direction): a
    negative control."""
    claims = list(parse_caption(caption))
    if not 0 <= clause < len(claims):
        raise ValueError(f"caption {caption!r} has {len(claims)} clause(s); no clause {clause}")
    c = claims[clause]
    if attribute == "colour":
        options = [k for k in COLOURS if k not in {x.colour for x in claims}]
        c = CaptionClause(rng.choice(options), c.shape, c.direction)
    elif attribute == "shape":
        c = CaptionClause(c.colour, rng.choice([s for s in shapes if s != c.shape]), c.direction)
    else:
        c = CaptionClause(c.colour, c.shape, rng.choice([d for d in DIRECTIONS if d != c.direction]))
    claims[clause] = c
    return " and ".join(x.phrase for x in claims)
