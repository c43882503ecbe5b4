"""`DeployManifest`: the JSON file that describes a saved deploy model (pydantic, ``schema_version`` 1)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import Field, JsonValue, model_validator

from qvgen.core import Frozen, Provenance
from qvgen.quant.config import GroupMode
from qvgen.quant.roles import LayerRole

MANIFEST_FILE = "quant_manifest.json"
TENSORS_FILE = "model.safetensors"


class SourceModel(Frozen):
    """Which model the deploy layers came from, so a loader can rebuild the right skeleton."""

    class_name: str
    """Class of the saved root module, e.g. ``WanTransformer3DModel``."""
    module: str = ""
    """Python module of that class (``type(model).__module__``), so `load_quantized(directory)` can rebuild
    it; empty in manifests written before it was recorded."""
    identity: str = ""
    """Free-form identity of the weights: checkpoint folder, family name, run id."""
    config: dict[str, JsonValue] = Field(default_factory=dict)
    """Constructor config of the source model (diffusers ``model.config``), JSON values only."""


class DeployLayer(Frozen):
    """One converted Linear: where it sits, its shapes, bits and role."""

    name: str
    """Dotted module name inside the saved model."""
    role: LayerRole
    in_features: Annotated[int, Field(ge=1)]
    out_features: Annotated[int, Field(ge=1)]
    bias: bool
    target: Literal["w4a4", "w4a16"]
    weight_bits: Annotated[int, Field(ge=2, le=4)]
    """Bits of the weight codes; stored two per byte (int4 container)."""
    act_bits: Annotated[int, Field(ge=2, le=8)] | None = None
    """Activation bits (``w4a4`` only)."""
    act_groups: Annotated[int, Field(ge=1)] | None = None
    """Number of timestep clip groups (``w4a4`` only)."""
    act_group_mode: GroupMode | None = None
    kept_rank: Annotated[int, Field(ge=1)] | None = None
    """Rank of the SVDQuant branch kept beside the GEMM (None: no kept branch)."""
    kept_dtype: Literal["bfloat16", "float16"] | None = None
    """Storage dtype of the kept branch's factors."""

    @model_validator(mode="after")
    def _act_fields_match_target(self) -> Self:
        act = (self.act_bits, self.act_groups, self.act_group_mode)
        if self.target == "w4a4" and None in act:
            raise ValueError(
                f"layer {self.name!r}: target 'w4a4' needs act_bits, act_groups and act_group_mode"
            )
        if self.target == "w4a16" and any(a is not None for a in act):
            raise ValueError(
                f"layer {self.name!r}: target 'w4a16' has no activation quantizer; drop act_* fields"
            )
        return self


class DeployManifest(Frozen):
    """Everything `load_quantized` needs besides the tensors; written next to ``model.safetensors``."""

    schema_version: Literal[1] = 1
    format: Literal["qvgen.quant.deploy"] = "qvgen.quant.deploy"
    tensors_file: Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")] = TENSORS_FILE
    """File name of the tensors, inside the manifest's folder: a bare name, never a path (a manifest is
    data and must not point the loader at files elsewhere)."""
    tensors_bytes: Annotated[int, Field(ge=0)]
    """Size of the tensors file; a different size means a truncated or foreign file."""
    tensors_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    """sha256 of the tensors file, verified by `load_quantized` (flipped bytes keep the size)."""
    num_train_timesteps: Annotated[int, Field(ge=1)] = 1000
    """Timestep range of the shared timestep context that picks activation clip groups."""
    source: SourceModel
    layers: tuple[DeployLayer, ...]
    provenance: Provenance | None = None
    """What produced the export (e.g. the training run and the fake-quant student), for the record."""
    digest: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    """Seal: `qvgen.core.canonical_digest` of this manifest without `digest` and `field_digests`, verified by
    `read_manifest`, so a hand edit (``act_bits``, ``num_train_timesteps``, ``source.config``) is refused."""
    field_digests: dict[str, str] | None = None
    """Seal: a short digest per field, so the refusal names the edited field (`qvgen.core.seal_manifest`)."""

    @model_validator(mode="after")
    def _unique_layer_names(self) -> Self:
        names = [layer.name for layer in self.layers]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"layers: duplicate names {dup}")
        return self

    def layer(self, name: str) -> DeployLayer:
        """The entry for ``name``."""
        for entry in self.layers:
            if entry.name == name:
                return entry
        raise KeyError(name)


def jsonable_config(config: Any) -> dict[str, JsonValue]:
    """The JSON-representable items of a model config mapping (tuples become lists, the rest is dropped)."""
    if config is None:
        return {}
    out: dict[str, JsonValue] = {}
    for key, value in dict(config).items():
        v = _jsonable(value)
        if v is not _DROP:
            out[str(key)] = v
    return out


_DROP = object()


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        items = [_jsonable(v) for v in value]
        return _DROP if any(i is _DROP for i in items) else items
    if isinstance(value, dict):
        items_d = {str(k): _jsonable(v) for k, v in value.items()}
        return _DROP if any(i is _DROP for i in items_d.values()) else items_d
    return _DROP
