"""JSON-lines logs written in whole lines and read back with a torn last line dropped.

`append_jsonl` writes each record as one `write()` of a complete line, flushed and fsynced, so a kill can at
most tear the last line. `read_jsonl` drops such a torn last line with a warning naming the file and line
(`repair_jsonl` also cuts it off the file, so the next append starts a clean line); any other malformed
line is a `ValueError` naming the file and line number.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def append_jsonl(path: str | os.PathLike[str], record: Mapping[str, Any]) -> None:
    """Append `record` to `path` as one complete line (created if missing), flushed and fsynced."""
    line = json.dumps(record, separators=(",", ":")) + "\n"
    with open(path, "ab") as f:
        f.write(line.encode())
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of `path` (none if it does not exist); a torn last line is dropped with a warning."""
    records, _ = _parse(Path(path))
    return records


def repair_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """`read_jsonl`, and a torn last line cut off the file (so appends continue on a fresh line)."""
    p = Path(path)
    records, good_bytes = _parse(p)
    if p.is_file() and p.stat().st_size != good_bytes:
        with open(p, "r+b") as f:
            f.truncate(good_bytes)
            f.flush()
            os.fsync(f.fileno())
    return records


def _parse(p: Path) -> tuple[list[dict[str, Any]], int]:
    """The records and the byte length of the whole lines that hold them. Every append ends with a newline,
    so text after the last newline is a torn write."""
    if not p.is_file():
        return [], 0
    data = p.read_bytes()
    whole, _, tail = data.rpartition(b"\n")
    if tail:
        logger.warning(
            "%s: line %d is torn (a write was cut off); dropped it", p, whole.count(b"\n") + 2 if whole else 1
        )
    records: list[dict[str, Any]] = []
    if not whole and not data.startswith(b"\n"):
        return records, 0
    for number, raw in enumerate(whole.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except ValueError as e:
            raise ValueError(f"{p}: line {number} is not valid JSON: {e}") from e
        if not isinstance(record, dict):
            raise ValueError(f"{p}: line {number} holds a {type(record).__name__}, not a JSON object")
        records.append(record)
    return records, len(whole) + 1
