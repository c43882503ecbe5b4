"""Weight-free prompt adherence for qvgen.data's procedural world ("a red square moves left").

Each object named in the caption is found by colour: every pixel goes to its nearest palette colour when
it lies within `max_colour_distance` of it (the muted backgrounds lie farther from every palette colour),
and the largest 4-connected region of that colour on each frame is the object. Its centroid track and
silhouette then give three binary checks per object:

1. colour: the stated colour is found on at least `min_presence` of the frames;
2. shape: the silhouette is classified from two scale-free numbers — the fraction of its mass in the
   top half of its bounding box (an apex-up triangle puts 1/4 there, a circle or square 1/2) and its fill
   ratio area / bbox area (square 1, circle π/4) — and compared with the stated shape;
3. motion: the least-squares centroid displacement over the clip travels at least `min_travel` of the
   frame size, and its nearest cardinal direction is the stated one.

When the stated colour is missing, shape and motion are judged on the largest region of a palette colour
the caption does not name, so the three scores stay separate (a model that paints the circle the wrong
colour still gets its shape and motion judged). Per video a score is the mean over its objects.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from qvgen.data import COLOURS, DIRECTIONS, SHAPES


class CaptionGrammarError(ValueError):
    """A caption outside the procedural grammar ``a <colour> <shape> moves <direction> [and ...]``."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class ObjectClaim(_Frozen):
    """One clause of a caption: what should be drawn and where it should go."""

    colour: str
    shape: str
    direction: str


class AdherenceConfig(_Frozen):
    """Thresholds of the segmentation and of the three checks (pixel values on the [0, 1] scale)."""

    max_colour_distance: Annotated[float, Field(gt=0, le=1.0)] = 0.3
    """Largest RGB distance from a palette colour at which a pixel still counts as that colour."""
    min_area: Annotated[float, Field(gt=0, lt=1)] = 0.004
    """Smallest region, as a fraction of the frame, that counts as an object (16 px at 64×64)."""
    min_presence: Annotated[float, Field(gt=0, le=1)] = 0.5
    """Fraction of frames on which the stated colour must be found."""
    min_travel: Annotated[float, Field(gt=0, lt=1)] = 0.05
    """Centroid travel over the clip, as a fraction of min(H, W), below which an object is static."""
    triangle_top_mass: Annotated[float, Field(gt=0, lt=0.5)] = 0.375
    """Top-half mass fraction below which a silhouette is a triangle (triangle 0.25, others 0.5)."""
    square_fill: Annotated[float, Field(gt=math.pi / 4, lt=1)] = 0.89
    """Fill ratio above which a non-triangle is a square (square 1.0, circle π/4 ≈ 0.785)."""


class ObjectAdherence(_Frozen):
    """What was found for one clause, and the three verdicts."""

    claim: ObjectClaim
    presence: float
    """Fraction of frames on which the stated colour was found."""
    judged_colour: str | None
    """Colour of the region that shape and motion were judged on (None: nothing found)."""
    fill_ratio: float | None
    top_mass: float | None
    detected_shape: str | None
    displacement: tuple[float, float] | None
    """Centroid travel over the clip in pixels (x right, y down)."""
    detected_direction: str | None
    """Nearest cardinal direction of the travel; None when static or never found."""
    colour_ok: bool
    shape_ok: bool
    motion_ok: bool


class VideoAdherence(_Frozen):
    """Per-video scores: each is the fraction of the caption's objects that pass that check."""

    caption: str
    objects: tuple[ObjectAdherence, ...]
    colour: float
    shape: float
    motion: float

    @property
    def overall(self) -> float:
        return (self.colour + self.shape + self.motion) / 3.0


class AdherenceReport(_Frozen):
    """Mean scores over a set of videos, with every per-video result."""

    num_videos: int
    colour: float
    shape: float
    motion: float
    overall: float
    videos: tuple[VideoAdherence, ...]


_CLAUSE = re.compile(r"an? (?P<colour>[a-z]+) (?P<shape>[a-z]+) moves (?P<direction>[a-z]+)")


def parse_caption(caption: str) -> tuple[ObjectClaim, ...]:
    """``"a red square moves left and a blue circle moves up"`` → one `ObjectClaim` per clause.

    Case and surrounding whitespace are ignored, and so is one trailing full stop; anything else outside
    the grammar raises `CaptionGrammarError` naming the caption and the offending word.
    """
    text = " ".join(caption.strip().lower().removesuffix(".").split())
    grammar = (
        f"'a <colour> <shape> moves <direction>' joined by ' and ', colour in {sorted(COLOURS)}, "
        f"shape in {list(SHAPES)}, direction in {list(DIRECTIONS)}"
    )
    if not text:
        raise CaptionGrammarError(f"empty caption; expected {grammar}")
    claims = []
    for clause in text.split(" and "):
        m = _CLAUSE.fullmatch(clause)
        if m is None:
            raise CaptionGrammarError(f"caption {caption!r}: clause {clause!r} is not {grammar}")
        for field, allowed in (("colour", COLOURS), ("shape", SHAPES), ("direction", DIRECTIONS)):
            if m[field] not in allowed:
                raise CaptionGrammarError(
                    f"caption {caption!r}: unknown {field} {m[field]!r}; expected one of {sorted(allowed)}"
                )
        claims.append(ObjectClaim(colour=m["colour"], shape=m["shape"], direction=m["direction"]))
    return tuple(claims)


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


