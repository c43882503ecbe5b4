"""Property-based fuzzing of the files users feed qvgen (issue 32): strategies, the property, the counts.

For tests only: it imports `hypothesis`, which every test venv installs and no qvgen package needs at run time
(so `qvgen.core` does not export it; tests import `qvgen.core.fuzzing`). Each package's `tests/test_fuzz_*.py`
starts from valid files made by its own helpers, mutates them with the strategies here and checks
`check_loader`'s property on each input:

- the loader returns (a valid object), or raises a documented user error (`ValueError`, its subclasses
  `ConfigError`/`ShardFormatError`/..., or `OSError`; `cli_main` prints those as one line) whose message is one
  line (no newline) naming the file, and not a bare internal message (`UnicodeDecodeError`,
  `json.JSONDecodeError`, ... unwrapped fail);
- no other exception (`KeyError`, `TypeError`, `IndexError`, `struct.error`, `RecursionError`, `MemoryError`);
- no hang: each call runs under a wall-clock alarm (`CASE_TIMEOUT_S`);
- no partial write: the input folder is byte-for-byte unchanged afterwards.

Budget: `fuzz_settings(n)` runs `n` examples per test by default (the whole fuzz suite of a package stays within
about a minute on the 2-core machine), `SLOW_FACTOR × n` when `QVGEN_FUZZ_PROFILE=slow` (`nox -s slow` sets it).
Examples are derandomized: every run draws the same inputs.

Counting: with `QVGEN_FUZZ_COUNTS=FILE`, every checked input is added to the JSON in FILE (created if missing,
merged across pytest processes run one after the other):
``{"fuzz_cases": N, "fuzz_failures": F, "loaders": {"<loader>": {"cases": n, "accepted": a, "failures": f,
"first_failure": str}}}`` (`accepted`: inputs that loaded as a valid object).
`benchmarks/reliability.py` runs the fuzz tests with it set and reads ``fuzz_cases``/``fuzz_failures``:
`run_fuzz_suite(root, counts_file)` (or ``python -m qvgen.core.fuzzing --counts FILE ROOT``, which prints
``fuzz_cases=N fuzz_failures=F`` last) runs every ``packages/*/tests/test_fuzz*.py``, one pytest per package.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import signal
import struct
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

PROFILE_ENV = "QVGEN_FUZZ_PROFILE"
"""`slow`: `SLOW_FACTOR` times more examples per fuzz test (`nox -s slow`); anything else: the default budget."""
COUNTS_ENV = "QVGEN_FUZZ_COUNTS"
"""Path of the JSON file the checked inputs are counted in (unset: not counted)."""
SLOW_FACTOR = 10
CASE_TIMEOUT_S = 20.0
"""A single load taking longer than this is a hang (the slowest valid load here takes well under a second)."""
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError)
"""What qvgen's loaders document for bad input; `qvgen.core.cli_main` turns them into one line, exit 1."""
INTERNAL_VALUE_ERRORS: tuple[type[BaseException], ...] = (UnicodeError, json.JSONDecodeError)
"""`ValueError` subclasses that mean a loader let a parser's error through unwrapped."""


def fuzz_profile() -> str:
    """`"slow"` or `"default"`, from `QVGEN_FUZZ_PROFILE`."""
    return "slow" if os.environ.get(PROFILE_ENV, "").strip().lower() == "slow" else "default"


def fuzz_examples(default: int) -> int:
    """Examples per test: `default`, or `SLOW_FACTOR × default` in the slow profile."""
    return default * SLOW_FACTOR if fuzz_profile() == "slow" else default


