"""The fake-quant student on disk: `student_manifest.json` (`StudentManifest`) + `model.safetensors`.

qvgen-train writes it (`save_student`), qvgen-eval reads it (`load_student`); neither knows the other.
A student is rebuilt from its base checkpoint: `family.load_transformer(checkpoint)`, `qvgen.quant.prepare_`
with the recorded `QuantConfig` and layer roles, then the tensors loaded strictly.

The manifest is sealed (`qvgen.core.sealed_manifest_json`): a field edited by hand (the quant config's bits,
`num_train_timesteps`, a layer's role, the checkpoint) is refused on load naming the file and the field, and
so is a manifest without a seal. `save_student` writes only into a folder that is missing, empty or its own
(`qvgen.core.replace_output_dir`), and records what produced the student (`provenance`).
"""

from __future__ import annotations

import glob
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from qvgen import quant
from qvgen.core import (
    Frozen,
    Provenance,
    check_manifest_seal,
    file_sha256,
    replace_output_dir,
    sealed_manifest_json,
    validation_summary,
)
from qvgen.models.lora import enable_lora_
from qvgen.models.registry import FAMILIES, get_family
from qvgen.models.spec import FamilyName
from qvgen.quant import LayerRole, QuantConfig

STUDENT_MANIFEST = "student_manifest.json"
STUDENT_TENSORS = "model.safetensors"
STUDENT_TOOL = "qvgen.models.save_student"
"""The tool name in a student folder's output marker (`qvgen.core.MARKER_NAME`)."""
REEXPORT = (
    "export the student again with `qvgen.models.save_student` (a training run writes it to "
    "`final/fake_quant`; `qvgen-train import-reference` for a reference checkpoint)"
)


class StudentManifest(Frozen):
    """What rebuilds a fake-quant student from its base checkpoint, plus where it came from."""

    schema_version: Literal[1] = 1
    kind: Literal["fake_quant"] = "fake_quant"
    family: FamilyName
    """Registry key of the model family (`qvgen.models.FAMILIES`)."""
    num_train_timesteps: Annotated[int, Field(ge=1)]
    """T the student's activation quantizers group timesteps by (its family's `num_train_timesteps`)."""

    @field_validator("family", mode="before")
    @classmethod
    def _known_family(cls, value: object) -> object:
        if not isinstance(value, str) or value not in FAMILIES:  # `in` on a dict/list value: TypeError
            raise ValueError(f"unknown model family {value!r}; known families: {', '.join(sorted(FAMILIES))}")
        return value

    checkpoint: str
    """Absolute path of the base diffusers folder (VAE, text encoder, tokenizer, scheduler, fp transformer)."""
    quant: QuantConfig
    """The config the student was prepared with."""
    layers: dict[str, LayerRole]
    """Quantized module name → its role, exactly as prepared."""
    steps: Annotated[int, Field(ge=0)] = 0
    """Training steps behind the student (0: post-training quantization)."""
    qvgen_train_version: str | None = None
    """Version of qvgen-train that wrote it; None when written outside a training run."""
    git_sha: str | None = None
    run_config: dict[str, Any] = Field(default_factory=dict)
    """The resolved run config (JSON mode), for the record; loading does not read it."""
    tensors_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    """sha256 of `model.safetensors`, verified by `load_student` (flipped bytes keep the file's size)."""
    provenance: Provenance | None = None
    """What produced the student (the run, the reference checkpoint), for the record."""
    digest: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    """Seal: `qvgen.core.canonical_digest` of this manifest without `digest` and `field_digests`, verified
    by `read_student_manifest`."""
    field_digests: dict[str, str] | None = None
    """Seal: a short digest per field, so the refusal names the edited field (`qvgen.core.seal_manifest`)."""


