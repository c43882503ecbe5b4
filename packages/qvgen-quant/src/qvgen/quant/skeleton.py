"""Rebuild the model a deploy folder was saved from, without its weights: class + config → parameters on meta.

`load_quantized(directory)` needs no skeleton from the caller: the manifest records the root module's
class (``source.module`` + ``source.class_name``) and its constructor config, so the model is rebuilt
here with every parameter on the ``meta`` device (no memory, no init compute) and the saved tensors are
then assigned in place. Buffers are built normally: the non-persistent ones (rotary tables, sincos
position embeddings) are not in the tensors file and must hold real values.

Only classes from trusted top-level packages are imported by name (a manifest is data, not code);
anything else needs ``model_class=``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch import nn

from qvgen.quant.manifest import DeployManifest

TRUSTED_MODEL_PACKAGES: tuple[str, ...] = ("diffusers", "transformers", "torch", "qvgen")
"""Top-level packages whose classes a manifest may name; others need ``model_class=``."""


@contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Within the block, every registered `nn.Parameter` moves to ``meta``; buffers stay where built.

    Weight init then runs on meta tensors (free). Not thread-safe: it swaps `nn.Module.register_parameter`.
    """
    original = nn.Module.register_parameter

    def register(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
        original(self, name, param)
        if param is not None and param.device.type != "meta":
            self._parameters[name] = type(param)(param.to("meta"), requires_grad=param.requires_grad)

    nn.Module.register_parameter = register  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = original  # type: ignore[method-assign]


def model_class(manifest: DeployManifest, where: Path) -> type[nn.Module]:
    """The class the manifest records, imported from a trusted package; errors name the manifest file."""
    src = manifest.source
    if not src.module:
        raise ValueError(
            f"{where}: the manifest records no module for {src.class_name!r} (written before qvgen recorded "
            "it); pass model_class=, or build the model yourself and call load_quantized(model, directory)"
        )
    top = src.module.partition(".")[0]
    if top not in TRUSTED_MODEL_PACKAGES:
        raise ValueError(
            f"{where}: model class {src.module}.{src.class_name} is outside the trusted packages "
            f"{list(TRUSTED_MODEL_PACKAGES)}; pass model_class= to load it"
        )
    try:
        cls = getattr(importlib.import_module(src.module), src.class_name)
    except (ImportError, AttributeError) as e:
        raise ValueError(
            f"{where}: cannot import the recorded model class {src.module}.{src.class_name}: {e}"
        ) from e
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"{where}: {src.module}.{src.class_name} is not an nn.Module class")
    return cls


def build_empty(cls: type[nn.Module], config: Mapping[str, Any], where: Path) -> nn.Module:
    """``cls`` built from ``config`` with parameters on meta (diffusers' ``from_config`` when it has one)."""
    try:
        with parameters_on_meta():
            from_config = getattr(cls, "from_config", None)
            if callable(from_config):
                return from_config(dict(config))  # type: ignore[no-any-return]
            return cls(**config)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: cannot build {cls.__name__} from the recorded config: {e}") from e


def meta_tensors(model: nn.Module) -> list[str]:
    """Names of parameters and buffers still on the meta device (nothing loaded into them)."""
    named = [*model.named_parameters(), *model.named_buffers()]
    return [name for name, t in named if t.device.type == "meta"]