def fuzz_settings(default: int) -> settings:
    """hypothesis settings for one fuzz test: `fuzz_examples(default)` derandomized examples, no deadline
    (the alarm in `check_loader` catches hangs), no example database written into the repository."""
    return settings(
        max_examples=fuzz_examples(default),
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


# --------------------------------------------------------------------------------------------- the property


class Blob(bytes):
    """Bytes with a short repr, so hypothesis reports a failing file as its size and digest, not megabytes
    (the examples are derandomized: rerunning the test reproduces it)."""

    def __repr__(self) -> str:
        return f"Blob(<{len(self)} bytes, sha256 {hashlib.sha256(self).hexdigest()[:12]}, starts {bytes(self[:40])!r}>)"


class FuzzHang(Exception):
    """Raised inside a loader that ran past `CASE_TIMEOUT_S`."""


@contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    if (
        not hasattr(signal, "setitimer")
        or seconds <= 0
        or threading.current_thread() is not threading.main_thread()
    ):
        yield
        return

    def fire(signum: int, frame: object) -> None:
        raise FuzzHang(f"the loader ran longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path → sha256 of every file under `folder` (folders as "dir"): what "unchanged" compares."""
    out: dict[str, str] = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink() or not p.is_file():
            out[rel] = "dir" if p.is_dir() else "other"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def check_loader(
    loader: str,
    call: Callable[[], Any],
    *,
    folder: Path,
    names: Sequence[str | os.PathLike[str]],
    validate: Callable[[Any], object] | None = None,
    errors: tuple[type[BaseException], ...] = USER_ERRORS,
    timeout_s: float = CASE_TIMEOUT_S,
    outputs: Sequence[Path] = (),
) -> Any:
    """Run `call()` once and assert the fuzz property; count the input under `loader`.

    `names`: the paths (or file names) of which the error's one line must mention at least one. `folder`:
    the input folder that must be unchanged afterwards. `validate(result)` may assert more about a returned
    object. `outputs`: what a loader that also writes (an importer) must not leave behind, as a file or a
    non-empty folder, when it refuses the input. Returns the result (None when the loader refused the input).
    """
    before = snapshot(folder)
    problem: str | None = None
    result = None
    accepted = False
    try:
        with _alarm(timeout_s):
            result = call()
        if validate is not None:
            validate(result)
        accepted = True
    except errors as e:
        problem = _bad_user_error(e, names)
    except AssertionError as e:
        problem = f"returned an invalid object: {e}"
    except FuzzHang as e:
        problem = f"hang: {e}"
    except Exception as e:  # the point: any other exception is a finding
        problem = f"internal {type(e).__name__}: {_first_line(str(e))[:300]}"
    after = snapshot(folder)
    if problem is None and not accepted:
        left = [str(p) for p in outputs if p.is_file() or (p.is_dir() and any(p.iterdir()))]
        if left:
            problem = f"a refused input left a partial output behind: {left}"
    if problem is None and after != before:
        changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        problem = f"the loader changed its input folder: {changed[:5]}"
    record_case(loader, problem, accepted=accepted)
    if problem is not None:
        raise AssertionError(f"{loader}: {problem}")
    return result


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _bad_user_error(e: BaseException, names: Sequence[str | os.PathLike[str]]) -> str | None:
    if isinstance(e, INTERNAL_VALUE_ERRORS):
        return f"unwrapped {type(e).__name__}: {_first_line(str(e))[:300]}"
    first = _first_line(str(e))
    if not first:
        return f"{type(e).__name__} with an empty message"
    wanted = [os.fspath(n) for n in names]
    if not any(w and w in first for w in wanted):
        return f"{type(e).__name__} whose first line names none of {wanted}: {first[:300]!r}"
    if "\n" in str(e).strip():
        return f"{type(e).__name__} of {len(str(e).strip().split(chr(10)))} lines: {first[:200]!r}"
    return None


def record_case(
    loader: str, problem: str | None, *, accepted: bool = False, counts: str | os.PathLike[str] | None = None
) -> None:
    """Add one checked input (failed when `problem` is not None; `accepted`: the loader returned a valid
    object) to the `counts` file, by default the `QVGEN_FUZZ_COUNTS` one (nothing when neither is set)."""
    target = counts if counts is not None else os.environ.get(COUNTS_ENV)
    if not target:
        return
    path = Path(target)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    loaders = data.setdefault("loaders", {})
    entry = loaders.setdefault(loader, {"cases": 0, "failures": 0, "accepted": 0})
    entry["cases"] += 1
    entry["accepted"] = entry.get("accepted", 0) + int(accepted)
    if problem is not None:
        entry["failures"] += 1
        entry.setdefault("first_failure", problem[:500])
    data["fuzz_cases"] = sum(v["cases"] for v in loaders.values())
    data["fuzz_failures"] = sum(v["failures"] for v in loaders.values())
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------- strategies

HUGE_INT = 10**400
"""Past float range and past what any count field accepts (below Python's 4300-digit str limit)."""

junk_scalars: st.SearchStrategy[Any] = st.one_of(
    st.booleans(),
    st.none(),
    st.integers(),
    st.sampled_from([0, -1, 1, 2**31, 2**63, -(2**63) - 1, HUGE_INT, -HUGE_INT]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e308, 5e-324]),
    st.text(max_size=12),
    st.sampled_from(
        ["", "yes", "no", "on", "off", "1", "1e3", "0x10", "NaN", "inf", "~", "$HOME/x", "~/x", "null"]
    ),
    st.sampled_from(["\x00", "\ud7ff\ue000", "é", "日本語", "\u2028", "a\nb", "💥" * 3, "../../etc/passwd"]),
)
"""Values of the wrong type or out of range: bools for numbers, strings for numbers, NaN/inf, huge ints, unicode."""

junk_values: st.SearchStrategy[Any] = st.recursive(
    junk_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.text(max_size=6), inner, max_size=3),
    ),
    max_leaves=6,
)


