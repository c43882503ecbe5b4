"""Resumable checkpoints: accelerate's state plus what rebuilds the run, written atomically and verified.

A checkpoint is a folder `checkpoints/step-<N>/` holding accelerate's `save_state` files (model, optimizer,
scheduler), `train_state.json` (step, data position, Φ rank, the resolved config), one
`generators-rank<R>.safetensors` per process (the per-rank sampling RNGs) and, written last,
`checksums.json` (sha256 of every other file). It is assembled in `step-<N>.tmp` and renamed into place,
so a crash mid-save never leaves a folder that looks complete. Loading never unpickles our own files
(JSON + safetensors); accelerate loads its optimizer/scheduler files with `weights_only=True`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import ValidationError
from safetensors.torch import load_file, save_file

from qvgen.core import Frozen, atomic_write_text, file_sha256, write_errors_named

log = logging.getLogger(__name__)

PREFIX = "step-"
TMP_SUFFIX = ".tmp"
OLD_SUFFIX = ".old"
_NAME = re.compile(rf"{PREFIX}\d+")
TRAIN_STATE = "train_state.json"
CHECKSUMS = "checksums.json"
GENERATORS = "generators-rank{rank}.safetensors"
MUST_MATCH = ("model", "method", "quant", "aux", "data", "optim", "train")
"""Config sections a resumed run must share with its checkpoint (logging/checkpoint/export may change)."""


class CheckpointError(ValueError):
    """A checkpoint that is incomplete, corrupted or belongs to a different run."""


class TrainState(Frozen):
    """What rebuilds the loop at a step, beyond the tensors accelerate saves."""

    schema_version: Literal[1] = 1
    step: int
    """Optimizer steps completed."""
    world_size: int
    data_batches: int
    """Batches each process has drawn from its loader (the data position)."""
    phi_rank: int | None
    """Active rank of Φ after `step` steps (None: the run has no Φ)."""
    config: dict[str, Any]
    """The resolved RunConfig (JSON mode) of the run that wrote it."""


def checkpoint_dir(root: Path, step: int) -> Path:
    return root / f"{PREFIX}{step:08d}"


def _write_json_atomic(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True))


def save_generators(path: Path, generators: Mapping[str, torch.Generator]) -> None:
    save_file({name: g.get_state() for name, g in generators.items()}, str(path))


def load_generators(path: Path, generators: Mapping[str, torch.Generator]) -> None:
    states = load_file(str(path))
    missing = sorted(set(generators) - set(states))
    if missing:
        raise CheckpointError(f"{path}: no state for generator(s) {missing}; found {sorted(states)}")
    for name, g in generators.items():
        g.set_state(states[name])


def save_checkpoint(
    accelerator: Any,
    root: Path,
    state: TrainState,
    generators: Mapping[str, torch.Generator],
    keep_last: int,
    save_state: Callable[[Path], None] | None = None,
) -> Path:
    """Write `root/step-<N>` on every process (collective call); return its final path.

    On any failure (a full disk included) the unfinished `step-<N>.tmp` is removed and the earlier
    checkpoints are untouched. A write error becomes one OSError naming the checkpoint folder and the
    cause, whichever library raised it (`qvgen.core.write_errors_named`): torch's `unexpected pos`
    RuntimeError or safetensors' error on a full disk read `cannot write PATH: no space left on device`.
    """
    final = checkpoint_dir(root, state.step)
    try:
        with write_errors_named(final):
            return _save_checkpoint(accelerator, root, state, generators, keep_last, save_state)
    except BaseException:
        if accelerator.is_main_process:
            shutil.rmtree(final.with_name(final.name + TMP_SUFFIX), ignore_errors=True)
        raise


def _save_checkpoint(
    accelerator: Any,
    root: Path,
    state: TrainState,
    generators: Mapping[str, torch.Generator],
    keep_last: int,
    save_state: Callable[[Path], None] | None = None,
) -> Path:
    """Write `root/step-<N>` on every process (collective call); return its final path.

    `save_state(folder)` writes the model/optimizer/scheduler files (default: accelerate's `save_state`;
    the FSDP2 path passes `qvgen.train.sharding.save_sharded_state`)."""
    final = checkpoint_dir(root, state.step)
    tmp = final.with_name(final.name + TMP_SUFFIX)
    if accelerator.is_main_process:
        if tmp.exists():
            shutil.rmtree(tmp)  # left by a crash during an earlier save of this step
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    if save_state is None:
        accelerator.save_state(str(tmp))
    else:
        save_state(tmp)
    save_generators(tmp / GENERATORS.format(rank=accelerator.process_index), generators)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _write_json_atomic(tmp / TRAIN_STATE, state.model_dump(mode="json"))
        sums = {p.name: file_sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        _write_json_atomic(tmp / CHECKSUMS, sums)
        if final.exists():  # same step saved again: old aside, new in, then old away (never neither)
            aside = final.with_name(final.name + OLD_SUFFIX)
            if aside.exists():
                shutil.rmtree(aside)
            os.replace(final, aside)
            os.replace(tmp, final)
            shutil.rmtree(aside)
        else:
            os.replace(tmp, final)
        _prune(root, keep_last, state.step)
    accelerator.wait_for_everyone()
    return final


def _prune(root: Path, keep_last: int, step: int) -> None:
    """Keep the newest `keep_last` checkpoints up to `step` (the one just written); later ones are left."""
    done = [p for p in complete_checkpoints(root) if _step_of(p) <= step]
    for old in done[:-keep_last]:
        shutil.rmtree(old)


def _step_of(path: Path) -> int:
    return int(path.name.removeprefix(PREFIX))


def complete_checkpoints(root: Path) -> list[Path]:
    """The finished `step-N` folders under `root`, oldest first (`.tmp`/`.old` folders are not)."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and _NAME.fullmatch(p.name))


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint folder under `root` (unfinished `.tmp` folders are ignored)."""
    done = complete_checkpoints(root)
    return done[-1] if done else None


def verify_checkpoint(path: Path) -> TrainState:
    """Check every file against `checksums.json` and parse `train_state.json`; raise CheckpointError."""
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint folder")
    sums_path = path / CHECKSUMS
    if not sums_path.is_file():
        raise CheckpointError(f"{path}: incomplete checkpoint (no {CHECKSUMS}); it was not finished writing")
    try:
        sums = json.loads(sums_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{sums_path}: corrupted checksum list: {e}") from e
    present = {p.name for p in path.iterdir() if p.is_file()} - {CHECKSUMS}
    if missing := sorted(set(sums) - present):
        raise CheckpointError(f"{path}: files listed in {CHECKSUMS} are missing: {missing}")
    if extra := sorted(present - set(sums)):
        raise CheckpointError(f"{path}: files not listed in {CHECKSUMS}: {extra}")
    for name, expected in sums.items():
        if file_sha256(path / name) != expected:
            raise CheckpointError(
                f"{path / name}: sha256 mismatch, the file is corrupted; resume from another checkpoint"
            )
    try:
        return TrainState.model_validate_json((path / TRAIN_STATE).read_text(encoding="utf-8"))
    except (ValidationError, OSError) as e:
        raise CheckpointError(f"{path / TRAIN_STATE}: invalid train state: {e}") from e


def _diff(a: Any, b: Any, prefix: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in sorted(set(a) | set(b)):
            out += _diff(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else key)
        return out
    return [] if a == b else [f"{prefix}: checkpoint {a!r} vs now {b!r}"]


def check_compatible(path: Path, state: TrainState, config: Mapping[str, Any], world_size: int) -> None:
    """Refuse a checkpoint written by a different run (config sections in MUST_MATCH, process count)."""
    problems = []
    for section in MUST_MATCH:
        problems += _diff(state.config.get(section), config.get(section), section)
    if state.world_size != world_size:
        problems.append(f"world size: checkpoint {state.world_size} vs now {world_size}")
    if problems:
        raise CheckpointError(
            f"{path}: checkpoint belongs to a different run:\n  "
            + "\n  ".join(problems)
            + "\nresume with the same config and process count, or start a new output_dir"
        )


def load_checkpoint(
    accelerator: Any,
    path: Path,
    generators: Mapping[str, torch.Generator],
    load_state: Callable[[Path], None] | None = None,
) -> None:
    """Restore the training state (accelerate's `load_state`, or `load_state(path)`) and this process's
    generators from a verified checkpoint."""
    if load_state is None:
        accelerator.load_state(str(path))
    else:
        load_state(path)
    load_generators(path / GENERATORS.format(rank=accelerator.process_index), generators)
