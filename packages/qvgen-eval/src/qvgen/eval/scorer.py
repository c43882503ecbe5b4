"""Scorers: a `VideoScorer` turns one generated video and its prompt into typed scores.

`compare_models` runs every scorer on the exact frames each model produced (before any video encoding),
stores the result per sample in the report under the scorer's name, and summarises it per model.
Prompt adherence (`AdherenceScorer`) is one scorer; anything returning `ValueScores` is another.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import Field

from qvgen.core import Frozen
from qvgen.eval.adherence import AdherenceConfig, VideoAdherence, score_video
from qvgen.eval.stats import MeanCI, mean_ci


class ValueScores(Frozen):
    """Named scores of one video, for scorers without a richer record of their own."""

    kind: Literal["values"] = "values"
    values: dict[str, float]
    unscorable: str | None = None
    """Why the video could not be scored; `values` is then empty."""


VideoScore = Annotated[VideoAdherence | ValueScores, Field(discriminator="kind")]
"""What a scorer returns for one video (a tagged union, so reports round-trip through JSON)."""


@runtime_checkable
class VideoScorer(Protocol):
    """Scores one video: frames `[F, H, W, 3]` float32 in [0, 1] and the prompt it was generated from."""

    @property
    def name(self) -> str:
        """Key of this scorer's results in the report."""
        ...

    def score(self, frames: np.ndarray, prompt: str) -> VideoAdherence | ValueScores: ...


class AdherenceScorer:
    """Prompt adherence in qvgen.data's procedural world (`qvgen.eval.score_video`)."""

    name = "adherence"

    def __init__(self, cfg: AdherenceConfig | None = None) -> None:
        self.cfg = cfg or AdherenceConfig()

    def score(self, frames: np.ndarray, prompt: str) -> VideoAdherence:
        return score_video(frames, prompt, self.cfg)


def score_values(score: VideoAdherence | ValueScores) -> dict[str, float]:
    """The scalar values of one score; an unscorable adherence entry counts 0 on each (see adherence)."""
    if isinstance(score, VideoAdherence):
        return {k: score.value(k) for k in ("colour", "shape", "motion", "overall")}
    return dict(score.values)


def score_columns(scores: Sequence[VideoAdherence | ValueScores]) -> dict[str, list[float]]:
    """Per value name, one entry per video that has it; an unscorable video counts 0 on each value it
    lacks (so every column of a list of possibly-unscorable scores lines up with the videos)."""
    values = [score_values(s) for s in scores]
    keys = list(dict.fromkeys(k for v in values for k in v))
    columns: dict[str, list[float]] = {k: [] for k in keys}
    for s, v in zip(scores, values, strict=True):
        for k in keys:
            if k in v:
                columns[k].append(v[k])
            elif s.unscorable is not None:
                columns[k].append(0.0)
    return columns


class ScoreSummary(Frozen):
    """One scorer over one model's videos: mean and 95 % CI of each value, and how many were unscorable."""

    num_videos: int
    num_unscorable: int
    values: dict[str, MeanCI]


def summarize_scores(scores: Sequence[VideoAdherence | ValueScores]) -> ScoreSummary:
    """Means with 95 % CIs over videos of every value the scores carry; an unscorable video counts 0 on
    each value it lacks."""
    if not scores:
        raise ValueError("summarize_scores got no scores")
    per_key = score_columns(scores)
    return ScoreSummary(
        num_videos=len(scores),
        num_unscorable=sum(s.unscorable is not None for s in scores),
        values={k: mean_ci(v) for k, v in per_key.items()},
    )