NUMBER_SPECIALS: list[Any] = [
    math.nan, math.inf, -math.inf, HUGE_INT, -HUGE_INT, -1, 0, 2**63, 2**64, 1e308, 0.5, True, False, None, "1", "1e3"
]  # fmt: skip
STRING_SPECIALS: list[Any] = [
    "", " ", "\x00", "é", "\ud800", "\u2028", "~/x", "$QVGEN_FUZZ_UNSET_VARIABLE/x", "../x", "x" * 5000, 1, 1.5, None,
    True, [], {},
]  # fmt: skip


def retyped(value: Any) -> st.SearchStrategy[Any]:
    """Values of the wrong kind for where `value` sits: NaN/inf/huge/bool/str for a number, odd or non-strings
    for a string, numbers for a bool, emptied or doubled containers."""
    if isinstance(value, bool):
        return st.sampled_from([0, 1, "true", "yes", "on", None, 1.0])
    if isinstance(value, int | float):
        return st.sampled_from(NUMBER_SPECIALS)
    if isinstance(value, str):
        return st.sampled_from(STRING_SPECIALS)
    if isinstance(value, list):
        return st.sampled_from([[], value + value, value[:1], [value], {"0": value}, None, "a, b"])
    if isinstance(value, dict):
        return st.sampled_from([{}, [value], None, "x", {**value, "": None}])
    return junk_scalars


