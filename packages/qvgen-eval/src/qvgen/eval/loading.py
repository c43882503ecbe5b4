"""Load a model source (full precision, fake-quant student, deploy export) into its family's pipeline.

On-disk forms read here:
- full precision: a local diffusers folder (`family.load`).
- fake-quant student: the folder qvgen-train exports, in qvgen-models' format (`qvgen.models.load_student`:
  the family's float transformer from the manifest's checkpoint, `qvgen.quant.prepare_` with the recorded
  `QuantConfig` and layer roles, then the tensors loaded strictly).
- deploy: qvgen-quant's `quant_manifest.json` + `model.safetensors` (`qvgen.quant.load_quantized`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, assert_never

import torch
from torch import nn

from qvgen import quant
from qvgen.eval.config import DeployModel, FakeQuantModel, FullPrecisionModel, ModelSource
from qvgen.models import Components, DType, ModelFamily, get_family, load_student, read_student_manifest

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


def load_fake_quant_transformer(directory: str | Path, family: ModelFamily) -> tuple[nn.Module, Path]:
    """The fake-quant student in `directory` (`qvgen.models.load_student`) and its base checkpoint folder."""
    transformer = load_student(directory, family=family.name)
    return transformer, Path(read_student_manifest(directory).checkpoint)


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


def load_model(family: str, source: ModelSource, dtype: DType, device: torch.device) -> LoadedModel:
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
