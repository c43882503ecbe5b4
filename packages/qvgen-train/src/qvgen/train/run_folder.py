"""The run folder (`output_dir`): claimed by `qvgen-train run`, recording what its results depend on.

`claim_run_folder(cfg, overwrite)` is called on the main process before the run writes anything:
- `output_dir` equal to, inside, or containing `model.checkpoint` or `data.shards` is refused;
- a non-empty folder that `qvgen-train run` did not create (no `qvgen.core` output marker) is refused, except a
  folder holding nothing but `checkpoints/` (and `metrics.jsonl`) with a complete checkpoint while
  `checkpoint.resume_from` is set: a run folder copied to resume it, which is adopted;
- the folder's provenance (`.qvgen-run.json`: every config field of the sections that change the result,
  `checkpoint.MUST_MATCH`) must equal the new config's, else the run is refused listing each changed field;
- a finished run (an export in `final/`) is refused;
- `overwrite=True` (`qvgen-train run --overwrite`) replaces a folder `qvgen-train run` wrote by a fresh one
  (temp sibling + rename, `qvgen.core.replace_output_dir`), for a run that starts afresh.
An interrupted run of the same config resumes (`checkpoint.resume_from=latest`) or starts again in place.
`trim_metrics` keeps `metrics.jsonl` readable across kills (it is appended with `qvgen.core.append_jsonl`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qvgen.core import (
    Provenance,
    atomic_write_text,
    check_disjoint,
    check_provenance,
    claim_output_dir,
    mark_output_dir,
    read_marker,
    repair_jsonl,
    replace_output_dir,
    write_provenance,
)
from qvgen.train.checkpoint import MUST_MATCH, complete_checkpoints
from qvgen.train.config import RunConfig

TOOL = "qvgen-train run"
"""The tool name in the output marker and the provenance record."""
PROVENANCE = ".qvgen-run.json"
"""The run folder's provenance record."""
_RESUMABLE_COPY = {"checkpoints", "metrics.jsonl"}


def run_provenance(cfg: RunConfig) -> Provenance:
    """The facts a run's results depend on: each leaf field of the `MUST_MATCH` config sections, dotted."""
    dumped = cfg.model_dump(mode="json")
    facts: dict[str, Any] = {}
    for section in MUST_MATCH:
        _flatten(dumped.get(section), section, facts)
    return Provenance.of(TOOL, facts)


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping) and value:
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}", out)
    else:
        out[prefix] = value


def claim_run_folder(cfg: RunConfig, *, overwrite: bool = False) -> Path:
    """Make `cfg.output_dir` this run's folder (see the module docstring); return it resolved."""
    inputs = (cfg.model.checkpoint, cfg.data.shards if cfg.data is not None else None)
    target = check_disjoint(cfg.output_dir, inputs, "output_dir")
    expected = run_provenance(cfg)
    occupied = target.is_dir() and any(target.iterdir())
    if overwrite and occupied:
        if cfg.checkpoint.resume_from is not None:
            raise ValueError(
                f"--overwrite starts the run in {target} afresh, but checkpoint.resume_from is "
                f"{str(cfg.checkpoint.resume_from)!r}: drop one of them"
            )
        return replace_output_dir(
            target, TOOL, lambda tmp: write_provenance(tmp / PROVENANCE, expected), inputs, what="output_dir"
        )
    if occupied and read_marker(target) is None and _is_resumable_copy(target, cfg):
        mark_output_dir(target, TOOL)  # adopted
    target = claim_output_dir(target, TOOL, inputs, what="output_dir")
    check_provenance(
        target / PROVENANCE, expected, target,
        "resume it with the config it was started with, pass --overwrite to replace it, or choose another "
        "output_dir",
    )  # fmt: skip
    final = target / "final"
    if final.is_dir() and any(final.iterdir()):
        raise ValueError(
            f"{target} holds a finished run (final/): pass --overwrite to replace it, or choose another output_dir"
        )
    write_provenance(target / PROVENANCE, expected)
    return target


def _is_resumable_copy(folder: Path, cfg: RunConfig) -> bool:
    """A folder holding only checkpoints (and metrics) of a run, to be resumed: copied from elsewhere."""
    names = {p.name for p in folder.iterdir()}
    return (
        cfg.checkpoint.resume_from is not None
        and names <= _RESUMABLE_COPY
        and bool(complete_checkpoints(folder / "checkpoints"))
    )


def trim_metrics(path: Path, step: int) -> None:
    """Keep the metrics records of steps up to `step`, where the run (re)starts (later ones are logged again).

    A torn last line (an append cut off by a kill) is dropped with a warning naming the file and line and cut
    off the file; any other unreadable line or a record without an integer `step` is an error naming the file.
    """
    records = repair_jsonl(path)
    for number, record in enumerate(records, start=1):
        if not isinstance(record.get("step"), int):
            raise ValueError(
                f"{path}: record {number} has no integer `step` ({json.dumps(record)[:80]}); "
                "move the file away to resume"
            )
    kept = [r for r in records if r["step"] <= step]
    if len(kept) != len(records):
        atomic_write_text(path, "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in kept))
