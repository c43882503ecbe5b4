"""One shared timestep context per transformer, filled by a forward pre-hook on the model root.

Every activation quantizer of a model holds a reference to the same `TimestepContext`; the hook stores
the call's `timestep` tensor once per transformer call, and each quantizer derives its per-sample clip
group from it with a few tensor ops (no loop over modules, no host sync).
"""

from __future__ import annotations

import inspect
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

CONTEXT_ATTR = "_qvgen_timestep_context"
HOOK_ATTR = "_qvgen_timestep_hook"


class TimestepContext:
    """Holds the current call's timesteps `[B]` and the group indices derived from them."""

    def __init__(self, num_train_timesteps: int = 1000) -> None:
        if num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps must be >= 1, got {num_train_timesteps}")
        self.num_train_timesteps = num_train_timesteps
        self.timesteps: Tensor | None = None
        self._groups: dict[tuple[int, str, torch.device | None], Tensor] = {}

    def set(self, timesteps: Tensor | float | int | None) -> None:
        """Store the timesteps of the coming forward (a scalar becomes shape `[1]`); None clears them."""
        self._groups = {}
        if timesteps is None:
            self.timesteps = None
            return
        t = torch.as_tensor(timesteps).detach()
        if t.dim() > 1:
            raise ValueError(f"timestep must be a scalar or a 1-D tensor [B], got shape {tuple(t.shape)}")
        self.timesteps = t.reshape(-1)

    def group_index(
        self, groups: int, mode: Literal["bin", "mod"], device: torch.device | None = None
    ) -> Tensor:
        """Per-sample group `[B]` (long): `bin` min(G-1, floor(t*G/T)), `mod` int(t) mod G; on `device`
        (default: the timesteps'), cached per call so that every layer shares one copy."""
        key = (groups, mode, device)
        cached = self._groups.get(key)
        if cached is not None:
            return cached
        if device is not None:
            g = self.group_index(groups, mode).to(device)
            self._groups[key] = g
            return g
        t = self.timesteps
        if t is None:
            raise RuntimeError(
                "no timestep set for the activation quantizers: call the model with a `timestep` argument "
                "after `qvgen.quant.attach_timestep_context_(model)`, or call `qvgen.quant.set_timesteps_(model, t)`"
            )
        if mode == "bin":
            # float64 so that float32 timesteps near a bin edge land where exact arithmetic puts them
            g = torch.floor(t.to(torch.float64) * groups / self.num_train_timesteps)
            g = g.clamp(0, groups - 1).long()
        else:
            g = torch.remainder(t.long(), groups)
        self._groups[key] = g
        return g


def _timestep_position(model: nn.Module, kwarg: str) -> int | None:
    """Index of `kwarg` among the positional parameters of `model.forward` (self excluded), if any."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    for i, p in enumerate(positional):
        if p.name == kwarg:
            return i
    return None


class _TimestepHook:
    """Forward pre-hook (with kwargs) that copies the `timestep` argument into the context."""

    def __init__(self, context: TimestepContext, kwarg: str, position: int | None) -> None:
        self.context = context
        self.kwarg = kwarg
        self.position = position

    def __call__(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self.kwarg in kwargs:
            self.context.set(kwargs[self.kwarg])
        elif self.position is not None and len(args) > self.position:
            self.context.set(args[self.position])
        else:
            self.context.set(None)


@runtime_checkable
class UsesTimestepContext(Protocol):
    """A module that reads the shared context (quant's `ActivationQuantizer`); `attach_timestep_context_`
    binds every such module of a model. A Protocol, so this module imports no quantizer (no import cycle)."""

    context: TimestepContext | None

    def group_index(self) -> Tensor: ...


def _bind(model: nn.Module, context: TimestepContext) -> None:
    # One walk at attach time, never per step.
    for module in model.modules():
        if isinstance(module, UsesTimestepContext):
            module.context = context


def attach_timestep_context_(
    model: nn.Module, num_train_timesteps: int = 1000, *, timestep_kwarg: str = "timestep"
) -> TimestepContext:
    """Share one `TimestepContext` among all activation quantizers of `model`; return it.

    If `model.forward` takes a `timestep_kwarg` parameter, one forward pre-hook stores it on every call
    (Wan: float sigma*1000, CogVideoX: long; shape `[B]`). Otherwise set it with `set_timesteps_`.
    Calling again (e.g. after more layers were prepared) rebinds the same context.
    """
    context = getattr(model, CONTEXT_ATTR, None)
    if context is None:
        context = TimestepContext(num_train_timesteps)
        object.__setattr__(model, CONTEXT_ATTR, context)
    elif context.num_train_timesteps != num_train_timesteps:
        raise ValueError(
            f"model already has a timestep context with num_train_timesteps={context.num_train_timesteps}, "
            f"not {num_train_timesteps}"
        )
    position = _timestep_position(model, timestep_kwarg)
    if getattr(model, HOOK_ATTR, None) is None and position is not None:
        handle = model.register_forward_pre_hook(
            _TimestepHook(context, timestep_kwarg, position), with_kwargs=True
        )
        object.__setattr__(model, HOOK_ATTR, handle)
    _bind(model, context)
    return context


def timestep_context(model: nn.Module) -> TimestepContext | None:
    """The context attached to `model`, if any."""
    return getattr(model, CONTEXT_ATTR, None)


def set_timesteps_(model: nn.Module, timesteps: Tensor | float | int | None) -> TimestepContext:
    """Set the timesteps for the next forwards by hand (attaches a context first if there is none)."""
    context = getattr(model, CONTEXT_ATTR, None)
    if context is None:
        context = attach_timestep_context_(model)
    context.set(timesteps)
    return context
