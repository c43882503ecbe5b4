"""Wan 2.1 and CogVideoX model families for qvgen: loading, layer roles, noising, tiny offline builds."""

from qvgen.models.cogvideox import CogVideoXFamily
from qvgen.models.encoder import PipelineEncoder
from qvgen.models.family import Components, ModelFamily, NoisedInputs
from qvgen.models.registry import FAMILIES, get_family, load_components
from qvgen.models.roles import roles_of
from qvgen.models.spec import CogVideoXSpec, DType, ModelSpec, WanSpec, to_torch_dtype
from qvgen.models.wan import WanFamily

__all__ = [
    "FAMILIES",
    "CogVideoXFamily",
    "CogVideoXSpec",
    "Components",
    "DType",
    "ModelFamily",
    "ModelSpec",
    "NoisedInputs",
    "PipelineEncoder",
    "WanFamily",
    "WanSpec",
    "get_family",
    "load_components",
    "roles_of",
    "to_torch_dtype",
]
