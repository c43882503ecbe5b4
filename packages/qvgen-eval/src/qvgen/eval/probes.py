"""Diagnostic hooks: which timestep clip group each activation quantizer used, per transformer call."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from qvgen.quant import ActivationQuantizer


@dataclass(slots=True)
class ClipGroupCall:
    """One transformer call: the `timestep` it got `[B]` and the group `[B]` each quantizer used."""

    timestep: Tensor
    groups: dict[str, Tensor] = field(default_factory=dict)


@contextmanager
def record_clip_groups(transformer: nn.Module) -> Iterator[list[ClipGroupCall]]:
    """Record, while the block runs, the clip group every activation quantizer applies in every call.

    Hooks are registered once here (one walk over the modules), not per step.
    """
    calls: list[ClipGroupCall] = []

    def on_call(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        t = kwargs.get("timestep")
        if t is None:
            raise RuntimeError("record_clip_groups needs the transformer called with a `timestep` keyword")
        calls.append(ClipGroupCall(torch.as_tensor(t).detach().reshape(-1).cpu()))

    def on_layer(name: str, quantizer: ActivationQuantizer) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            if not calls:
                raise RuntimeError(f"activation quantizer {name!r} ran outside a transformer call")
            calls[-1].groups[name] = quantizer.group_index().detach().cpu().clone()

        return hook

    # the layers that own a quantizer, not the quantizer: at inference (and in deploy layers) the integer
    # arithmetic reads the quantizer's clips without calling its forward
    layers = {
        f"{n}.act_quantizer": m
        for n, m in transformer.named_modules()
        if isinstance(getattr(m, "act_quantizer", None), ActivationQuantizer)
    }
    if not layers:
        raise ValueError(
            "the transformer has no activation quantizers; quantize it with qvgen.quant.prepare_"
        )
    handles = [transformer.register_forward_pre_hook(on_call, with_kwargs=True)]
    handles += [m.register_forward_pre_hook(on_layer(n, m.act_quantizer)) for n, m in layers.items()]
    try:
        yield calls
    finally:
        for h in handles:
            h.remove()
