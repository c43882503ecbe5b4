"""Sealed manifests: a manifest records a digest of its own content, so an edit by hand is caught on load.

A writer calls `sealed_manifest_json(manifest)` (or `seal_manifest`) and writes the text; a reader calls
`check_manifest_seal(path, data, remedy)` on the JSON it read. The seal is two top-level fields:

- `digest`: `canonical_digest` of the manifest without the seal fields (what decides whether it was edited);
- `field_digests`: a short digest per field, so that the error names the field(s) that were edited. Nested
  objects are flattened to their leaves (`source.config.eps`, `quant.activation.bits`); a list of objects
  that each have a unique `name` (deploy layers) gets one digest per entry (`layers['blocks.0.ffn.up']`) and
  one per column (`layers[*].act_bits`), so an edit of one layer's field reads `layers['blocks.0.ffn.up'].act_bits`.

Digests are over the JSON as written, not over a validated model: a field added to a schema later (with a
default) does not break the seal of older files. A seal detects edits, it does not authenticate: anyone can
seal a file again (`seal_manifest_file`), which is the deliberate way to accept a hand edit.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qvgen.core.atomic import atomic_write_text
from qvgen.core.provenance import canonical_digest, canonical_json

SEAL_FIELDS = ("digest", "field_digests")
"""The top-level manifest fields the seal occupies."""

_FIELD_DIGEST_HEX = 16
_MAX_NAMED = 8


def seal_manifest(manifest: Any) -> dict[str, Any]:
    """The manifest (a pydantic model or a JSON mapping) as a JSON dict with a fresh seal.

    Seal fields already present are dropped first, so sealing is idempotent.
    """
    data = _unsealed(_json_dict(manifest))
    return {**data, "digest": canonical_digest(data), "field_digests": field_digests(data)}


def sealed_manifest_json(manifest: Any) -> str:
    """`seal_manifest(manifest)` as indented JSON text ending in a newline, ready to write."""
    return json.dumps(seal_manifest(manifest), indent=2, ensure_ascii=False) + "\n"


def seal_manifest_file(path: str | os.PathLike[str]) -> Path:
    """Seal the manifest at `path` as it is now, atomically: how to accept a manifest written before
    manifests were sealed, or a deliberate hand edit. Returns `path`."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{p}: cannot seal it, not a readable JSON manifest ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{p}: cannot seal it, the manifest is not a JSON object")
    return atomic_write_text(p, sealed_manifest_json(data))


def is_sealed(data: Mapping[str, Any]) -> bool:
    """True when the JSON manifest `data` carries a digest."""
    return isinstance(data.get("digest"), str)


def check_manifest_seal(path: str | os.PathLike[str], data: Mapping[str, Any], remedy: str) -> None:
    """Raise a `ValueError` naming `path` (and the edited fields) unless `data`, the JSON read from `path`,
    is exactly what its writer sealed. A manifest without a seal is refused too: it cannot be checked.

    `remedy` says how to get a trustworthy manifest again (e.g. how to export the model anew).
    """
    p = Path(path)
    stored = data.get("digest")
    if stored is None:
        raise ValueError(
            f"{p}: the manifest has no digest (it was written before qvgen sealed its manifests), so an edit "
            f"to it cannot be detected; {remedy}, or, if you know it is unedited, seal it as it is with "
            f"`python -c \"from qvgen.core import seal_manifest_file; seal_manifest_file('{p}')\"`"
        )
    content = _unsealed(data)
    if stored == canonical_digest(content):
        return
    recorded = data.get("field_digests")
    if not isinstance(stored, str) or not _is_str_map(recorded):
        raise ValueError(
            f"{p}: the manifest's seal (digest, field_digests) is malformed or was edited; {remedy}"
        )
    assert isinstance(recorded, Mapping)
    edited = _edited_fields(dict(recorded), field_digests(content), content)
    what = ", ".join(edited) if edited else "its seal (digest, field_digests)"
    raise ValueError(
        f"{p}: the manifest was edited after it was written (changed: {what}); its digest no longer matches. "
        f"A manifest describes the tensors beside it and must not be edited; {remedy}"
    )


def field_digests(data: Mapping[str, Any]) -> dict[str, str]:
    """A short digest per field of the (unsealed) JSON manifest `data`; see the module docstring."""
    out: dict[str, str] = {}
    for key, value in data.items():
        if key not in SEAL_FIELDS:
            _flatten(_name(None, key), value, out)
    return out


def _flatten(path: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, Mapping) and value:
        for key, item in value.items():
            _flatten(_name(path, key), item, out)
        return
    rows = _named_rows(value)
    if rows is not None:
        for row in rows:
            out[f"{path}[{row['name']!r}]"] = _short(row)
        for column in sorted({k for row in rows for k in row}):
            out[f"{path}[*].{column}"] = _short([row.get(column, "<absent>") for row in rows])
        return
    out[path] = _short(value)


def _named_rows(value: Any) -> list[Mapping[str, Any]] | None:
    """`value` if it is a non-empty list of objects with unique string `name`s, else None."""
    if not isinstance(value, list) or not value:
        return None
    if not all(isinstance(v, Mapping) and isinstance(v.get("name"), str) for v in value):
        return None
    names = [v["name"] for v in value]
    return value if len(set(names)) == len(names) else None


def _edited_fields(recorded: dict[str, str], now: dict[str, str], content: Mapping[str, Any]) -> list[str]:
    changed = sorted(k for k in recorded.keys() & now.keys() if recorded[k] != now[k])
    removed = sorted(recorded.keys() - now.keys())
    added = sorted(now.keys() - recorded.keys())
    rows = [k for k in changed if not _is_column(k) and k.endswith("]")]
    columns = [k for k in changed if _is_column(k)]
    rows_moved = any(k.endswith("]") and not _is_column(k) for k in removed + added)
    names: list[str] = []
    for column in columns:
        base, field = column.split("[*].", 1)
        hit = [r for r in rows if r.startswith(base + "[")]
        if not hit:
            if not rows_moved:
                names.append(column)
        elif len(hit) <= _MAX_NAMED:
            names.extend(f"{r}.{field}" for r in hit)
        else:
            names.append(f"{column} ({len(hit)} entries)")
    named_bases = {c.split("[*].", 1)[0] for c in columns}
    names += [r for r in rows if not any(r.startswith(b + "[") for b in named_bases)]
    names += [k for k in changed if not _is_column(k) and k not in rows]
    names += [f"{k} (removed)" for k in removed if not _is_column(k)]
    names += [f"{k} (added)" for k in added if not _is_column(k)]
    if len(names) > _MAX_NAMED:
        names = [*names[:_MAX_NAMED], f"… ({len(names) - _MAX_NAMED} more)"]
    return names


def _is_column(key: str) -> bool:
    return "[*]." in key


def _name(parent: str | None, key: Any) -> str:
    key = str(key)
    if key.isidentifier():
        return key if parent is None else f"{parent}.{key}"
    return f"{parent or ''}[{key!r}]"


def _short(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:_FIELD_DIGEST_HEX]


def _unsealed(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in SEAL_FIELDS}


def _json_dict(manifest: Any) -> dict[str, Any]:
    if hasattr(manifest, "model_dump_json"):
        data = json.loads(manifest.model_dump_json())
    else:
        data = json.loads(canonical_json(manifest))
    if not isinstance(data, dict):
        raise TypeError(f"a manifest is a JSON object, got {type(data).__name__}")
    return data


def _is_str_map(value: Any) -> bool:
    return isinstance(value, Mapping) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )
