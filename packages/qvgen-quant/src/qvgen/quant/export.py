"""Real low-bit export: `convert_` a trained model to deploy layers, `save_quantized` / `load_quantized`.

On disk a deploy model is a folder with ``model.safetensors`` (the whole state dict: packed int4 codes,
scales, zero points and clip logits of each deploy layer, plus every tensor that stays high precision)
and ``quant_manifest.json`` (`DeployManifest`). Loading never unpickles and checks every layer's tensors
against the manifest before touching the model.

The manifest is sealed (`qvgen.core.sealed_manifest_json`): a field edited by hand (``act_bits``, ``eps``,
``num_train_timesteps``, ...) is refused on load naming the file and the field, and so is a manifest
without a seal (written before seals existed). The folder is `save_quantized`'s own: it is built in a temp
sibling and swapped in (`qvgen.core.replace_output_dir`), and a non-empty folder that `save_quantized` did
not write is refused, never replaced. A full disk ends as one `OSError` ("cannot write DIR: no space left
on device") with the previous export intact.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import overload

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from qvgen.core import (
    Provenance,
    check_manifest_seal,
    file_sha256,
    replace_output_dir,
    sealed_manifest_json,
    validation_summary,
)
from qvgen.quant import skeleton
from qvgen.quant.config import ClippedDynamicActivation
from qvgen.quant.deploy import DeployLinear, DeployTarget
from qvgen.quant.fake_quant import ActivationQuantizer
from qvgen.quant.linear import QuantLinear
from qvgen.quant.manifest import (
    MANIFEST_FILE,
    TENSORS_FILE,
    DeployLayer,
    DeployManifest,
    SourceModel,
    jsonable_config,
)
from qvgen.quant.packing import packed_columns, unpack_int4
from qvgen.quant.svdquant import SmoothLowRank
from qvgen.quant.timestep import attach_timestep_context_, timestep_context

DEPLOY_TOOL = "qvgen.quant.save_quantized"
"""The tool name in a deploy folder's output marker (`qvgen.core.MARKER_NAME`)."""
REEXPORT = (
    "export the model again with `qvgen.quant.save_quantized` (a training run writes it to `final/deploy`)"
)


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def deployed_layers(model: nn.Module) -> dict[str, DeployLinear]:
    """All `DeployLinear` modules of ``model`` by dotted name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, DeployLinear)}


def convert_(model: nn.Module, *, target: DeployTarget = "w4a4") -> dict[str, DeployLinear]:
    """Replace every `QuantLinear` of ``model`` by its `DeployLinear` (packed int4 weight); return them.

    ``target="w4a4"`` keeps each layer's activation quantizer and runs an integer GEMM;
    ``"w4a16"`` drops it and runs int4 weight-only kernels. Φ must already be removed from every layer.
    """
    layers = {name: m for name, m in model.named_modules() if isinstance(m, QuantLinear)}
    if not layers:
        raise ValueError("convert_: the model has no QuantLinear; call `qvgen.quant.prepare_` first")
    if "" in layers:
        raise ValueError(
            "convert_: the model itself is a QuantLinear; use `DeployLinear.from_quant_linear(layer)`"
        )
    converted: dict[str, DeployLinear] = {}
    for name, layer in layers.items():
        converted[name] = DeployLinear.from_quant_linear(layer, target, name=name)
    # the loader's own checks, before any layer is swapped: no run can write what load_quantized refuses
    for name, deploy in converted.items():
        state = {f"{name}.{k}": v for k, v in deploy.state_dict().items()}
        check_deploy_tensors("convert_", [_layer_entry(name, deploy)], state)
    for name, deploy in converted.items():
        _set_submodule(model, name, deploy)
    return converted


def _layer_entry(name: str, layer: DeployLinear) -> DeployLayer:
    act = layer.act_quantizer
    return DeployLayer(
        name=name,
        role=layer.role,
        in_features=layer.in_features,
        out_features=layer.out_features,
        bias=layer.bias is not None,
        target=layer.target,
        weight_bits=layer.weight_bits,
        act_bits=act.bits if act is not None else None,
        act_groups=act.groups if act is not None else None,
        act_group_mode=act.group_mode if act is not None else None,
        kept_rank=layer.kept.rank if layer.kept is not None else None,
        kept_dtype=layer.kept.dtype_name if layer.kept is not None else None,
    )


def save_quantized(
    model: nn.Module,
    directory: str | os.PathLike[str],
    *,
    identity: str = "",
    provenance: Provenance | None = None,
) -> DeployManifest:
    """Write ``model`` (after `convert_`) to ``directory`` as safetensors + sealed manifest, atomically.

    ``identity`` names the source weights in the manifest (checkpoint folder, run id, ...); ``provenance``
    records what produced the export (run config, student). ``directory`` must be missing, empty, or an
    earlier `save_quantized` folder (which is replaced only once the new one is complete); anything else is
    refused with a `ValueError`. Write errors are one `OSError` naming ``directory`` and the cause.
    """
    layers = deployed_layers(model)
    if not layers:
        raise ValueError(
            "save_quantized: the model has no DeployLinear; call `qvgen.quant.convert_(model)` first"
        )
    left = sorted(name for name, m in model.named_modules() if isinstance(m, QuantLinear))
    if left:
        raise ValueError(
            f"save_quantized: layers {left[:5]} are still fake-quant QuantLinear; call `convert_` first"
        )
    out = Path(directory)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    entries = tuple(_layer_entry(name, layer) for name, layer in layers.items())
    check_deploy_tensors(f"save_quantized({out})", entries, tensors)  # exactly what load_quantized checks
    context = timestep_context(model)
    written: list[DeployManifest] = []

    def write(tmp: Path) -> None:
        # the whole folder is built beside `out` and swapped in: a failed write (a full disk, ENOSPC)
        # leaves the previous export complete and loadable, and no temp behind
        tensors_path = tmp / TENSORS_FILE
        save_file(tensors, str(tensors_path), metadata={"format": "pt"})
        manifest = DeployManifest(
            provenance=provenance,
            tensors_bytes=tensors_path.stat().st_size,
            tensors_sha256=file_sha256(tensors_path),
            num_train_timesteps=context.num_train_timesteps if context is not None else 1000,
            source=SourceModel(
                class_name=type(model).__name__,
                module=type(model).__module__,
                identity=identity,
                config=jsonable_config(getattr(model, "config", None)),
            ),
            layers=entries,
        )
        text = sealed_manifest_json(manifest)
        (tmp / MANIFEST_FILE).write_text(text, encoding="utf-8")
        written.append(DeployManifest.model_validate_json(text))

    replace_output_dir(out, DEPLOY_TOOL, write, what="deploy folder")
    return written[0]


def read_manifest(directory: str | os.PathLike[str]) -> DeployManifest:
    """Parse, validate and check the seal of ``quant_manifest.json`` in ``directory``; errors name the file
    (and, for a hand-edited manifest, the edited fields)."""
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no deploy manifest here; was the folder written by `save_quantized`?"
        )
    try:
        text = path.read_text(encoding="utf-8")
        manifest = DeployManifest.model_validate_json(text)
    except (ValidationError, json.JSONDecodeError, UnicodeDecodeError) as e:
        why = validation_summary(e) if isinstance(e, ValidationError) else e  # one line, each field named
        raise ValueError(f"{path}: invalid deploy manifest: {why}") from e
    check_manifest_seal(path, json.loads(text), REEXPORT)
    return manifest


def _expected_tensors(entry: DeployLayer) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    n, k = entry.out_features, entry.in_features
    expected: dict[str, tuple[tuple[int, ...], torch.dtype]] = {
        "weight_packed": ((n, packed_columns(k)), torch.uint8),
        "weight_scale": ((n,), torch.float32),
        "weight_zero_point": ((n,), torch.float32),
    }
    if entry.bias:
        expected["bias"] = ((n,), torch.float32)
    if entry.target == "w4a4":
        assert entry.act_groups is not None
        expected["act_quantizer.clip_logit_lo"] = ((entry.act_groups,), torch.float32)
        expected["act_quantizer.clip_logit_hi"] = ((entry.act_groups,), torch.float32)
    if entry.kept_rank is not None:
        half = torch.float16 if entry.kept_dtype == "float16" else torch.bfloat16
        expected["kept.smooth"] = ((k,), torch.float32)
        expected["kept.down"] = ((entry.kept_rank, k), half)
        expected["kept.up"] = ((n, entry.kept_rank), half)
    return expected


def check_deploy_tensors(where: str, entries: Iterable[DeployLayer], tensors: Mapping[str, Tensor]) -> None:
    """The one validator of deploy tensors against their manifest entries, shared by `convert_`,
    `save_quantized` and `load_quantized`: names, shapes, dtypes, code range, finite scale > 0 and finite
    zero point. `where` prefixes the error (the file, or the function)."""
    for entry in entries:
        _check_layer_tensors(where, entry, tensors)


def _check_layer_tensors(path: str | Path, entry: DeployLayer, tensors: Mapping[str, Tensor]) -> None:
    where = f"{path}: layer {entry.name!r}"
    prefix = entry.name + "."
    expected = _expected_tensors(entry)
    present = {k[len(prefix) :] for k in tensors if k.startswith(prefix)}
    missing = sorted(set(expected) - present)
    extra = sorted(present - set(expected))
    if missing or extra:
        raise ValueError(
            f"{where}: tensors disagree with the manifest (missing {missing}, unexpected {extra})"
        )
    for key, (shape, dtype) in expected.items():
        t = tensors[prefix + key]
        if tuple(t.shape) != shape or t.dtype != dtype:
            raise ValueError(
                f"{where}: {key} is {t.dtype} {tuple(t.shape)} but the manifest "
                f"({entry.out_features}x{entry.in_features}) needs {dtype} {shape}"
            )
    codes_max = int(unpack_int4(tensors[prefix + "weight_packed"], entry.in_features).max())
    if codes_max > 2**entry.weight_bits - 1:
        raise ValueError(f"{where}: weight code {codes_max} exceeds the manifest's {entry.weight_bits} bits")
    scale, zero = tensors[prefix + "weight_scale"], tensors[prefix + "weight_zero_point"]
    if not (torch.isfinite(scale).all() and (scale > 0).all() and torch.isfinite(zero).all()):
        raise ValueError(f"{where}: weight scale must be finite and > 0 and zero point finite")


def _deploy_module(path: Path, model: nn.Module, entry: DeployLayer) -> DeployLinear:
    where = f"{path}: layer {entry.name!r}"
    try:
        old = model.get_submodule(entry.name)
    except AttributeError as e:
        raise ValueError(
            f"{where} does not exist in the {type(model).__name__} given to load_quantized"
        ) from e
    if not isinstance(old, nn.Linear | QuantLinear | DeployLinear):
        raise ValueError(f"{where} is a {type(old).__name__} in the model, expected a Linear")
    if (old.in_features, old.out_features) != (entry.in_features, entry.out_features):
        raise ValueError(
            f"{where} is {old.out_features}x{old.in_features} in the model but "
            f"{entry.out_features}x{entry.in_features} in the manifest"
        )
    device = old.weight_packed.device if isinstance(old, DeployLinear) else old.weight.device
    act = None
    if entry.target == "w4a4":
        assert (
            entry.act_bits is not None and entry.act_groups is not None and entry.act_group_mode is not None
        )
        cfg = ClippedDynamicActivation(
            bits=entry.act_bits, groups=entry.act_groups, group_mode=entry.act_group_mode
        )
        act = ActivationQuantizer(cfg, device=None if device.type == "meta" else device)
    new = DeployLinear(
        entry.in_features,
        entry.out_features,
        entry.bias,
        weight_bits=entry.weight_bits,
        act_quantizer=act,
        role=entry.role,
        device=None if device.type == "meta" else device,
    )
    if entry.kept_rank is not None:
        new.kept = SmoothLowRank(
            entry.in_features, entry.out_features, entry.kept_rank, dtype=entry.kept_dtype or "bfloat16",
            device=None if device.type == "meta" else device,
        )  # fmt: skip
    return new


@overload
def load_quantized(
    directory: str | os.PathLike[str], /, *, model_class: type[nn.Module] | None = None
) -> nn.Module: ...
@overload
def load_quantized(model: nn.Module, directory: str | os.PathLike[str], /) -> nn.Module: ...
def load_quantized(
    model_or_directory: nn.Module | str | os.PathLike[str],
    directory: str | os.PathLike[str] | None = None,
    /,
    *,
    model_class: type[nn.Module] | None = None,
) -> nn.Module:
    """Load a folder written by `save_quantized`; return the model with its `DeployLinear`s, in eval mode.

    ``load_quantized(directory)`` rebuilds the model from the manifest's recorded class and config with
    its parameters on the meta device (`qvgen.quant.skeleton`) and assigns the saved tensors: no
    full-precision weights are read or allocated. ``model_class`` overrides the recorded class (needed
    for classes outside `skeleton.TRUSTED_MODEL_PACKAGES`). ``load_quantized(model, directory)`` loads
    into a float skeleton you built yourself.

    The Linears named in the manifest become `DeployLinear`s and every tensor is loaded strictly from
    safetensors. A manifest that disagrees with the tensors or the model, or a truncated file, is refused
    with an error naming the file and the layer.
    """
    if isinstance(model_or_directory, nn.Module):
        if directory is None:
            raise TypeError("load_quantized(model, directory): the directory is missing")
        return _load_into(model_or_directory, Path(directory), assign=False)
    if directory is not None:
        raise TypeError(
            "load_quantized(directory) takes one folder; to fill a skeleton use (model, directory)"
        )
    folder = Path(model_or_directory)
    manifest = read_manifest(folder)
    where = folder / MANIFEST_FILE
    cls = model_class if model_class is not None else skeleton.model_class(manifest, where)
    empty = skeleton.build_empty(cls, manifest.source.config, where)
    model = _load_into(empty, folder, assign=True)
    left = skeleton.meta_tensors(model)
    if left:
        raise ValueError(f"{folder / manifest.tensors_file}: no tensors for {left[:5]} of {cls.__name__}")
    return model.eval()


def _check_outside_layers(
    path: Path, model: nn.Module, manifest: DeployManifest, tensors: dict[str, Tensor]
) -> None:
    """Refuse, before any layer is swapped, tensors that do not fit the model outside the deploy layers.

    So a failed `load_quantized(model, dir)` leaves the caller's model as it was.
    """
    prefixes = tuple(f"{entry.name}." for entry in manifest.layers)
    own = {k: v for k, v in model.state_dict(keep_vars=True).items() if not k.startswith(prefixes)}
    saved = {k: v for k, v in tensors.items() if not k.startswith(prefixes)}
    missing = sorted(own.keys() - saved.keys())
    unexpected = sorted(saved.keys() - own.keys())
    if missing or unexpected:
        raise ValueError(
            f"{path}: state dict does not match the {type(model).__name__} given outside the manifest's "
            f"layers (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    wrong = [k for k in sorted(own) if own[k].shape != saved[k].shape]
    if wrong:
        k = wrong[0]
        raise ValueError(
            f"{path}: tensor {k!r} has shape {tuple(saved[k].shape)}, the {type(model).__name__} given "
            f"expects {tuple(own[k].shape)} ({len(wrong)} such tensors)"
        )


def _load_into(model: nn.Module, directory: Path, *, assign: bool) -> nn.Module:
    manifest = read_manifest(directory)
    path = directory / manifest.tensors_file
    if not path.is_file():
        raise FileNotFoundError(f"{path}: tensors file named by {directory / MANIFEST_FILE} is missing")
    size = path.stat().st_size
    if size != manifest.tensors_bytes:
        raise ValueError(
            f"{path}: {size} bytes but the manifest records {manifest.tensors_bytes}: truncated or replaced file"
        )
    digest = file_sha256(path)
    if digest != manifest.tensors_sha256:
        raise ValueError(
            f"{path}: sha256 {digest[:12]}… does not match {manifest.tensors_sha256[:12]}… recorded in "
            f"{directory / MANIFEST_FILE}: the file is corrupted or was replaced; export it again"
        )
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as e:
        why = " ".join(str(e).split())  # safetensors quotes the header, line breaks included
        raise ValueError(
            f"{path}: cannot read the safetensors file ({why}); it is truncated or corrupt"
        ) from e
    if type(model).__name__ != manifest.source.class_name:
        raise ValueError(
            f"{directory / MANIFEST_FILE}: saved from a {manifest.source.class_name}, "
            f"but load_quantized got a {type(model).__name__}; build the matching model first"
        )
    check_deploy_tensors(str(path), manifest.layers, tensors)
    _check_outside_layers(path, model, manifest, tensors)
    new = {entry.name: _deploy_module(path, model, entry) for entry in manifest.layers}
    for name, module in new.items():
        _set_submodule(model, name, module)
    # key sets were checked above: inside the layers by check_deploy_tensors, outside by _check_outside_layers
    try:
        model.load_state_dict(tensors, strict=True, assign=assign)
    except RuntimeError as e:
        raise ValueError(f"{path}: tensors do not fit the {type(model).__name__} given: {e}") from e
    if any(entry.target == "w4a4" for entry in manifest.layers):
        attach_timestep_context_(model, manifest.num_train_timesteps)
    return model