def _component_labels(colour_ids: np.ndarray) -> np.ndarray:
    """Labels of the 4-connected single-colour regions of (F, H, W) colour ids; id 0 and label 0: none.

    Each region takes the largest 1-based flat pixel index inside it (max-label propagation).
    """
    h, w = colour_ids.shape[1:]
    inside = colour_ids > 0
    labels = np.where(inside, np.arange(1, h * w + 1).reshape(h, w), 0)
    same_v = (colour_ids[:, 1:, :] == colour_ids[:, :-1, :]) & inside[:, 1:, :]
    same_h = (colour_ids[:, :, 1:] == colour_ids[:, :, :-1]) & inside[:, :, 1:]
    while True:
        grown = labels.copy()
        np.maximum(grown[:, 1:, :], np.where(same_v, labels[:, :-1, :], 0), out=grown[:, 1:, :])
        np.maximum(grown[:, :-1, :], np.where(same_v, labels[:, 1:, :], 0), out=grown[:, :-1, :])
        np.maximum(grown[:, :, 1:], np.where(same_h, labels[:, :, :-1], 0), out=grown[:, :, 1:])
        np.maximum(grown[:, :, :-1], np.where(same_h, labels[:, :, 1:], 0), out=grown[:, :, :-1])
        if np.array_equal(grown, labels):
            return labels
        labels = grown


def _top_regions(labels: np.ndarray, n: int, min_pixels: float) -> list[list[np.ndarray]]:
    """For each frame of `labels` (F, H, W): masks of its `n` largest regions of at least `min_pixels`."""
    out = []
    for frame in labels:
        ids, counts = np.unique(frame[frame > 0], return_counts=True)
        order = np.argsort(-counts, kind="stable")[:n]
        out.append([frame == ids[i] for i in order if counts[i] >= min_pixels])
    return out


def _centroid(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean() + 0.5, ys.mean() + 0.5])


def _tracks(regions: list[list[np.ndarray]], n: int) -> list[list[np.ndarray | None]]:
    """Split per-frame region lists into `n` tracks, each frame's regions going to the nearest track."""
    tracks: list[list[np.ndarray | None]] = [[] for _ in range(n)]
    last: list[np.ndarray | None] = [None] * n
    for frame_regions in regions:
        centres = [_centroid(r) for r in frame_regions]
        best: tuple[int, ...] = tuple(range(len(centres)))
        if n > 1 and any(c is not None for c in last):
            best_cost = math.inf
            for perm in itertools.permutations(range(n), len(centres)):
                cost = sum(
                    float(np.linalg.norm(centres[i] - last[t]))
                    for i, t in enumerate(perm)
                    if last[t] is not None
                )
                if cost < best_cost:
                    best, best_cost = perm, cost
        slot: list[np.ndarray | None] = [None] * n
        for i, t in enumerate(best):
            slot[t] = frame_regions[i]
            last[t] = centres[i]
        for t in range(n):
            tracks[t].append(slot[t])
    return tracks


def _judge_track(
    claim: ObjectClaim, track: Sequence[np.ndarray | None], colour: str | None, cfg: AdherenceConfig
) -> dict[str, Any]:
    """Shape and motion verdicts of one track of per-frame region masks (None where absent)."""
    found = [(t, m) for t, m in enumerate(track) if m is not None]
    if len(found) < 2:
        return {"judged_colour": None, "fill_ratio": None, "top_mass": None, "detected_shape": None,
                "displacement": None, "detected_direction": None, "shape_ok": False, "motion_ok": False}  # fmt: skip
    fills, tops, times, centres = [], [], [], []
    for t, m in found:
        ys, xs = np.nonzero(m)
        y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
        fills.append(ys.size / ((y1 - y0 + 1) * (x1 - x0 + 1)))
        mid = (y0 + y1 + 1) / 2.0  # pixel rows whose centre lies above the bbox middle are the top half
        tops.append(float(np.count_nonzero(ys + 0.5 < mid)) / ys.size)
        times.append(t)
        centres.append(_centroid(m))
    fill, top = float(np.median(fills)), float(np.median(tops))
    if top < cfg.triangle_top_mass:
        shape = "triangle"
    else:
        shape = "square" if fill > cfg.square_fill else "circle"
    t_arr, c_arr = np.asarray(times, dtype=np.float64), np.stack(centres)
    slope = np.polyfit(t_arr, c_arr, 1)[0]  # (2,) px per frame for x and y
    disp = slope * (len(track) - 1)
    direction = None
    if float(np.linalg.norm(disp)) >= cfg.min_travel * min(found[0][1].shape):
        direction = max(DIRECTIONS, key=lambda d: float(np.dot(disp, DIRECTIONS[d])))
    return {
        "judged_colour": colour,
        "fill_ratio": fill,
        "top_mass": top,
        "detected_shape": shape,
        "displacement": (float(disp[0]), float(disp[1])),
        "detected_direction": direction,
        "shape_ok": shape == claim.shape,
        "motion_ok": direction == claim.direction,
    }


