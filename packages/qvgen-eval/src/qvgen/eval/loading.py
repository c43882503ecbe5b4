"""Load a model source (full precision, fake-quant student, deploy export) into its family's pipeline.

On-disk forms read here:
- full precision: a local diffusers folder (`family.load`).
- fake-quant student: the folder qvgen-train exports, in qvgen-models' format (`qvgen.models.load_student`:
  the family's float transformer from the manifest's checkpoint, `qvgen.quant.prepare_` with the recorded
  `QuantConfig` and layer roles, then the tensors loaded strictly).
- deploy: qvgen-quant's `quant_manifest.json` + `model.safetensors` (`qvgen.quant.load_quantized`).

`model_facts` says which model a source is, cheaply, for the video sidecars (`qvgen.eval.sidecar`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, assert_never

import torch
from torch import nn

from qvgen import quant
from qvgen.core import file_fingerprint, tree_fingerprint
from qvgen.eval.config import DeployModel, FakeQuantModel, FullPrecisionModel, ModelSource
from qvgen.eval.sidecar import tensors_digest
from qvgen.models import (
    STUDENT_MANIFEST,
    Components,
    DType,
    ModelFamily,
    get_family,
    load_student,
    read_student_manifest,
)

DEPLOY_MANIFEST = "quant_manifest.json"


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A family, its components and the diffusers pipeline over them, ready to sample."""

    family: ModelFamily
    components: Components
    pipeline: Any
    facts: Mapping[str, str] = field(default_factory=dict)
    """Which model this is (`model_facts`); empty for components built in this process (`identity`)."""

    def identity(self) -> dict[str, str]:
        """`facts`, or for an in-process model the digest of its tensors (`model.digest: state:<sha256>`)."""
        if self.facts:
            return dict(self.facts)
        c = self.components
        parts = [m.state_dict() for m in (c.transformer, c.vae, c.text_encoder) if m is not None]
        dtype = next(c.transformer.parameters()).dtype
        return {"model.digest": tensors_digest(*parts), "model.dtype": str(dtype).removeprefix("torch.")}


def from_components(
    family: str | ModelFamily, components: Components, facts: Mapping[str, str] | None = None
) -> LoadedModel:
    """Wrap components (e.g. a student quantized in this process) for sampling.

    A transformer with activation quantizers gets the shared timestep context, so each quantizer picks
    its clip group from the `timestep` of every call. `facts` (default: none, so the video sidecars record
    a digest of every tensor) say which model this is.
    """
    fam = get_family(family) if isinstance(family, str) else family
    if any(isinstance(m, quant.ActivationQuantizer) for m in components.transformer.modules()):
        quant.attach_timestep_context_(components.transformer)
    return LoadedModel(fam, components, fam.pipeline(components), dict(facts or {}))


def base_folder(source: ModelSource) -> Path | None:
    """The diffusers folder a fake-quant or deploy model takes its VAE, text encoder, tokenizer and scheduler
    (and, for deploy, its skeleton) from: `base`, else the one its manifest names; None for full precision."""
    match source:
        case FullPrecisionModel():
            return None
        case FakeQuantModel():
            return source.base or Path(read_student_manifest(source.path).checkpoint)
        case DeployModel():
            return _deploy_base(Path(source.path), source.base)
        case _:
            assert_never(source)


def model_facts(family: str, source: ModelSource, dtype: DType) -> dict[str, str]:
    """Which model `source` is, as video-sidecar facts, without loading it.

    `model.digest` is the manifest's sha256 for a fake-quant or deploy folder (the manifest records and
    loading verifies the tensors' sha256) and `tree_fingerprint` of a full-precision folder; `model.base` is
    `tree_fingerprint` of the base folder. Files over 256 MiB are fingerprinted by size + mtime, so this
    costs seconds even for a 14B checkpoint. The folder's path is not a fact: a moved copy is the same model.
    """
    get_family(family)  # an unknown family fails here, before anything is read
    base = base_folder(source)  # reads the manifest: a missing or invalid one is named here
    facts: dict[str, str] = {"model.kind": source.kind, "model.dtype": dtype}
    match source:
        case FullPrecisionModel():
            facts["model.digest"] = tree_fingerprint(source.path)
        case FakeQuantModel():
            facts["model.digest"] = file_fingerprint(Path(source.path) / STUDENT_MANIFEST)
        case DeployModel():
            facts["model.digest"] = file_fingerprint(Path(source.path) / DEPLOY_MANIFEST)
        case _:
            assert_never(source)
    if base is not None:
        if not base.is_dir():
            raise FileNotFoundError(f"{base}: the base folder of {source.path} does not exist; set `base`")
        facts["model.base"] = tree_fingerprint(base)
    return facts


def load_fake_quant_transformer(directory: str | Path, family: ModelFamily) -> tuple[nn.Module, Path]:
    """The fake-quant student in `directory` (`qvgen.models.load_student`) and its base checkpoint folder."""
    transformer = load_student(directory, family=family.name)
    return transformer, Path(read_student_manifest(directory).checkpoint)


def load_deploy_transformer(
    directory: str | Path, family: ModelFamily, base: Path | None
) -> tuple[nn.Module, Path]:
    """The real low-bit transformer in `directory` and the base checkpoint its skeleton came from."""
    d = Path(directory)
    root = _deploy_base(d, base)
    skeleton = family.load_transformer(root, dtype="float32")
    return quant.load_quantized(skeleton, d).eval(), root


def _deploy_base(d: Path, base: Path | None) -> Path:
    manifest = quant.read_manifest(d)
    root = base if base is not None else Path(manifest.source.identity)
    if not str(root) or not root.is_dir():
        raise FileNotFoundError(
            f"{d / DEPLOY_MANIFEST}: its source identity {manifest.source.identity!r} is not a local folder; "
            "set `base` to the diffusers checkpoint the model was quantized from"
        )
    return root


def load_model(family: str, source: ModelSource, dtype: DType, device: torch.device) -> LoadedModel:
    """Load `source` for `family` onto `device` (its `facts` are `model_facts`)."""
    fam = get_family(family)
    facts = model_facts(family, source, dtype)
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
    return from_components(fam, components, facts)
