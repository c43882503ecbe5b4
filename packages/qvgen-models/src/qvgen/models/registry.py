"""`FAMILIES`: the registry of model families, and `get_family` / `load_components` lookups."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from qvgen.models.cogvideox import CogVideoXFamily
from qvgen.models.family import Components, ModelFamily
from qvgen.models.spec import FamilyName, ModelSpec
from qvgen.models.wan import WanFamily

FAMILIES: Final[Mapping[FamilyName, ModelFamily]] = MappingProxyType(
    {"wan": WanFamily(), "cogvideox": CogVideoXFamily()}
)


def get_family(name: str) -> ModelFamily:
    """The family registered as `name`; an unknown name raises KeyError listing the known ones."""
    try:
        return FAMILIES[name]  # type: ignore[index]  # a str from a config: checked here
    except KeyError:
        raise KeyError(
            f"unknown model family {name!r}; known families: {', '.join(sorted(FAMILIES))}"
        ) from None


def load_components(spec: ModelSpec) -> Components:
    """``get_family(spec.family).load(spec.checkpoint, spec.dtype)``."""
    if spec.checkpoint is None:
        raise ValueError(
            f"ModelSpec(family={spec.family!r}).checkpoint is not set; point it at a local diffusers folder"
        )
    return get_family(spec.family).load(spec.checkpoint, spec.dtype)