def paths_of(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path (key/index tuple) into a tree of dicts and lists, the root `()` first."""
    out = [prefix]
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += paths_of(v, (*prefix, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out += paths_of(v, (*prefix, i))
    return out


def _deep(value: Any, depth: int) -> Any:
    for _ in range(depth):
        value = {"a": [value]}
    return value


@st.composite
def mutated_trees(draw: st.DrawFn, tree: Any, max_mutations: int = 3) -> Any:
    """`tree` (a JSON-like tree) with 0..max_mutations random edits: a value replaced by junk or by another
    node of the tree, a key deleted, an unknown key added, a value wrapped in deep nesting. 0 edits (the
    valid tree itself) is drawn often, so valid inputs are exercised too."""
    tree = json.loads(json.dumps(tree))
    for _ in range(draw(st.sampled_from([0, 0, *range(1, max_mutations + 1)]))):
        paths = paths_of(tree)
        path = draw(st.sampled_from(paths))
        parent: Any = _get(tree, path[:-1]) if path else None
        kind = draw(
            st.sampled_from(["retype", "retype", "retype", "replace", "delete", "add", "graft", "deep"])
        )
        if kind == "retype":  # copied: a drawn [] or {} is shared with later draws, and may be edited below
            value = copy.deepcopy(draw(retyped(_get(tree, path))))
        elif kind == "replace":
            value = copy.deepcopy(draw(junk_values))
        elif kind == "graft":
            value = json.loads(json.dumps(_get(tree, draw(st.sampled_from(paths)))))
        elif kind == "deep":
            value = _deep(copy.deepcopy(_get(tree, path)), draw(st.integers(1, 40)))
        elif kind == "add":
            target = _get(tree, path)
            if isinstance(target, dict):
                target[draw(st.text(min_size=1, max_size=8))] = copy.deepcopy(draw(junk_values))
            elif isinstance(target, list):
                target.append(copy.deepcopy(draw(junk_values)))
            continue
        else:  # delete
            if isinstance(parent, dict) and path[-1] in parent:
                del parent[path[-1]]
            elif isinstance(parent, list) and path[-1] < len(parent):
                parent.pop(path[-1])
            continue
        if not path:
            tree = value
        else:
            parent[path[-1]] = value
    return tree


def _get(tree: Any, path: Sequence[Any]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _yaml_dump(tree: Any, unicode: bool, flow: bool) -> str:
    import yaml  # PyYAML: a qvgen-core dependency

    return yaml.safe_dump(tree, allow_unicode=unicode, default_flow_style=flow, sort_keys=False)


def _json_dump(tree: Any) -> str:
    return json.dumps(tree, allow_nan=True, ensure_ascii=False)


TEXT_JUNK = [
    "",
    "\n",
    "- a\n- b\n",
    "just a string\n",
    "42\n",
    "null\n",
    "[" * 200 + "]" * 200,
    "{a: " * 2000 + "1" + "}" * 2000,
    "- " * 500 + "x\n",
    "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefg", "bcdefgh", strict=True)
    ),
    "? [a, b]\n: 1\n",
    "? {a: 1}\n: 1\n",
    "a: !!python/object:os.system x\n",
    "a: !!binary aGVsbG8=\n",
    "a: !!set {x, y}\n",
    "a: 2001-12-14t21:59:43.10-05:00\n",
    "a: " + "9" * 5000 + "\n",
    "a: 1e999999\n",
    "a:\tb\n",
    "%YAML 9.9\n---\na: 1\n",
    "---\na: 1\n---\nb: 2\n",
    "\ufeffa: 1\n",
    "a: '\\x00'\n",
    'a: "\\ud800"\n',
]
"""Whole documents no config should accept: wrong tops, deep nesting, alias bombs, complex keys, tags, huge
numbers, multiple documents."""


@st.composite
def mutated_text(draw: st.DrawFn, text: str) -> str:
    """Text-level edits of a document: a line duplicated (duplicate keys), a cut, junk inserted."""
    lines = text.splitlines(keepends=True) or [""]
    kind = draw(st.sampled_from(["dup", "cut", "insert", "junk_line", "drop_line"]))
    i = draw(st.integers(0, len(lines) - 1))
    if kind == "dup":
        lines.insert(i, lines[i])
    elif kind == "drop_line":
        lines.pop(i)
    elif kind == "junk_line":
        lines.insert(
            i, draw(st.sampled_from([*TEXT_JUNK, ": x\n", "- y\n", "  z: 1\n", "'\n", '"\n', "&a\n"]))
        )
    else:
        joined = "".join(lines)
        at = draw(st.integers(0, len(joined)))
        if kind == "cut":
            return joined[:at]
        return joined[:at] + draw(st.text(max_size=8)) + joined[at:]
    return "".join(lines)


@st.composite
def config_documents(draw: st.DrawFn, tree: Mapping[str, Any]) -> bytes:
    """Config file bytes derived from a valid `tree`: YAML or JSON of a mutated tree (often the valid tree),
    text edits (duplicate keys, cuts), whole junk documents, non-UTF-8 bytes."""
    how = draw(st.sampled_from(["yaml", "yaml", "yaml", "json", "text", "junk", "bytes"]))
    if how == "junk":
        return Blob(draw(st.sampled_from(TEXT_JUNK)).encode())
    if how == "bytes":
        base = _yaml_dump(dict(tree), True, False).encode()
        return Blob(draw(mutated_bytes(base)))
    mutated = draw(mutated_trees(dict(tree)))
    if how == "json":
        return Blob(_json_dump(mutated).encode("utf-8", errors="surrogatepass"))
    text = _yaml_dump(mutated, draw(st.booleans()), draw(st.booleans()))
    if how == "text":
        text = draw(mutated_text(text))
    return Blob(text.encode("utf-8", errors="surrogatepass"))


@st.composite
def mutated_bytes(draw: st.DrawFn, data: bytes, max_edits: int = 3) -> bytes:
    """`data` with a few byte-level edits: flips, a cut, an inserted or deleted run, invalid UTF-8."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, max_edits))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "delete", "utf8"]))
        at = draw(st.integers(0, len(buf)))
        if kind == "flip" and buf:
            at = min(at, len(buf) - 1)
            buf[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del buf[at:]
        elif kind == "insert":
            buf[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del buf[at : at + draw(st.integers(1, 16))]
        else:
            buf[at:at] = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80\x80", b"\x00"]))
    return Blob(bytes(buf))


ST_DTYPES = ["F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL", "F8_E4M3", "U64"]


def split_safetensors(data: bytes) -> tuple[dict[str, Any], bytes]:
    """(header dict, data section) of a safetensors file."""
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def join_safetensors(header: Any, body: bytes, *, length: int | None = None, pad: bool = True) -> bytes:
    """A safetensors file from a header tree and a data section (`length` overrides the 8-byte prefix)."""
    raw = json.dumps(header, allow_nan=True).encode("utf-8", errors="surrogatepass")
    if pad:
        raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw) if length is None else length % 2**64) + raw + body


@st.composite
def mutated_safetensors(draw: st.DrawFn, data: bytes) -> bytes:
    """A safetensors file derived from the valid `data`: header fields mutated (bad dtypes, offsets out of
    range, reversed or overlapping, wrong shapes, huge numbers, junk metadata), the 8-byte length prefix
    wrong (0, huge, off by a little), a non-UTF-8 or non-JSON header, a cut or flipped data section; or the
    file unchanged."""
    header, body = split_safetensors(data)
    names = [k for k in header if k != "__metadata__"]
    how = draw(
        st.sampled_from(
            [
                "same",
                "field",
                "field",
                "field",
                "tree",
                "length",
                "header_bytes",
                "body",
                "bytes",
                "swap_data",
            ]
        )
    )
    if how == "same":
        return Blob(data)
    if how == "field" and names:
        name = draw(st.sampled_from(names))
        entry = header[name]
        field = draw(st.sampled_from(["dtype", "shape", "data_offsets", "offset_overlap", "rename", "drop"]))
        if field == "dtype":
            entry["dtype"] = draw(
                st.one_of(st.sampled_from([*ST_DTYPES, "f32", "", "F4", "F8_E5M2"]), junk_scalars)
            )
        elif field == "shape":
            entry["shape"] = draw(
                st.one_of(
                    st.lists(st.integers(-2, 2**40), max_size=5),
                    st.lists(st.sampled_from([0, 1, 2**63, 2**64 + 1]), max_size=4),
                    junk_scalars,
                )
            )
        elif field == "data_offsets":
            entry["data_offsets"] = draw(
                st.one_of(
                    st.lists(st.integers(-5, len(body) + 64), min_size=2, max_size=2),
                    st.lists(
                        st.sampled_from([0, 2**63, 2**64 - 1, 2**64 + 5, HUGE_INT]), min_size=0, max_size=3
                    ),
                    junk_scalars,
                )
            )
        elif field == "offset_overlap" and len(names) > 1:
            other = header[draw(st.sampled_from([n for n in names if n != name]))]
            entry["data_offsets"] = list(other.get("data_offsets", [0, 0]))
        elif field == "rename":
            header[draw(st.text(max_size=10))] = header.pop(name)
        else:
            del header[name]
        return Blob(join_safetensors(header, body))
    if how == "tree":
        return Blob(join_safetensors(draw(mutated_trees(header, max_mutations=2)), body))
    if how == "length":
        raw_len = len(data) - len(body) - 8
        length = draw(
            st.one_of(
                st.sampled_from(
                    [0, 1, 7, raw_len - 1, raw_len + 1, raw_len + 8, len(data), 2**32, 2**63, 2**64 - 1]
                ),
                st.integers(0, 2**64 - 1),
            )
        )
        return Blob(struct.pack("<Q", length) + data[8:])
    if how == "header_bytes":
        raw = json.dumps(header).encode()
        raw = draw(mutated_bytes(raw, max_edits=2))
        return Blob(struct.pack("<Q", len(raw)) + raw + body)
    if how == "body":
        return Blob(join_safetensors(header, draw(mutated_bytes(body, max_edits=2)) if body else b""))
    if how == "swap_data":
        return Blob(data[: len(data) - len(body)] + body[: draw(st.integers(0, max(0, len(body) - 1)))])
    return Blob(draw(mutated_bytes(data)))


# --------------------------------------------------------------------------------------------- the suite


def sealed_json(tree: object) -> bytes:
    """`tree` as a sealed manifest (`qvgen.core.seal_manifest`); a tree that cannot be sealed (not a mapping,
    NaN, ...) is written unsealed, so the loader's own refusal is what gets tested."""
    from qvgen.core.seal import seal_manifest

    try:
        return json.dumps(seal_manifest(tree), indent=2, allow_nan=True).encode(
            "utf-8", errors="surrogatepass"
        )
    except (TypeError, ValueError, AttributeError):
        return json.dumps(tree, allow_nan=True).encode("utf-8", errors="surrogatepass")


@st.composite
def mutated_manifest_folders(
    draw: st.DrawFn,
    manifest_bytes: bytes,
    tensors: bytes,
    vouch: Callable[[dict[str, Any], bytes], dict[str, Any]],
    kinds: Sequence[str] = ("same", "manifest", "manifest", "manifest_text", "tensors", "tensors"),
) -> tuple[Blob, Blob]:
    """(manifest, tensors) of a sealed-manifest folder with one of them mutated, or neither (`kinds` weights
    the choice). A mutated tensors file usually comes with a manifest that `vouch`es for it (its size and
    sha256 updated, re-sealed), so the safetensors header itself is what the loader parses."""
    manifest = json.loads(manifest_bytes)
    how = draw(st.sampled_from(list(kinds)))
    if how == "manifest":
        tree = draw(mutated_trees(manifest))
        return Blob(sealed_json(tree) if draw(st.integers(0, 3)) else json.dumps(tree).encode()), Blob(
            tensors
        )
    if how == "manifest_text":
        if draw(st.booleans()):
            return Blob(draw(mutated_bytes(manifest_bytes))), Blob(tensors)
        text = draw(mutated_text(manifest_bytes.decode()))
        return Blob(text.encode("utf-8", errors="surrogatepass")), Blob(tensors)
    if how == "tensors":
        new = draw(mutated_safetensors(tensors))
        if draw(st.integers(0, 4)):
            manifest_bytes = sealed_json(vouch(manifest, new))
        return Blob(manifest_bytes), Blob(new)
    return Blob(manifest_bytes), Blob(tensors)


def run_fuzz_suite(
    root: str | os.PathLike[str], counts: str | os.PathLike[str], *, slow: bool = False
) -> dict[str, Any]:
    """Run every `packages/*/tests/test_fuzz*.py` under `root` (one pytest process per package, as
    `nox -s "tests(<pkg>)"` does), counting into the JSON file `counts` (emptied first); return its content.

    A package whose fuzz tests fail without a counted failing input (a test that errored before drawing one)
    adds a failure under ``"<package>: pytest exit N"``, so ``fuzz_failures`` is 0 only when every test passed.
    """
    import subprocess
    import sys

    root_path, counts_path = Path(root), Path(counts)
    counts_path.unlink(missing_ok=True)
    env = {**os.environ, COUNTS_ENV: str(counts_path.resolve()), PROFILE_ENV: "slow" if slow else "default"}
    for package in sorted((root_path / "packages").iterdir()):
        files = sorted(str(p) for p in (package / "tests").glob("test_fuzz*.py"))
        if not files:
            continue
        before = _failures(counts_path)
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files],
            cwd=root_path, env=env, capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode != 0:  # the report only when something failed
            print(done.stdout[-4000:], done.stderr[-2000:], sep="\n", file=sys.stderr)
        if done.returncode != 0 and _failures(counts_path) == before:
            record_case(f"{package.name}: pytest", f"pytest exited {done.returncode}", counts=counts_path)
    if not counts_path.exists():
        record_case(
            "no fuzz tests found", f"no packages/*/tests/test_fuzz*.py under {root_path}", counts=counts_path
        )
    return dict(json.loads(counts_path.read_text()))


