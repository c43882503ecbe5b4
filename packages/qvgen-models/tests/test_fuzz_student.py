"""Fuzzing the fake-quant student folders a user hands `load_student` (issue 32): a mutated
`student_manifest.json` (re-sealed or not) or a mutated `model.safetensors` header/body (with the manifest's
sha256 and seal updated so the file is really parsed) either loads or is one `ValueError`/`OSError` naming the
folder's file; never a traceback, a hang or a write.

Inputs start from a real student written by `save_student` on the tiny Wan (`qvgen.models.testing`).
`QVGEN_FUZZ_PROFILE=slow` runs ten times more; `QVGEN_FUZZ_COUNTS=FILE` counts them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import tempfile
from pathlib import Path

import pytest
import safetensors.torch
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from qvgen import quant
from qvgen.core.fuzzing import (
    check_loader,
    mutated_manifest_folders,
    sealed_json,
)
from qvgen.models import (
    STUDENT_MANIFEST,
    STUDENT_TENSORS,
    get_family,
    load_student,
    read_student_manifest,
    save_student,
)
from qvgen.models.testing import tiny_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")


@functools.cache
def valid_student() -> tuple[bytes, bytes]:
    """(student_manifest.json, model.safetensors) of a real W4A4 tiny-Wan student."""
    torch.manual_seed(0)
    fam, ckpt = get_family("wan"), tiny_checkpoint("wan")
    student = fam.load_transformer(ckpt)
    cfg = quant.QuantConfig.w4a4()
    quant.prepare_(student, cfg, layer_roles=fam.layer_roles)
    quant.initialize_(student, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        out = save_student(
            student, Path(tmp) / "student", family="wan", checkpoint=ckpt, quant_config=cfg, steps=3
        )
        return (out / STUDENT_MANIFEST).read_bytes(), (out / STUDENT_TENSORS).read_bytes()


_sealed = sealed_json


def _vouch(manifest: dict, tensors: bytes) -> dict:
    return {**manifest, "tensors_sha256": hashlib.sha256(tensors).hexdigest()}


def student_folders() -> st.SearchStrategy[tuple[bytes, bytes]]:
    """(manifest bytes, tensors bytes): one of the two mutated, or neither."""
    manifest_bytes, tensors = valid_student()
    kinds = ("same", "manifest", "manifest", "manifest", "manifest_text", "tensors", "tensors")
    return mutated_manifest_folders(manifest_bytes, tensors, _vouch, kinds)


def _valid(model: object) -> None:
    assert isinstance(model, nn.Module) and quant.quantized_layers(model), type(model)


@given(student_folders(), st.sampled_from(["load", "load", "manifest"]))
def test_fuzzed_student_folder_loads_or_is_one_error_naming_the_file(
    files: tuple[bytes, bytes], how: str
) -> None:
    manifest, tensors = files
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "student"
        folder.mkdir()
        (folder / STUDENT_MANIFEST).write_bytes(manifest)
        (folder / STUDENT_TENSORS).write_bytes(tensors)
        if how == "manifest":
            check_loader(
                "models.read_student_manifest",
                lambda: read_student_manifest(folder),
                folder=folder,
                names=[str(folder)],
            )
        else:
            check_loader(
                "models.load_student",
                lambda: load_student(folder),
                folder=folder,
                names=[str(folder)],
                validate=_valid,
            )


def test_the_unmutated_student_loads(tmp_path: Path) -> None:
    manifest, tensors = valid_student()
    (tmp_path / STUDENT_MANIFEST).write_bytes(manifest)
    (tmp_path / STUDENT_TENSORS).write_bytes(tensors)
    assert quant.quantized_layers(load_student(tmp_path))


def _folder(tmp_path: Path, manifest: bytes) -> Path:
    (tmp_path / STUDENT_MANIFEST).write_bytes(manifest)
    (tmp_path / STUDENT_TENSORS).write_bytes(valid_student()[1])
    return tmp_path


def test_student_manifest_that_is_not_utf8_is_one_error_naming_it(tmp_path: Path) -> None:
    """Found by the fuzzing above: a UnicodeDecodeError naming no file."""
    folder = _folder(tmp_path, b"\xff" + valid_student()[0])
    with pytest.raises(ValueError, match="not UTF-8") as info:
        read_student_manifest(folder)
    assert str(info.value).startswith(str(folder / STUDENT_MANIFEST))


def test_sealed_student_manifest_with_a_mapping_for_its_family_is_one_error_naming_it(tmp_path: Path) -> None:
    """Found by the fuzzing above: `{} in FAMILIES` raised TypeError (unhashable) out of validation."""
    manifest = json.loads(valid_student()[0])
    folder = _folder(tmp_path, _sealed({**manifest, "family": {"wan": 1}}))
    with pytest.raises(ValueError, match="unknown model family") as info:
        load_student(folder)
    assert str(info.value).startswith(str(folder / STUDENT_MANIFEST))


def test_sealed_student_manifest_with_a_missing_checkpoint_names_the_manifest(tmp_path: Path) -> None:
    """Found by the fuzzing above: "no transformer at ''" named neither the manifest nor the field."""
    manifest = json.loads(valid_student()[0])
    folder = _folder(tmp_path, _sealed({**manifest, "checkpoint": str(tmp_path / "gone")}))
    with pytest.raises(FileNotFoundError, match="cannot load the base checkpoint") as info:
        load_student(folder)
    assert str(info.value).startswith(str(folder / STUDENT_MANIFEST))


def test_invalid_sealed_student_manifest_is_one_line_naming_the_file_and_field(tmp_path: Path) -> None:
    """The fuzzing's one-line rule: pydantic's multi-line report became `field: problem (got value)`."""
    folder = _folder(tmp_path, _sealed({**json.loads(valid_student()[0]), "steps": -1}))
    with pytest.raises(ValueError) as info:
        read_student_manifest(folder)
    message = str(info.value)
    assert "\n" not in message and message.startswith(
        f"{folder / STUDENT_MANIFEST}: invalid student manifest: "
    )
    assert "steps" in message


def test_tensors_that_do_not_fit_are_one_line_naming_the_file(tmp_path: Path) -> None:
    """Found by the slow fuzzing: torch's load_state_dict error spans lines; the message is one line now."""
    manifest, tensors = valid_student()
    state = safetensors.torch.load(tensors)
    state.pop(sorted(state)[0])
    new = safetensors.torch.save(state)
    (tmp_path / STUDENT_TENSORS).write_bytes(new)
    (tmp_path / STUDENT_MANIFEST).write_bytes(
        _sealed({**json.loads(manifest), "tensors_sha256": hashlib.sha256(new).hexdigest()})
    )
    with pytest.raises(ValueError, match="do not fit the rebuilt student") as info:
        load_student(tmp_path)
    assert "\n" not in str(info.value) and str(info.value).startswith(str(tmp_path / STUDENT_TENSORS))
