"""LoRA on a low-bit transformer: diffusers' own loaders (``pipe.load_lora_weights`` ...) through PEFT.

diffusers loads every LoRA format its pipelines accept (PEFT/diffusers keys, the original Wan and other
trainers' formats, converted by the pipeline's ``lora_state_dict``) into ``transformer.load_lora_adapter``,
which builds a PEFT ``LoraConfig`` and injects PEFT layers. PEFT knows no `DeployLinear` / `QuantLinear`, so
`enable_lora_` gives the transformer its own ``load_lora_adapter``: the stock one, during which PEFT's
``inject_adapter_in_model`` registers `QuantLoraLinear` for those layer types (PEFT's custom-module API,
``LoraConfig._register_custom_module``) and refuses a LoRA with keys that match no module of the
transformer, naming them (PEFT alone would load the rest and only log a warning).

Everything else is diffusers' and PEFT's unchanged: several adapters, ``set_adapters`` with weights,
``disable_lora`` / ``enable_lora``, ``unload_lora_weights`` (the original layers come back: no LoRA
machinery stays in the forward), ``fuse_lora`` / ``unfuse_lora`` (into the low-rank ``kept`` branch, see
`qvgen.models.lora_layer`). Until a LoRA is loaded nothing changes: the transformer's layers are the plain
deploy / fake-quant layers. PEFT is the ``qvgen-models[lora]`` extra and is imported only when a LoRA is loaded.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from types import MethodType
from typing import Any

from torch import nn

LORA_KEY = re.compile(
    r"^(?P<module>.+?)\.(lora_A|lora_B|lora_magnitude_vector|lora_embedding_A|lora_embedding_B)\b"
)
"""A PEFT-format LoRA key: the module path before ``.lora_A.weight`` / ``.lora_B.weight`` / ``.lora_B.bias``."""
MAX_NAMED = 8
"""Unmatched keys named in the error (the count says how many there are)."""


def enable_lora_(transformer: nn.Module) -> nn.Module:
    """Let diffusers' LoRA loaders put LoRAs on ``transformer``'s low-bit layers; returns it (in place, idempotent).

    `load_pipeline` and `load_student` call it; call it on a transformer you quantized yourself.
    """
    if getattr(transformer, "_qvgen_lora_enabled", False):
        return transformer
    if not hasattr(transformer, "load_lora_adapter"):
        raise TypeError(
            f"{type(transformer).__name__} has no `load_lora_adapter`: LoRA needs a diffusers model "
            "(PeftAdapterMixin), e.g. WanTransformer3DModel or CogVideoXTransformer3DModel"
        )
    # an instance attribute over the class's method: a bound method, so `copy.deepcopy` rebinds it to the copy
    transformer.load_lora_adapter = MethodType(_load_lora_adapter, transformer)  # type: ignore[method-assign,assignment]
    transformer._qvgen_lora_enabled = True  # type: ignore[assignment]
    return transformer


def unmatched_lora_keys(model: nn.Module, state_dict: dict[str, Any]) -> list[str]:
    """The keys of a PEFT-format LoRA state dict (module path + ``.lora_A.weight`` ...) naming no module of ``model``."""
    modules = {name for name, _ in model.named_modules()}
    bad = []
    for key in state_dict:
        m = LORA_KEY.match(key)
        if m is None or m["module"] not in modules:
            bad.append(key)
    return bad


class LoraKeyError(ValueError):
    """A LoRA whose keys match no layer of the transformer (the message names them)."""


def _load_lora_adapter(transformer: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """diffusers' own ``load_lora_adapter`` (the class's), with PEFT knowing the low-bit layers."""
    stock = type(transformer).load_lora_adapter  # type: ignore[attr-defined]
    refused: list[LoraKeyError] = []
    with _low_bit_dispatch(transformer, refused), warnings.catch_warnings():
        # PEFT says this on every second adapter diffusers loads, which is how diffusers holds several
        warnings.filterwarnings("ignore", message=r"Already found a `peft_config` attribute in the model")
        try:
            return stock(transformer, *args, **kwargs)
        except Exception:
            # diffusers' own clean-up after a failed injection may raise something else; ours is the cause
            if refused:
                raise refused[0] from None
            raise


@contextmanager
def _low_bit_dispatch(transformer: nn.Module, refused: list[LoraKeyError]) -> Iterator[None]:
    """While diffusers loads one LoRA: PEFT's injection knows the low-bit layers and checks the keys."""
    import peft

    from qvgen.models.lora_layer import LORA_BASE_LAYERS

    inject = peft.inject_adapter_in_model

    def checked_inject(peft_config: Any, model: nn.Module, *args: Any, **kwargs: Any) -> Any:
        state_dict = kwargs.get("state_dict")
        if model is transformer and state_dict is not None:
            bad = unmatched_lora_keys(model, state_dict)
            if bad:
                shown = ", ".join(bad[:MAX_NAMED]) + (", ..." if len(bad) > MAX_NAMED else "")
                err = LoraKeyError(
                    f"LoRA for {type(model).__name__}: {len(bad)} of {len(state_dict)} keys match no layer: "
                    f"{shown}; is it a LoRA for this model family (and this size)?"
                )
                refused.append(err)
                raise err
        if model is transformer:
            peft_config._register_custom_module(LORA_BASE_LAYERS)
        return inject(peft_config, model, *args, **kwargs)

    peft.inject_adapter_in_model = checked_inject
    try:
        yield
    finally:
        peft.inject_adapter_in_model = inject
