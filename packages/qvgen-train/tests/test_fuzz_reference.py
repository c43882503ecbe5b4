"""Fuzzing the reference checkpoints a user hands `import-reference` (issue 32): a mutated
`diffusion_pytorch_model.safetensors` (header fields, 8-byte length, body), a mutated `config.json`, or a
safetensors index with odd file names, either imports or is one `ValueError` (`ReferenceImportError`) naming the
file; never a traceback, a hang, a write into the input folder, or a partial `--out` folder.

Inputs start from a real reference-format checkpoint of the tiny Wan (`qvgen.train.testing`).
`QVGEN_FUZZ_PROFILE=slow` runs ten times more; `QVGEN_FUZZ_COUNTS=FILE` counts them.
"""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from qvgen.core.fuzzing import (
    Blob,
    check_loader,
    fuzz_settings,
    junk_values,
    mutated_bytes,
    mutated_safetensors,
    mutated_trees,
)
from qvgen.models import get_family
from qvgen.models.testing import tiny_checkpoint
from qvgen.train import import_reference
from qvgen.train.testing import write_reference_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")
TENSORS = "diffusion_pytorch_model.safetensors"
INDEX = "diffusion_pytorch_model.safetensors.index.json"


@functools.cache
def valid_reference() -> dict[str, bytes]:
    """Every file of a real reference checkpoint folder of the tiny Wan (W4A4, 50 groups)."""
    torch.manual_seed(0)
    transformer = get_family("wan").load_transformer(tiny_checkpoint("wan"), dtype="float32")
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_reference_checkpoint(transformer, Path(tmp) / "transformer", seed=1)
        return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@st.composite
def reference_folders(draw: st.DrawFn) -> dict[str, Blob]:
    files = dict(valid_reference())
    how = draw(st.sampled_from(["same", "tensors", "tensors", "tensors", "config", "config_bytes", "index"]))
    if how == "tensors":
        files[TENSORS] = draw(mutated_safetensors(files[TENSORS]))
    elif how == "config":
        tree = draw(mutated_trees(json.loads(files["config.json"])))
        files["config.json"] = json.dumps(tree, allow_nan=True).encode("utf-8", errors="surrogatepass")
    elif how == "config_bytes":
        files["config.json"] = draw(mutated_bytes(files["config.json"]))
    else:  # a sharded checkpoint's index: file names that are missing, paths, junk
        name = draw(
            st.sampled_from(
                [TENSORS, "missing.safetensors", "../outside.safetensors", "/etc/passwd", "", "."]
            )
        )
        header_keys = ["blocks.0.attn1.to_q.w", "proj_out.w"]
        weight_map = {k: name for k in header_keys} if draw(st.booleans()) else draw(junk_values)
        files[INDEX] = json.dumps({"weight_map": weight_map}, allow_nan=True).encode(
            "utf-8", errors="surrogatepass"
        )
    return {k: Blob(v) for k, v in files.items()}


def _student_written(result: object) -> None:
    assert isinstance(result, Path) and (result / "student_manifest.json").is_file(), result


@fuzz_settings(40)
@given(reference_folders())
def test_fuzzed_reference_checkpoint_imports_or_is_one_error_naming_the_file(files: dict[str, bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "transformer"
        folder.mkdir()
        for name, data in files.items():
            (folder / name).write_bytes(data)
        out = Path(tmp) / "student"
        check_loader(
            "train.import_reference",
            lambda: import_reference(folder, tiny_checkpoint("wan"), out),
            folder=folder,
            names=[str(folder)],
            validate=_student_written,
            outputs=[out],
        )


def _reference(tmp_path: Path, **replace: bytes) -> Path:
    folder = tmp_path / "transformer"
    folder.mkdir()
    for name, data in {**valid_reference(), **replace}.items():
        (folder / name).write_bytes(data)
    return folder


@pytest.mark.parametrize(
    ("replace", "message"),
    [
        # found by the fuzzing above
        ({"config.json": b"\x80{}"}, "config.json: not valid JSON"),  # was UnicodeDecodeError
        ({"config.json": b"[1, 2]"}, "config.json: expected a JSON object"),  # was AttributeError
        (
            {INDEX: json.dumps({"weight_map": {"proj_out.w": "../outside.safetensors"}}).encode()},
            "bare file names",
        ),
    ],
)
def test_reference_checkpoint_that_used_to_escape_is_one_error_naming_the_file(
    tmp_path: Path, replace: dict[str, bytes], message: str
) -> None:
    folder = _reference(tmp_path, **replace)
    with pytest.raises(ValueError, match=message) as info:
        import_reference(folder, tiny_checkpoint("wan"), tmp_path / "student")
    assert str(folder) in str(info.value).splitlines()[0]
    assert not (tmp_path / "student").exists() or not any((tmp_path / "student").iterdir())
