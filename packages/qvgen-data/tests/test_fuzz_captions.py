"""Fuzzing the caption tables a user feeds precompute (issue 32): every `.csv`/`.jsonl` either reads as
`VideoRecord`s or is one `ValueError` naming the file (and line); never a traceback, a hang or a write.

Inputs start from the `captions.csv` that `write_procedural_dataset` writes (and the same rows as JSONL),
mutated row by row and byte by byte. `QVGEN_FUZZ_PROFILE=slow` runs ten times more; `QVGEN_FUZZ_COUNTS=FILE`
counts them.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qvgen.core.fuzzing import (
    Blob,
    check_loader,
    fuzz_settings,
    junk_scalars,
    junk_values,
    mutated_bytes,
    mutated_text,
    mutated_trees,
)
from qvgen.data import IngestConfig, VideoRecord, read_caption_table, write_procedural_dataset

pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")


@functools.cache
def valid_rows() -> tuple[dict[str, str], ...]:
    """The rows of a real procedural captions.csv (3 clips)."""
    with tempfile.TemporaryDirectory() as tmp:
        table = write_procedural_dataset(tmp, 3, seed=5, frames=5, height=16, width=16)
        return tuple(csv.DictReader(io.StringIO(table.read_text(), newline="")))


def _csv_text(rows: list[dict], header: list[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    for row in rows:
        writer.writerow(row if isinstance(row, list) else [row.get(h, "") for h in header])
    return out.getvalue()


HUGE_FIELD = "x" * 140_000
"""Past the csv module's default field limit (131072 characters)."""


@st.composite
def csv_tables(draw: st.DrawFn) -> bytes:
    rows: list = [dict(r) for r in valid_rows()]
    header = list(rows[0])
    how = draw(st.sampled_from(["same", "cells", "header", "ragged", "text", "bytes", "huge"]))
    if how == "cells":
        for _ in range(draw(st.integers(1, 3))):
            row = draw(st.sampled_from(rows))
            row[draw(st.sampled_from(header))] = str(draw(junk_scalars))
    elif how == "header":
        header[draw(st.integers(0, len(header) - 1))] = draw(
            st.sampled_from(["", "Video", "caption ", "id", "\ufeffvideo"])
        )
        rows = [list(r.values()) for r in rows]
    elif how == "ragged":  # more or fewer fields than the header
        i = draw(st.integers(0, len(rows) - 1))
        values = list(rows[i].values())
        rows[i] = (
            values + draw(st.lists(st.text(max_size=5), min_size=1, max_size=3))
            if draw(st.booleans())
            else values[:1]
        )
    elif how == "huge":
        rows[0]["caption"] = HUGE_FIELD
    text = _csv_text(rows, header)
    if how == "text":
        text = draw(mutated_text(text))
    data = text.encode("utf-8", errors="surrogatepass")
    if how == "bytes":
        data = draw(mutated_bytes(data))
    return Blob(data)


@st.composite
def jsonl_tables(draw: st.DrawFn) -> bytes:
    rows = [draw(mutated_trees(dict(r), max_mutations=1)) for r in valid_rows()]
    lines = [json.dumps(r, allow_nan=True, ensure_ascii=draw(st.booleans())) for r in rows]
    how = draw(st.sampled_from(["same", "same", "line", "text", "bytes"]))
    if how == "line":
        junk = st.one_of(
            st.sampled_from(
                [
                    "[" * 100_000,
                    '{"video": ' * 5000 + "1" + "}" * 5000,
                    '{"video": "a.mp4", "caption": ' + "1" * 5000 + "}",
                    '{"video": "a.mp4", "caption": 1e999}',
                    '{"video": "a.mp4", "caption": NaN}',
                    '{"video": "a.mp4", "video": "b.mp4", "caption": "x"}',
                    '{"video": "\\ud800", "caption": "x"}',
                    "null",
                    "[]",
                    '"text"',
                    "\x00",
                    "\u2028",
                ]
            ),
            junk_values.map(lambda v: json.dumps(v, allow_nan=True)),
        )
        lines.insert(draw(st.integers(0, len(lines))), draw(junk))
    text = "\n".join(lines) + "\n"
    if how == "text":
        text = draw(mutated_text(text))
    data = text.encode("utf-8", errors="surrogatepass")
    if how == "bytes":
        data = draw(mutated_bytes(data))
    return Blob(data)


def _check_table(suffix: str, data: bytes, id_column: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / f"captions{suffix}"
        path.write_bytes(data)
        cfg = IngestConfig(captions=path, id_column=id_column)

        def valid(records: object) -> None:
            assert isinstance(records, list)
            for r in records:
                assert isinstance(r, VideoRecord) and isinstance(r.id, str) and isinstance(r.caption, str)
                assert isinstance(r.video, Path)

        check_loader(
            f"data.read_caption_table{suffix}",
            lambda: read_caption_table(cfg),
            folder=folder,
            names=[str(path)],
            validate=valid,
        )


ID_COLUMNS = st.sampled_from([None, None, "index", "seed", "missing"])


@fuzz_settings(200)
@given(csv_tables(), ID_COLUMNS)
def test_fuzzed_csv_caption_table_reads_or_is_one_error_naming_the_file(
    data: bytes, id_column: str | None
) -> None:
    _check_table(".csv", data, id_column)


@fuzz_settings(200)
@given(jsonl_tables(), ID_COLUMNS)
def test_fuzzed_jsonl_caption_table_reads_or_is_one_error_naming_the_file(
    data: bytes, id_column: str | None
) -> None:
    _check_table(".jsonl", data, id_column)


@pytest.mark.parametrize(
    ("suffix", "text", "message"),
    [
        # found by the fuzzing above; each used to escape as an internal exception
        (
            ".csv",
            "video,caption\na.mp4,red,extra\n",
            "3 fields, the header has 2",
        ),  # was TypeError (None key in sorted(row))
        (".csv", f"video,caption\na.mp4,{HUGE_FIELD}\n", "not a valid CSV row"),  # was csv.Error
        (
            ".jsonl",
            '{"video": "a.mp4", "caption": ' + "1" * 5000 + "}\n",
            "invalid JSON line",
        ),  # bare ValueError
        (".jsonl", "[" * 100_000 + "\n", "invalid JSON line"),  # was RecursionError
    ],
)
def test_caption_table_that_used_to_escape_is_one_error_naming_the_file_and_line(
    tmp_path: Path, suffix: str, text: str, message: str
) -> None:
    path = tmp_path / f"captions{suffix}"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        read_caption_table(IngestConfig(captions=path, id_column=None))
    assert str(info.value).startswith(f"{path}:")