def _failures(path: Path) -> int:
    try:
        return int(json.loads(path.read_text()).get("fuzz_failures", 0))
    except (OSError, ValueError):
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m qvgen.core.fuzzing [--slow] [--counts FILE] [ROOT]`: the whole fuzz suite of the checkout at ROOT
    (default: the current folder); prints ``fuzz_cases=N fuzz_failures=F`` last; exit 1 when F > 0."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m qvgen.core.fuzzing", description=main.__doc__)
    parser.add_argument("root", nargs="?", default=".", help="the qvgen checkout (holds packages/)")
    parser.add_argument("--counts", default="fuzz_counts.json", help="JSON file the counts are written to")
    parser.add_argument(
        "--slow", action="store_true", help=f"{SLOW_FACTOR}x the examples ({PROFILE_ENV}=slow)"
    )
    args = parser.parse_args(argv)
    data = run_fuzz_suite(args.root, args.counts, slow=args.slow)
    for name, entry in sorted(data.get("loaders", {}).items()):
        print(
            f"{name}: {entry['cases']} cases, {entry.get('accepted', 0)} accepted, {entry['failures']} failures"
        )
    print(f"fuzz_cases={data.get('fuzz_cases', 0)} fuzz_failures={data.get('fuzz_failures', 0)}")
    return 1 if data.get("fuzz_failures", 0) else 0


if __name__ == "__main__":
    raise SystemExit(main())
