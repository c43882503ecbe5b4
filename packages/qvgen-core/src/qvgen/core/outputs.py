"""Output folders: a tool writes only into folders it created, never into or over its own inputs.

`claim_output_dir(out, tool, inputs=...)` is called by every writer before it writes anything:
- `out` equal to, inside, or containing one of `inputs` is refused;
- a folder that is not empty and carries no marker of the same tool (`.qvgen-output.json`) is refused: qvgen
  never writes into, nor deletes from, a folder a user filled;
- a missing or empty folder is created and marked as the tool's.
`replace_output_dir` (what `--overwrite` does) rebuilds a folder the tool wrote in a temp sibling and swaps it
in by rename; a folder without the tool's marker is refused, never deleted.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from qvgen.core.atomic import atomic_dir, atomic_write_text
from qvgen.core.frozen import Frozen

MARKER_NAME = ".qvgen-output.json"
"""The file that marks a folder as written by a qvgen tool."""

_UNSET_VAR = re.compile(r"\$(\w+|\{[^}]*\})")


class OutputMarker(Frozen):
    """The content of `MARKER_NAME`: which tool created the folder, and when."""

    tool: str
    created: str


def expand_path(path: str | os.PathLike[str], what: str = "path") -> Path:
    """`~` and `$VAR`/`${VAR}` expanded; an unset variable is a `ValueError` naming `what`."""
    raw = os.fspath(path)
    expanded = os.path.expandvars(os.path.expanduser(raw))
    unset = _UNSET_VAR.search(expanded)
    if unset:
        raise ValueError(f"{what}: {raw!r} uses the environment variable {unset.group(0)}, which is not set")
    return Path(expanded)


def read_marker(folder: str | os.PathLike[str]) -> OutputMarker | None:
    """The marker of `folder`, or None when it has none (or an unreadable one)."""
    p = Path(folder) / MARKER_NAME
    try:
        return OutputMarker.model_validate_json(p.read_bytes())
    except (OSError, ValidationError, ValueError):
        return None


def is_tool_output(folder: str | os.PathLike[str], tool: str) -> bool:
    """True when `folder` carries the marker of `tool`."""
    marker = read_marker(folder)
    return marker is not None and marker.tool == tool


def check_disjoint(
    out: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str] | None], what: str = "output"
) -> Path:
    """`out` resolved; a `ValueError` if it equals, lies inside, or contains one of `inputs`."""
    out_r = expand_path(out, what).resolve()
    for item in inputs:
        if item is None:
            continue
        in_r = expand_path(item, "input").resolve()
        if out_r == in_r:
            raise ValueError(f"the {what} {out_r} is also an input; choose another folder")
        if in_r in out_r.parents:
            raise ValueError(f"the {what} {out_r} lies inside the input {in_r}; choose a folder outside it")
        if out_r in in_r.parents:
            raise ValueError(f"the {what} {out_r} contains the input {in_r}; choose a folder outside it")
    return out_r


def claim_output_dir(
    out: str | os.PathLike[str],
    tool: str,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    what: str = "output folder",
) -> Path:
    """Make `out` this `tool`'s output folder (created and marked if missing or empty) and return it resolved.

    Refused with a one-line `ValueError`: `out` overlapping an input, `out` a file, or `out` not empty and not
    marked by `tool`.
    """
    target = check_disjoint(out, inputs, what)
    if target.exists() and not target.is_dir():
        raise ValueError(f"the {what} {target} is a file; choose a folder")
    if target.is_dir() and any(target.iterdir()):
        marker = read_marker(target)
        if marker is None:
            raise ValueError(
                f"the {what} {target} is not empty and was not written by {tool}; "
                "qvgen never writes into a folder it did not create: choose a new or empty folder"
            )
        if marker.tool != tool:
            raise ValueError(
                f"the {what} {target} was written by {marker.tool}, not {tool}; choose another folder"
            )
        return target
    target.mkdir(parents=True, exist_ok=True)
    mark_output_dir(target, tool)
    return target


def replace_output_dir(
    out: str | os.PathLike[str],
    tool: str,
    write: Callable[[Path], object],
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    what: str = "output folder",
) -> Path:
    """Build `out` afresh with `write(tmp)` in a temp sibling, then swap it in by rename (the `--overwrite`
    path). An existing `out` must be empty or carry `tool`'s marker; it survives any failure of `write`."""
    target = check_disjoint(out, inputs, what)
    if target.exists():
        if not target.is_dir():
            raise ValueError(f"the {what} {target} is a file; choose a folder")
        if any(target.iterdir()) and not is_tool_output(target, tool):
            raise ValueError(
                f"the {what} {target} is not empty and was not written by {tool}; "
                "qvgen never replaces a folder it did not create: choose a new or empty folder"
            )

    def fill(tmp: Path) -> None:
        mark_output_dir(tmp, tool)
        write(tmp)

    return atomic_dir(target, fill)


def mark_output_dir(folder: Path, tool: str) -> None:
    """Write `tool`'s marker into `folder` (what `claim_output_dir` does to a new folder; for a tool that
    adopts a folder it recognises as its own work, e.g. a run folder copied to be resumed)."""
    marker = OutputMarker(tool=tool, created=datetime.now(UTC).isoformat(timespec="seconds"))
    atomic_write_text(folder / MARKER_NAME, marker.model_dump_json(indent=2) + "\n")
