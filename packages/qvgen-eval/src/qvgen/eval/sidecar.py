"""Video sidecars: every mp4 qvgen-eval writes has `<video>.json` beside it saying what produced it.

The sidecar is a `qvgen.core.Provenance` of the model (`model.kind`, `model.digest`, `model.base`,
`model.dtype`: `qvgen.eval.model_facts`), the family, prompt, index, seed, fps and every sampling setting. It
is written atomically after the video, so a video without one was never finished (or not written by qvgen).

A sample folder reuses a video only when its sidecar equals the one the current config would write. A video
without a sidecar, or with another one, is refused before anything is sampled (`ProvenanceMismatch` listing
the videos and the facts that changed) unless the user asks to resample those (`on_change: resample`,
`qvgen-eval sample --overwrite`). Scoring (`write_report`) refuses a video whose sidecar is missing or names
another model than its report row (`check_video_sidecar`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final

import numpy as np

from qvgen.core import Provenance, ProvenanceMismatch, read_provenance, write_provenance
from qvgen.data import write_video
from qvgen.eval.config import SamplingSettings
from qvgen.eval.prompts import SampleItem

SAMPLE_TOOL: Final = "qvgen-eval sample"
"""The tool name of `qvgen-eval sample` (its output folder's marker and its videos' sidecars)."""
COMPARE_TOOL: Final = "qvgen-eval compare"
"""The tool name of `qvgen-eval compare` / `compare_models`."""

MAX_LISTED: Final = 5
"""At most this many groups of stale videos are spelled out in the error."""
NO_SIDECAR: Final = "no sidecar (an unfinished write, an older qvgen, or not written by qvgen-eval)"


def sidecar_path(video: str | Path) -> Path:
    """Where the sidecar of `video` lives: `<video>.json` (e.g. `a cat-0.mp4.json`)."""
    v = Path(video)
    return v.with_name(v.name + ".json")


def video_provenance(
    tool: str,
    family: str,
    model: Mapping[str, str],
    item: SampleItem,
    settings: SamplingSettings,
    fps: int,
) -> Provenance:
    """The sidecar of `item`'s video: `model` facts, family, prompt, index, seed, fps and `settings`."""
    facts: dict[str, object] = {
        **model,
        "family": family,
        "prompt": item.prompt,
        "index": item.index,
        "seed": item.seed,
        "fps": fps,
    }
    facts |= {f"sampling.{k}": v for k, v in settings.model_dump(mode="json").items() if k != "fps"}
    return Provenance.of(tool, facts)


def sort_videos(planned: Iterable[tuple[Path, Provenance]]) -> tuple[set[Path], dict[Path, list[str]]]:
    """Of the planned (video, expected sidecar) pairs whose video exists: those whose sidecar matches
    (reusable) and, per other video, the facts that changed (or why there is nothing to compare)."""
    fresh: set[Path] = set()
    stale: dict[Path, list[str]] = {}
    for video, expected in planned:
        if not video.is_file():
            continue
        try:
            old = read_provenance(sidecar_path(video))
        except ValueError as e:
            stale[video] = [f"unreadable sidecar ({e})"]
            continue
        if old is None:
            stale[video] = [NO_SIDECAR]
            continue
        changes = old.changes(expected)
        if changes:
            stale[video] = changes
        else:
            fresh.add(video)
    return fresh, stale


def stale_videos_error(folder: Path, stale: Mapping[Path, list[str]], remedy: str) -> ProvenanceMismatch:
    """One `ProvenanceMismatch` for `folder` listing the stale videos (grouped by what changed)."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for video, changes in stale.items():
        groups.setdefault(tuple(changes), []).append(video.name)
    lines: list[str] = []
    for changed, names in groups.items():
        shown = ", ".join(names[:3]) + (f", … ({len(names)} videos)" if len(names) > 3 else "")
        lines.append(f"{shown}: {', '.join(changed)}")
    if len(lines) > MAX_LISTED:  # e.g. a new seed changes every video differently: list a few, count the rest
        rest = sum(len(names) for names in list(groups.values())[MAX_LISTED:])
        lines = [*lines[:MAX_LISTED], f"… and {rest} more videos"]
    return ProvenanceMismatch(folder, lines, remedy)


def write_video_with_sidecar(frames: np.ndarray, path: Path, fps: int, provenance: Provenance) -> Path:
    """Write the mp4 (atomic) and then its sidecar (atomic). The old sidecar goes first, so a crash in
    between leaves a video without one: refused on the next run, never reused."""
    sidecar_path(path).unlink(missing_ok=True)
    written = write_video(frames, path, fps)
    write_provenance(sidecar_path(path), provenance)
    return written


def check_video_sidecar(video: Path, *, row: str, kind: str, digest: str | None) -> None:
    """Refuse (`ValueError`) a video whose sidecar is missing or names another model than report row `row`
    claims (`kind`, and `digest` when the row records one)."""
    try:
        prov = read_provenance(sidecar_path(video))
    except ValueError as e:
        raise ValueError(f"report row {row!r}: {e}") from e
    if prov is None:
        raise ValueError(
            f"{video}: {NO_SIDECAR}, so nothing says which model made it (report row {row!r}, a {kind} model); "
            "sample it again with qvgen-eval"
        )
    facts = prov.facts
    old_kind, old_digest = facts.get("model.kind"), facts.get("model.digest")
    if (old_kind is not None and old_kind != kind) or (digest is not None and old_digest != digest):
        raise ValueError(
            f"{video}: its sidecar names the {old_kind or 'in-process'} model {old_digest}, but report row "
            f"{row!r} claims the {kind} model {digest or '(no digest recorded)'}; sample it again with qvgen-eval"
        )


def tensors_digest(*state_dicts: Mapping[str, object]) -> str:
    """`state:<sha256>` over every tensor's name, dtype, shape and bytes (an in-process model's identity)."""
    import torch

    h = hashlib.sha256()
    for i, sd in enumerate(state_dicts):
        for name in sorted(sd):
            t = sd[name]
            if not isinstance(t, torch.Tensor):
                continue
            h.update(f"{i}:{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return "state:" + h.hexdigest()
