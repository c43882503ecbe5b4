"""Fake quantization for QVGen QAT: LSQ+ weights, clipped per-token activations grouped by timestep."""

from qvgen.core import known_import_noise_dropped

# torchao's first import logs harmless lines on a CPU-only machine: exactly those are dropped (qvgen.core.quiet).
with known_import_noise_dropped():
    import torchao  # noqa: F401

from qvgen.quant.api import (
    QuantParams,
    QVGenFakeQuantConfig,
    initialize_,
    plan_quantization,
    prepare_,
    quant_parameter_groups,
    quantized_layers,
)
from qvgen.quant.config import (
    ActivationQuantConfig,
    ClippedDynamicActivation,
    GroupMode,
    KeptLowRank,
    LSQPlusWeight,
    MinMaxWeight,
    NoActivationQuant,
    QuantConfig,
    RoleOverride,
    WeightQuantConfig,
)
from qvgen.quant.fake_quant import (
    ActivationQuantizer,
    WeightQuantizer,
    activation_qparams,
    fake_quantize_activation,
    fake_quantize_weight,
    minmax_weight_range,
    mse_weight_range,
    shrink_grid_search,
)
from qvgen.quant.linear import QuantLinear
from qvgen.quant.roles import LayerRole, matches_any, resolve_role
from qvgen.quant.svdquant import SmoothLowRank, smoothing_factors
from qvgen.quant.timestep import (
    TimestepContext,
    attach_timestep_context_,
    record_call_groups,
    reference_call_groups,
    reference_group,
    set_timesteps_,
    timestep_context,
)
from qvgen.quant.triton_dispatch import set_fused_fake_quant

__all__ = [
    "ActivationQuantConfig",
    "ActivationQuantizer",
    "ClippedDynamicActivation",
    "GroupMode",
    "KeptLowRank",
    "LSQPlusWeight",
    "LayerRole",
    "MinMaxWeight",
    "NoActivationQuant",
    "QVGenFakeQuantConfig",
    "QuantConfig",
    "QuantLinear",
    "QuantParams",
    "RoleOverride",
    "SmoothLowRank",
    "TimestepContext",
    "WeightQuantConfig",
    "WeightQuantizer",
    "activation_qparams",
    "attach_timestep_context_",
    "fake_quantize_activation",
    "fake_quantize_weight",
    "initialize_",
    "matches_any",
    "minmax_weight_range",
    "mse_weight_range",
    "plan_quantization",
    "prepare_",
    "quant_parameter_groups",
    "quantized_layers",
    "record_call_groups",
    "reference_call_groups",
    "reference_group",
    "resolve_role",
    "set_fused_fake_quant",
    "set_timesteps_",
    "shrink_grid_search",
    "smoothing_factors",
    "timestep_context",
]

# --- Real low-bit export: deploy layers, integer GEMM, save/load (deploy.py, export.py, manifest.py) ---
from qvgen.quant.deploy import MAX_WEIGHT_BITS, DeployLinear, DeployTarget
from qvgen.quant.export import (
    convert_,
    deployed_layers,
    load_quantized,
    read_manifest,
    save_quantized,
)
from qvgen.quant.manifest import DeployLayer, DeployManifest, SourceModel
from qvgen.quant.packing import pack_int4, packed_columns, unpack_int4

__all__ += [
    "MAX_WEIGHT_BITS",
    "DeployLayer",
    "DeployLinear",
    "DeployManifest",
    "DeployTarget",
    "SourceModel",
    "convert_",
    "deployed_layers",
    "load_quantized",
    "pack_int4",
    "packed_columns",
    "read_manifest",
    "save_quantized",
    "unpack_int4",
]