def score_video(frames: Any, caption: str, cfg: AdherenceConfig | None = None) -> VideoAdherence:
    """Adherence of one video (F, H, W, 3) — uint8, or float in [0, 1] — to its procedural caption."""
    cfg = cfg or AdherenceConfig()
    claims = parse_caption(caption)
    x = _unit_frames(frames)
    names = list(COLOURS)
    palette = np.array([COLOURS[c] for c in names], dtype=np.float64) / 255.0
    dist = np.linalg.norm(x[..., None, :] - palette, axis=-1)  # (F, H, W, K)
    nearest = dist.argmin(axis=-1)
    colour_ids = np.where(dist.min(axis=-1) < cfg.max_colour_distance, nearest + 1, 0)
    labels = _component_labels(colour_ids)

    def colour_labels(k: int) -> np.ndarray:
        return np.where(colour_ids == k + 1, labels, 0)

    min_pixels = cfg.min_area * x.shape[1] * x.shape[2]

    per_colour: dict[str, list[ObjectClaim]] = {}
    for claim in claims:
        per_colour.setdefault(claim.colour, []).append(claim)
    unnamed = [k for k, c in enumerate(names) if c not in per_colour]
    unnamed_labels = {k: colour_labels(k) for k in unnamed}
    fallback: list[np.ndarray | None] = []
    for f in range(x.shape[0]):
        candidates = [
            r for k in unnamed for r in _top_regions(unnamed_labels[k][f : f + 1], 1, min_pixels)[0]
        ]
        fallback.append(max(candidates, key=np.count_nonzero) if candidates else None)
    fallback_colour = _dominant_colour(fallback, nearest)

    results: dict[int, ObjectAdherence] = {}
    for colour, colour_claims in per_colour.items():
        n = len(colour_claims)
        tracks = _tracks(_top_regions(colour_labels(names.index(colour)), n, min_pixels), n)
        best_total, best_out = -1, []
        for perm in itertools.permutations(range(n)):
            out = []
            for claim, t in zip(colour_claims, perm):
                presence = sum(m is not None for m in tracks[t]) / x.shape[0]
                colour_ok = presence >= cfg.min_presence
                judged = (
                    _judge_track(claim, tracks[t], colour, cfg)
                    if colour_ok
                    else _judge_track(claim, fallback, fallback_colour, cfg)
                )
                out.append(ObjectAdherence(claim=claim, presence=presence, colour_ok=colour_ok, **judged))
            total = sum(o.shape_ok + o.motion_ok for o in out)
            if total > best_total:
                best_total, best_out = total, out
        for claim, result in zip(colour_claims, best_out):
            results[claims.index(claim)] = result
    objects = tuple(results[i] for i in range(len(claims)))
    return VideoAdherence(
        caption=caption,
        objects=objects,
        colour=float(np.mean([o.colour_ok for o in objects])),
        shape=float(np.mean([o.shape_ok for o in objects])),
        motion=float(np.mean([o.motion_ok for o in objects])),
    )


def _dominant_colour(track: Sequence[np.ndarray | None], nearest: np.ndarray) -> str | None:
    """Palette colour name that labels most pixels of a fallback track."""
    votes = np.zeros(len(COLOURS), dtype=np.int64)
    for f, m in enumerate(track):
        if m is not None:
            votes += np.bincount(nearest[f][m], minlength=len(COLOURS))
    return list(COLOURS)[int(votes.argmax())] if votes.any() else None


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
    return AdherenceReport(
        num_videos=len(results),
        colour=float(np.mean([r.colour for r in results])),
        shape=float(np.mean([r.shape for r in results])),
        motion=float(np.mean([r.motion for r in results])),
        overall=float(np.mean([r.overall for r in results])),
        videos=tuple(results),
    )


def chance_levels(palette: Mapping[str, Any] = COLOURS) -> dict[str, float]:
    """Scores of a model that draws one object of uniformly random colour, shape and direction."""
    return {"colour": 1 / len(palette), "shape": 1 / len(SHAPES), "motion": 1 / len(DIRECTIONS)}
