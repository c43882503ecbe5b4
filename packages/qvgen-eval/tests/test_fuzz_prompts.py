"""Fuzzing the prompt files a user hands `sample`/`compare` (`prompts.file`, issue 32): a mutated `.txt` list or
VBench full-info `.json` either gives prompts or is one `ValueError`/`OSError` naming the file; never a traceback,
a hang or a write. `QVGEN_FUZZ_PROFILE=slow` runs ten times more; `QVGEN_FUZZ_COUNTS=FILE` counts them.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qvgen.core.fuzzing import Blob, check_loader, fuzz_settings, mutated_bytes, mutated_text, mutated_trees
from qvgen.eval import load_prompts

pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")
PROMPTS = ["a red square moves left", "a blue circle moves up", "two green triangles rotate"]
FULL_INFO = [
    {"prompt_en": PROMPTS[0], "dimension": ["color", "object_class"]},
    {"prompt_en": PROMPTS[1], "dimension": ["color"]},
    {"prompt_en": PROMPTS[2], "dimension": ["multiple_objects"]},
]


@st.composite
def prompt_files(draw: st.DrawFn) -> tuple[str, Blob]:
    if draw(st.booleans()):
        text = "\n".join(PROMPTS) + "\n"
        how = draw(st.sampled_from(["same", "text", "bytes"]))
        if how == "text":
            text = draw(mutated_text(text))
        data = text.encode("utf-8", errors="surrogatepass")
        return ".txt", Blob(draw(mutated_bytes(data)) if how == "bytes" else data)
    how = draw(st.sampled_from(["same", "tree", "tree", "tree", "bytes", "deep"]))
    if how == "tree":
        data = json.dumps(draw(mutated_trees(FULL_INFO)), allow_nan=True).encode(
            "utf-8", errors="surrogatepass"
        )
    elif how == "deep":
        data = b"[" * 100_000
    else:
        data = json.dumps(FULL_INFO).encode()
        if how == "bytes":
            data = draw(mutated_bytes(data))
    return ".json", Blob(data)


@fuzz_settings(200)
@given(prompt_files(), st.sampled_from([(), (), ("color",), ("nope",)]))
def test_fuzzed_prompt_file_gives_prompts_or_is_one_error_naming_the_file(
    file: tuple[str, bytes], dimensions: tuple[str, ...]
) -> None:
    suffix, data = file
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"prompts{suffix}"
        path.write_bytes(data)

        def valid(prompts: object) -> None:
            assert isinstance(prompts, list) and prompts and all(isinstance(p, str) for p in prompts), prompts

        check_loader(
            "eval.load_prompts",
            lambda: load_prompts(path, dimensions if suffix == ".json" else ()),
            folder=Path(tmp),
            names=[str(path)],
            validate=valid,
        )


@pytest.mark.parametrize(
    ("suffix", "data", "message"),
    [
        # found by the fuzzing above; each used to escape as an internal exception
        (".txt", b"a red square\n\x80\n", "not UTF-8"),  # was UnicodeDecodeError
        (".json", b"[" * 100_000, "not valid JSON"),  # was RecursionError
        (".json", b'[{"prompt_en": "a", "dimension": 3}]', "must be a list"),  # was TypeError (set(3))
        (".json", b'[{"prompt_en": "a", "dimension": [{}]}]', "must be a list"),  # was TypeError (unhashable)
    ],
)
def test_prompt_file_that_used_to_escape_is_one_error_naming_the_file(
    tmp_path: Path, suffix: str, data: bytes, message: str
) -> None:
    path = tmp_path / f"prompts{suffix}"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=message) as info:
        load_prompts(path, ("color",) if suffix == ".json" else ())
    assert str(path) in str(info.value).splitlines()[0]
