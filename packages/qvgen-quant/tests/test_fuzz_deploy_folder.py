"""Fuzzing the deploy folders a user hands `load_quantized` (issue 32): a mutated `quant_manifest.json` (re-sealed
or not) or a mutated `model.safetensors` header/body (with the manifest's size, sha256 and seal updated so the
file is really parsed) either loads or is one `ValueError`/`OSError` naming the folder's file; never a traceback,
a hang or a write.

Inputs start from a real folder written by `save_quantized` (the tiny block of test_export.py).
`QVGEN_FUZZ_PROFILE=slow` runs ten times more; `QVGEN_FUZZ_COUNTS=FILE` counts them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from qvgen.core.fuzzing import (
    check_loader,
    fuzz_settings,
    join_safetensors,
    mutated_manifest_folders,
    sealed_json,
    split_safetensors,
)
from qvgen.quant import ClippedDynamicActivation, LSQPlusWeight, QuantConfig, convert_, initialize_, prepare_
from qvgen.quant.export import load_quantized, read_manifest, save_quantized
from qvgen.quant.manifest import MANIFEST_FILE, TENSORS_FILE

pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")


class TinyBlock(nn.Module):
    """The stand-in transformer of test_export.py."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(64)
        self.up = nn.Linear(64, 128)
        self.down = nn.Linear(128, 64, bias=False)
        self.out = nn.Linear(64, 32)

    def forward(self, x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return self.out(self.down(torch.relu(self.up(self.norm(x)))))


@functools.cache
def valid_folder() -> tuple[bytes, bytes]:
    """(quant_manifest.json, model.safetensors) of a real W3A4 deploy export."""
    torch.manual_seed(0)
    model = TinyBlock()
    cfg = QuantConfig(
        weight=LSQPlusWeight(bits=3), activation=ClippedDynamicActivation(bits=4, group_mode="mod")
    )
    prepare_(model, cfg, keep_high_precision=("out",))
    initialize_(model, progress=False)
    convert_(model)
    with tempfile.TemporaryDirectory() as tmp:
        save_quantized(model, Path(tmp) / "deploy", identity="fuzz")
        return (Path(tmp) / "deploy" / MANIFEST_FILE).read_bytes(), (
            Path(tmp) / "deploy" / TENSORS_FILE
        ).read_bytes()


_sealed = sealed_json


def _vouch(manifest: dict, tensors: bytes) -> dict:
    return {**manifest, "tensors_bytes": len(tensors), "tensors_sha256": hashlib.sha256(tensors).hexdigest()}


def deploy_folders() -> st.SearchStrategy[tuple[bytes, bytes]]:
    """(manifest bytes, tensors bytes): one of the two mutated, or neither."""
    manifest_bytes, tensors = valid_folder()
    kinds = ("same", "manifest", "manifest", "manifest_text", "tensors", "tensors", "tensors")
    return mutated_manifest_folders(manifest_bytes, tensors, _vouch, kinds)


def _valid(model: object) -> None:
    assert isinstance(model, TinyBlock), type(model)


@fuzz_settings(200)
@given(deploy_folders(), st.sampled_from(["skeleton", "directory", "manifest"]))
def test_fuzzed_deploy_folder_loads_or_is_one_error_naming_the_file(
    files: tuple[bytes, bytes], how: str
) -> None:
    manifest, tensors = files
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "deploy"
        folder.mkdir()
        (folder / MANIFEST_FILE).write_bytes(manifest)
        (folder / TENSORS_FILE).write_bytes(tensors)
        if how == "manifest":
            check_loader(
                "quant.read_manifest", lambda: read_manifest(folder), folder=folder, names=[str(folder)]
            )
        elif how == "skeleton":
            check_loader(
                "quant.load_quantized",
                lambda: load_quantized(TinyBlock(), folder),
                folder=folder,
                names=[str(folder)],
                validate=_valid,
            )
        else:
            check_loader(
                "quant.load_quantized",
                lambda: load_quantized(folder, model_class=TinyBlock),
                folder=folder,
                names=[str(folder)],
                validate=_valid,
            )


def test_the_unmutated_deploy_folder_loads(tmp_path: Path) -> None:
    manifest, tensors = valid_folder()
    (tmp_path / MANIFEST_FILE).write_bytes(manifest)
    (tmp_path / TENSORS_FILE).write_bytes(tensors)
    assert isinstance(load_quantized(TinyBlock(), tmp_path), TinyBlock)


def test_invalid_sealed_manifest_is_one_line_naming_the_file_and_field(tmp_path: Path) -> None:
    """The fuzzing's one-line rule: pydantic's multi-line report became `field: problem (got value)`."""
    manifest, tensors = valid_folder()
    (tmp_path / MANIFEST_FILE).write_bytes(_sealed({**json.loads(manifest), "num_train_timesteps": 0}))
    (tmp_path / TENSORS_FILE).write_bytes(tensors)
    with pytest.raises(ValueError) as info:
        read_manifest(tmp_path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(
        f"{tmp_path / MANIFEST_FILE}: invalid deploy manifest: "
    )
    assert "num_train_timesteps" in message


def test_safetensors_header_with_a_line_break_is_one_line_naming_the_file(tmp_path: Path) -> None:
    """Found by the slow fuzzing: safetensors quotes the bad header, line break and all."""
    manifest, tensors = valid_folder()
    header, body = split_safetensors(tensors)
    header[next(k for k in header if k != "__metadata__")]["dtype"] = "F32\nX"
    new = join_safetensors(header, body)
    (tmp_path / TENSORS_FILE).write_bytes(new)
    update = {"tensors_bytes": len(new), "tensors_sha256": hashlib.sha256(new).hexdigest()}
    (tmp_path / MANIFEST_FILE).write_bytes(_sealed({**json.loads(manifest), **update}))
    with pytest.raises(ValueError, match="cannot read the safetensors file") as info:
        load_quantized(TinyBlock(), tmp_path)
    assert "\n" not in str(info.value) and str(info.value).startswith(str(tmp_path / TENSORS_FILE))
