"""Fakes for tests of code that takes a `VideoScorer` (any package's tests)."""

from __future__ import annotations

import numpy as np

from qvgen.eval.scorer import ValueScores


class FakeScorer:
    """Scores a video by its mean brightness and keeps every (frames, prompt) it was shown."""

    def __init__(self, name: str = "fake") -> None:
        self.name = name
        self.seen: list[tuple[np.ndarray, str]] = []

    def score(self, frames: np.ndarray, prompt: str) -> ValueScores:
        self.seen.append((frames, prompt))
        return ValueScores(values={"brightness": float(np.mean(frames)), "prompt_words": len(prompt.split())})