def save_student(
    student: nn.Module,
    out_dir: str | Path,
    *,
    family: FamilyName,
    checkpoint: str | Path,
    quant_config: QuantConfig,
    steps: int = 0,
    qvgen_train_version: str | None = None,
    git_sha: str | None = None,
    run_config: Mapping[str, Any] | None = None,
    provenance: Provenance | None = None,
) -> Path:
    """Write `student` (prepared with `quant_config`, Φ removed) to `out_dir`, replacing it atomically.

    The folder is assembled beside `out_dir` and renamed into place, so a crash (or a full disk: one
    `OSError` naming `out_dir`) leaves either the old folder or the new one. `out_dir` must be missing,
    empty or an earlier `save_student` folder; anything else is refused. Returns the resolved `out_dir`.
    """
    layers = quant.quantized_layers(student)
    if not layers:
        raise ValueError(
            "save_student: the model has no QuantLinear layers; call `qvgen.quant.prepare_` first"
        )
    with_phi = sorted(name for name, layer in layers.items() if layer.lowrank is not None)
    if with_phi:
        raise ValueError(
            f"save_student: Φ is still attached to {with_phi[:3]} ({len(with_phi)} layers); "
            "finish the rank decay (rank 0) first"
        )
    context = quant.timestep_context(student)
    num_train_timesteps = (
        context.num_train_timesteps if context is not None else get_family(family).num_train_timesteps
    )
    manifest = StudentManifest(
        family=family,
        num_train_timesteps=num_train_timesteps,
        checkpoint=str(Path(checkpoint).expanduser().resolve()),
        quant=quant_config,
        layers={name: layer.role for name, layer in layers.items()},
        steps=steps,
        qvgen_train_version=qvgen_train_version,
        git_sha=git_sha,
        run_config=dict(run_config or {}),
        provenance=provenance,
        tensors_sha256="0" * 64,  # the real digest is filled in once the tensors are written
    )
    tensors = {k: v.detach().cpu().contiguous() for k, v in student.state_dict().items()}

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp / STUDENT_TENSORS), metadata={"format": "pt"})
        final = manifest.model_copy(update={"tensors_sha256": file_sha256(tmp / STUDENT_TENSORS)})
        (tmp / STUDENT_MANIFEST).write_text(sealed_manifest_json(final), encoding="utf-8")

    return replace_output_dir(
        Path(out_dir).expanduser().resolve(), STUDENT_TOOL, write, what="student folder"
    )


def read_student_manifest(directory: str | Path) -> StudentManifest:
    """The validated, seal-checked `student_manifest.json` in `directory`; errors name the file (and, for a
    hand-edited manifest, the edited fields)."""
    path = Path(directory) / STUDENT_MANIFEST
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise FileNotFoundError(f"{path}: no fake-quant student manifest here ({e.strerror or e})") from e
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{path}: invalid student manifest: not UTF-8 text (byte {e.start}); {REEXPORT}"
        ) from e
    try:
        manifest = StudentManifest.model_validate_json(text)
    except (ValidationError, json.JSONDecodeError) as e:
        why = validation_summary(e) if isinstance(e, ValidationError) else e  # one line, each field named
        raise ValueError(f"{path}: invalid student manifest: {why}") from e
    check_manifest_seal(path, json.loads(text), REEXPORT)
    return manifest


def load_student(directory: str | Path, *, family: str | None = None) -> nn.Module:
    """Rebuild the fake-quant student in `directory` (float32, eval mode).

    `family`, when given, must be the manifest's. Only the recorded layers are quantized, each with its
    recorded role, so the result does not depend on the family's current role globs.
    """
    d = Path(directory)
    path = d / STUDENT_MANIFEST
    manifest = read_student_manifest(d)
    if family is not None and manifest.family != family:
        raise ValueError(f"{path}: a {manifest.family!r} student, but a {family!r} model was asked for")
    try:
        model = get_family(manifest.family).load_transformer(manifest.checkpoint, dtype="float32")
    except (OSError, ValueError) as e:  # names the checkpoint folder; say which manifest pointed there
        wrapped = f"{path}: cannot load the base checkpoint {manifest.checkpoint!r} it records: {e}"
        raise (FileNotFoundError(wrapped) if isinstance(e, FileNotFoundError) else ValueError(wrapped)) from e
    recorded = manifest.layers
    others = tuple(
        glob.escape(name)
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and name not in recorded
    )
    quant.prepare_(
        model,
        manifest.quant,
        layer_roles={glob.escape(name): role for name, role in recorded.items()},
        keep_high_precision=others,
        num_train_timesteps=manifest.num_train_timesteps,
    )
    got = set(quant.quantized_layers(model))
    if got != set(recorded):
        diff = sorted(got ^ set(recorded))[:5]
        raise ValueError(
            f"{path}: the transformer in {manifest.checkpoint} does not have the recorded quantized layers "
            f"(differences, e.g. {diff}); is `checkpoint` the student's base model?"
        )
    tensors_path = d / STUDENT_TENSORS
    if tensors_path.is_file() and file_sha256(tensors_path) != manifest.tensors_sha256:
        raise ValueError(
            f"{tensors_path}: sha256 does not match the one recorded in {path}: the file is corrupted or "
            "was replaced; export the student again"
        )
    try:
        tensors = load_file(str(tensors_path))
    except (SafetensorError, OSError) as e:
        why = " ".join(str(e).split())  # safetensors quotes the header, line breaks included
        raise ValueError(f"{tensors_path}: cannot read the student tensors ({why})") from e
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        why = "; ".join(line.strip() for line in str(e).splitlines() if line.strip())  # torch's is multi-line
        raise ValueError(f"{tensors_path}: tensors do not fit the rebuilt student: {why}") from e
    return enable_lora_(model).eval()  # diffusers' LoRA loaders work on the student as on the deploy model
