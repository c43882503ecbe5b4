"""Provenance: what produced an artefact, recorded beside it and compared before it is reused.

A `Provenance` is a flat, sorted mapping of named facts (config fields that change the output, input file
fingerprints, code and encoder versions) plus the tool that wrote it. Every writer records one next to what it
wrote (`write_provenance`) and, on a rerun, compares it with the facts of the new inputs
(`check_provenance`): equal → the artefact may be reused; different → `ProvenanceMismatch`, which lists every
fact that changed, old → new. Nothing is ever reused silently.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from qvgen.core.atomic import atomic_write_text, file_sha256
from qvgen.core.frozen import Frozen

HASH_LIMIT_BYTES = 256 << 20
"""Files up to this size are fingerprinted by sha256; larger ones by size + mtime (hashing them is too slow)."""


def canonical_json(obj: Any) -> str:
    """`obj` as canonical JSON: sorted keys, no spaces, pydantic models dumped in JSON mode."""
    return json.dumps(_plain(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)


def canonical_digest(obj: Any) -> str:
    """Hex sha256 of `canonical_json(obj)`: equal for equal content, whatever the key order."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def file_fingerprint(path: str | os.PathLike[str], hash_limit: int = HASH_LIMIT_BYTES) -> str:
    """`sha256:<hex>` of a file up to `hash_limit` bytes, else `size:<bytes>,mtime_ns:<ns>`."""
    p = Path(path)
    st = p.stat()
    if st.st_size <= hash_limit:
        return "sha256:" + file_sha256(p)
    return f"size:{st.st_size},mtime_ns:{st.st_mtime_ns}"


def tree_fingerprint(path: str | os.PathLike[str], hash_limit: int = HASH_LIMIT_BYTES) -> str:
    """A file's `file_fingerprint`, or a folder's: the digest of every file's relative path and fingerprint."""
    p = Path(path)
    if p.is_file():
        return file_fingerprint(p, hash_limit)
    entries = {
        f.relative_to(p).as_posix(): file_fingerprint(f, hash_limit)
        for f in sorted(p.rglob("*"))
        if f.is_file() and not f.name.startswith(".")
    }
    return "tree:" + canonical_digest(entries)


class Provenance(Frozen):
    """What produced an artefact: the writing tool and a flat mapping of named facts (strings)."""

    tool: str
    """The writer, e.g. `qvgen-train precompute`."""
    facts: dict[str, str] = Field(default_factory=dict)
    """Fact name → value: a config field (canonical JSON), an input fingerprint, a version."""

    @classmethod
    def of(cls, tool: str, facts: Mapping[str, Any]) -> Provenance:
        """Build from any JSON-able values (non-strings are stored as their canonical JSON)."""
        return cls(
            tool=tool, facts={k: v if isinstance(v, str) else canonical_json(v) for k, v in facts.items()}
        )

    @property
    def digest(self) -> str:
        """Hex sha256 over the tool and every fact."""
        return canonical_digest(self.model_dump(mode="json"))

    def changes(self, new: Provenance) -> list[str]:
        """One `name: old → new` line per fact that differs from `new` (added or removed facts included)."""
        out = [f"tool: {self.tool} → {new.tool}"] if self.tool != new.tool else []
        for key in sorted(set(self.facts) | set(new.facts)):
            old_v, new_v = self.facts.get(key, "<absent>"), new.facts.get(key, "<absent>")
            if old_v != new_v:
                out.append(f"{key}: {_short(old_v)} → {_short(new_v)}")
        return out


class ProvenanceMismatch(ValueError):
    """An existing artefact was produced from other inputs than the ones given now."""

    def __init__(self, artefact: Path, changes: list[str], remedy: str) -> None:
        self.artefact = artefact
        self.changes = changes
        super().__init__(f"{artefact} was produced from other inputs ({'; '.join(changes)}); {remedy}")


def write_provenance(path: str | os.PathLike[str], provenance: Provenance) -> Path:
    """Write `provenance` as JSON to `path` atomically."""
    return atomic_write_text(path, provenance.model_dump_json(indent=2) + "\n")


def read_provenance(path: str | os.PathLike[str]) -> Provenance | None:
    """The provenance recorded at `path`; None if there is none. A corrupt record is an error naming `path`."""
    p = Path(path)
    if not p.is_file():
        return None
    try:
        return Provenance.model_validate_json(p.read_bytes(), strict=True)
    except (ValidationError, ValueError) as e:
        raise ValueError(f"{p}: not a readable provenance record ({_first_line(e)}); move it away") from e


def check_provenance(
    record: str | os.PathLike[str], expected: Provenance, artefact: str | os.PathLike[str], remedy: str
) -> bool:
    """True if `record` exists and equals `expected`; False if there is none; raise `ProvenanceMismatch`
    naming `artefact` and every changed fact (with `remedy`, what the user can do) if it differs."""
    old = read_provenance(record)
    if old is None:
        return False
    changes = old.changes(expected)
    if changes:
        raise ProvenanceMismatch(Path(artefact), changes, remedy)
    return True


def _plain(obj: Any) -> Any:
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    return str(obj)


def _short(value: str, limit: int = 80) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__
