"""Load a model source (full precision, fake-quant student, deploy export) into its family's pipeline.

On-disk forms read here:
- full precision: a local diffusers folder (`family.load`).
- fake-quant student: the folder qvgen-train exports (`student_manifest.json` + `model.safetensors`):
  the family's float transformer from the manifest's checkpoint, `qvgen.quant.prepare_` with the recorded
  `QuantConfig`, then the tensors loaded strictly.
- deploy: qvgen-quant's `quant_manifest.json` + `model.safetensors` (`qvgen.quant.load_quantized`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, assert_never

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from qvgen import quant
from qvgen.eval.config import DeployModel, FakeQuantModel, FullPrecisionModel, ModelSource
from qvgen.models import Components, ModelFamily, get_family

STUDENT_MANIFEST = "student_manifest.json"
STUDENT_TENSORS = "model.safetensors"
DEPLOY_MANIFEST = "quant_manifest.json"


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A family, its components and the diffusers pipeline over them, ready to sample."""

    family: ModelFamily
    components: Components
    pipeline: Any


def from_components(family: str | ModelFamily, components: Components) -> LoadedModel:
    """Wrap components (e.g. a student quantized in this process) for sampling.

    A transformer with activation quantizers gets the shared timestep context, so each quantizer picks
    its clip group from the `timestep` of every call.
    """
    fam = get_family(family) if isinstance(family, str) else family
    if any(isinstance(m, quant.ActivationQuantizer) for m in components.transformer.modules()):
        quant.attach_timestep_context_(components.transformer)
    return LoadedModel(fam, components, fam.pipeline(components))


class _StudentFile(BaseModel):
    """The fields of qvgen-train's `student_manifest.json` that rebuilding the student needs."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    schema_version: Literal[1]
    kind: Literal["fake_quant"]
    family: str
    checkpoint: str
    quant: dict[str, Any]
    layers: dict[str, str]


def load_fake_quant_transformer(directory: str | Path, family: ModelFamily) -> tuple[nn.Module, Path]:
    """The fake-quant student in `directory` and its base checkpoint folder."""
    d = Path(directory)
    path = d / STUDENT_MANIFEST
    try:
        manifest = _StudentFile.model_validate_json(path.read_text())
    except OSError as e:
        raise FileNotFoundError(f"{path}: no fake-quant student manifest here ({e.strerror or e})") from e
    except (ValidationError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: invalid student manifest: {e}") from e
    if manifest.family != family.name:
        raise ValueError(f"{path}: a {manifest.family!r} student, but the config's family is {family.name!r}")
    model = family.load_transformer(manifest.checkpoint, dtype="float32")
    quant.prepare_(
        model,
        quant.QuantConfig.model_validate(manifest.quant),
        layer_roles=family.layer_roles,
        keep_high_precision=family.keep_high_precision,
    )
    got = set(quant.quantized_layers(model))
    if got != set(manifest.layers):
        diff = sorted(got ^ set(manifest.layers))[:5]
        raise ValueError(
            f"{path}: the rebuilt student's quantized layers differ from the manifest's, e.g. {diff}"
        )
    tensors_path = d / STUDENT_TENSORS
    try:
        tensors = load_file(str(tensors_path))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{tensors_path}: cannot read the student tensors ({e})") from e
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{tensors_path}: tensors do not fit the rebuilt student: {e}") from e
    return model.eval(), Path(manifest.checkpoint)


def load_deploy_transformer(
    directory: str | Path, family: ModelFamily, base: Path | None
) -> tuple[nn.Module, Path]:
    """The real low-bit transformer in `directory` and the base checkpoint its skeleton came from."""
    d = Path(directory)
    manifest = quant.read_manifest(d)
    root = base if base is not None else Path(manifest.source.identity)
    if not str(root) or not root.is_dir():
        raise FileNotFoundError(
            f"{d / DEPLOY_MANIFEST}: its source identity {manifest.source.identity!r} is not a local folder; "
            "set `base` to the diffusers checkpoint the model was quantized from"
        )
    skeleton = family.load_transformer(root, dtype="float32")
    return quant.load_quantized(skeleton, d).eval(), root


def load_model(family: str, source: ModelSource, dtype: str, device: torch.device) -> LoadedModel:
    """Load `source` for `family` onto `device`."""
    fam = get_family(family)
    match source:
        case FullPrecisionModel():
            components = fam.load(source.path, dtype)
        case FakeQuantModel():
            transformer, root = load_fake_quant_transformer(source.path, fam)
            components = replace(fam.load(source.base or root, dtype), transformer=transformer)
        case DeployModel():
            transformer, root = load_deploy_transformer(source.path, fam, source.base)
            components = replace(fam.load(source.base or root, dtype), transformer=transformer)
        case _:
            assert_never(source)
    for part in (components.transformer, components.vae, components.text_encoder):
        part.to(device)
    return from_components(fam, components)
