"""Wan 2.1 and CogVideoX model families for qvgen: loading, layer roles, noising, tiny offline builds."""

from qvgen.core import known_import_noise_dropped

# diffusers' torchao quantizer logs harmless lines on its first import: exactly those are dropped (qvgen.core.quiet).
with known_import_noise_dropped():
    import diffusers.quantizers  # noqa: F401

from qvgen.models.cogvideox import CogVideoXFamily
from qvgen.models.encoder import PipelineEncoder, encoder_identity, weights_digest
from qvgen.models.experts import (
    A14B_BOUNDARY_RATIO,
    EXPERTS,
    EXPERTS_MANIFEST,
    ExpertName,
    ExpertsManifest,
    boundary_ratio_of,
    build_tiny_two_expert,
    expert_timestep_mask,
    has_transformer_2,
    read_experts_manifest,
    save_tiny_two_expert,
    write_experts_folder,
)
from qvgen.models.family import Components, ModelFamily, NoisedInputs
from qvgen.models.lora import LoraKeyError, enable_lora_, unmatched_lora_keys
from qvgen.models.manifest import (
    STUDENT_MANIFEST,
    STUDENT_TENSORS,
    StudentManifest,
    load_student,
    read_student_manifest,
    save_student,
)
from qvgen.models.pipeline import (
    hf_progress_bars,
    load_pipeline,
    progress_default,
    set_hf_progress_bars,
)
from qvgen.models.real_models import (
    REAL_MODELS,
    RealModel,
    SamplingSettings,
    build_real_on_meta,
    get_real_model,
)
from qvgen.models.real_width import (
    REAL_TEXT_ENCODERS,
    REAL_WIDTH_MODELS,
    build_real_width,
    save_real_width,
)
from qvgen.models.registry import FAMILIES, get_family, load_components
from qvgen.models.roles import roles_of
from qvgen.models.spec import CogVideoXSpec, DType, FamilyName, ModelSpec, WanSpec, to_torch_dtype
from qvgen.models.wan import WanFamily, token_timesteps, wan_pipeline_config

__all__ = [
    "A14B_BOUNDARY_RATIO",
    "EXPERTS",
    "EXPERTS_MANIFEST",
    "FAMILIES",
    "REAL_MODELS",
    "REAL_TEXT_ENCODERS",
    "REAL_WIDTH_MODELS",
    "STUDENT_MANIFEST",
    "STUDENT_TENSORS",
    "CogVideoXFamily",
    "CogVideoXSpec",
    "Components",
    "DType",
    "ExpertName",
    "ExpertsManifest",
    "FamilyName",
    "LoraKeyError",
    "ModelFamily",
    "ModelSpec",
    "NoisedInputs",
    "PipelineEncoder",
    "RealModel",
    "SamplingSettings",
    "StudentManifest",
    "WanFamily",
    "WanSpec",
    "boundary_ratio_of",
    "build_real_on_meta",
    "build_real_width",
    "build_tiny_two_expert",
    "enable_lora_",
    "encoder_identity",
    "expert_timestep_mask",
    "get_family",
    "get_real_model",
    "has_transformer_2",
    "hf_progress_bars",
    "load_components",
    "load_pipeline",
    "load_student",
    "progress_default",
    "read_experts_manifest",
    "read_student_manifest",
    "roles_of",
    "save_real_width",
    "save_student",
    "save_tiny_two_expert",
    "set_hf_progress_bars",
    "to_torch_dtype",
    "token_timesteps",
    "unmatched_lora_keys",
    "wan_pipeline_config",
    "weights_digest",
    "write_experts_folder",
]
