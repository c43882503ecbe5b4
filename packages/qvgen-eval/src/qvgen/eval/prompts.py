"""Prompts from a text file or a VBench prompt-suite JSON, VBench's video naming, and the work list."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

MAX_NAME_BYTES = 255


def load_prompts(path: str | Path, dimensions: Sequence[str] = ()) -> list[str]:
    """Prompts in file order, duplicates dropped.

    `.txt`: one prompt per non-empty line (VBench's `prompts_per_dimension/*.txt`, `all_dimension.txt`).
    `.json`: VBench's full-info list of `{"prompt_en": ..., "dimension": [...]}`; with `dimensions`, only
    prompts tagged with one of them.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise FileNotFoundError(f"cannot read prompt file {p}: {e}") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"prompt file {p} is not UTF-8 text (byte {e.start})") from e
    if p.suffix == ".json":
        prompts = _from_vbench_json(p, text, dimensions)
    else:
        if dimensions:
            raise ValueError(f"{p}: `dimensions` filters a VBench full-info .json file, not a text file")
        prompts = [line.strip() for line in text.splitlines() if line.strip()]
    unique = list(dict.fromkeys(prompts))
    if not unique:
        raise ValueError(
            f"prompt file {p} has no prompts" + (f" for dimensions {list(dimensions)}" if dimensions else "")
        )
    return unique


def _from_vbench_json(p: Path, text: str, dimensions: Sequence[str]) -> list[str]:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"prompt file {p} is not valid JSON: {e}") from e
    if not isinstance(data, list):
        raise ValueError(f"prompt file {p}: expected VBench's full-info list of {{'prompt_en', 'dimension'}}")
    wanted = set(dimensions)
    out = []
    for i, entry in enumerate(data):
        if not isinstance(entry, dict) or not isinstance(entry.get("prompt_en"), str):
            raise ValueError(f"prompt file {p}, entry {i}: expected an object with a string 'prompt_en'")
        tags = entry.get("dimension", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ValueError(f"prompt file {p}, entry {i}: 'dimension' must be a list of dimension names")
        if not wanted or wanted & set(tags):
            out.append(entry["prompt_en"].strip())
    return out


def video_filename(prompt: str, index: int) -> str:
    """VBench's name for the `index`-th video of `prompt`: `{prompt}-{index}.mp4`."""
    name = f"{prompt}-{index}.mp4"
    if "/" in prompt or "\0" in prompt or prompt in {"", ".", ".."}:
        raise ValueError(f"prompt {prompt!r} cannot be a file name (VBench names videos after the prompt)")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise ValueError(
            f"prompt {prompt[:60]!r}... gives a file name of {len(name.encode())} bytes (> {MAX_NAME_BYTES}); "
            "shorten it"
        )
    return name


@dataclass(frozen=True, slots=True)
class SampleItem:
    """One video to generate."""

    prompt: str
    prompt_index: int
    index: int
    """Video index within the prompt (VBench's `-{index}` suffix)."""
    seed: int

    @property
    def filename(self) -> str:
        return video_filename(self.prompt, self.index)


def plan_items(prompts: Sequence[str], videos_per_prompt: int, seed: int) -> list[SampleItem]:
    """All videos, prompt-major; item k gets seed `seed + k`, so the result never depends on the rank count."""
    if videos_per_prompt < 1:
        raise ValueError(f"videos_per_prompt must be >= 1, got {videos_per_prompt}")
    items = []
    for p, prompt in enumerate(prompts):
        for i in range(videos_per_prompt):
            items.append(SampleItem(prompt, p, i, seed + p * videos_per_prompt + i))
            video_filename(prompt, i)  # fail before any sampling
    return items
