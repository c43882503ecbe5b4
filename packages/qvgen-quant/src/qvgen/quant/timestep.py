"""One shared timestep context per transformer, filled by a forward pre-hook on the model root.

Every activation quantizer of a model holds a reference to the same `TimestepContext`; the hook stores
the call's `timestep` tensor once per transformer call, and each quantizer derives its per-sample clip
group from it with a few tensor ops (no loop over modules, no host sync).

The two `reference*` group modes ignore the timestep's value and replay how the reference implementation
(ModelTC/QVGen `inference/*.py`) samples its released checkpoints: a per-layer counter that every call
advances. Here one call counter per context stands for it, advanced by the same pre-hook once per
transformer call (a device tensor: no host sync) and reset at the start of each sampling run, recognised
by the timestep rising above the previous call's (schedules run from high to low timesteps) or by an
explicit `TimestepContext.reset_calls()`. `reference_call_groups` gives the groups such a run uses, and
`record_call_groups` records the group each call really used.

Per-token timesteps (Wan 2.2 TI2V's `expand_timesteps`): a `[B, S]` timestep holds one value per latent
token, in the order of the patchified token sequence the blocks' Linears see (diffusers flattens the
latent's (frame, height, width) patches, and the pipeline builds its `[B, S]` from the same mask, e.g.
first-frame tokens at t = 0 in image-to-video mode). The context then keeps both the per-token groups
(`token_group_index`, `[B, S]`) and per-sample ones (`group_index`, `[B]`, from each sample's largest
timestep, its noise level) for layers whose input is not the latent sequence (text / image tokens).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from qvgen.quant.config import GroupMode

CONTEXT_ATTR = "_qvgen_timestep_context"
HOOK_ATTR = "_qvgen_timestep_hook"
REFERENCE_MODES: tuple[GroupMode, ...] = ("reference", "reference_nofix")
"""Group modes that pick the group by call count (the reference's sampling), not by timestep value."""


def reference_group(call: int, groups: int, *, fix: bool = True) -> int:
    """The clip group of the `call`-th transformer call (1-based) of a sampling run in the reference.

    With `--fix` every call first decrements a counter that starts at G, so call k uses G - k while k <= G,
    then 0 for good; without it the counter is never used and its initial index -1 selects G - 1.
    """
    if call < 1 or groups < 1:
        raise ValueError(f"call and groups must be >= 1, got call={call}, groups={groups}")
    return max(groups - call, 0) if fix else groups - 1


def reference_call_groups(
    num_steps: int, *, groups: int = 50, cfg: bool = True, fix: bool = True, batched_cfg: bool = False
) -> list[int]:
    """The clip group of every transformer call of one reference sampling run, in call order.

    `cfg`: classifier-free guidance on; Wan's pipeline then makes two calls per step (conditional first,
    then unconditional), CogVideoX's one batched call (`batched_cfg=True`). E.g. 50 Wan steps with CFG and
    `--fix`: step s uses 49 - 2s (conditional) and 48 - 2s (unconditional) for s <= 24, then 0.
    """
    if num_steps < 0:
        raise ValueError(f"num_steps must be >= 0, got {num_steps}")
    calls = num_steps * (2 if cfg and not batched_cfg else 1)
    return [reference_group(k, groups, fix=fix) for k in range(1, calls + 1)]


class TimestepContext:
    """Holds the current call's timesteps `[B]` (and `[B, S]` per-token ones) and the groups derived from them."""

    def __init__(self, num_train_timesteps: int = 1000) -> None:
        if num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps must be >= 1, got {num_train_timesteps}")
        self.num_train_timesteps = num_train_timesteps
        self.timesteps: Tensor | None = None
        """Per-sample timesteps `[B]`: the call's `[B]`, or each sample's largest token timestep of a `[B, S]`."""
        self.token_timesteps: Tensor | None = None
        """The call's per-token timesteps `[B, S]`, or None when it passed a scalar or `[B]`."""
        self._groups: dict[tuple[int, str, torch.device | None, bool], Tensor] = {}
        self.counts_calls = False
        """Whether `begin_call` counts calls (set by `attach_timestep_context_` when a quantizer uses a
        `reference*` mode, so the other modes pay nothing)."""
        self._calls: Tensor | None = None  # 0-d long: calls of the current sampling run, on the device
        self._last: Tensor | None = None  # the previous call's first timestep

    def begin_call(self, timesteps: Tensor | float | int | None) -> None:
        """`set` for one transformer call (what the pre-hook calls): also advances the call counter,
        which restarts at 1 when the timestep rises above the previous call's (a new sampling run)."""
        self.set(timesteps)
        t = self.timesteps
        if not self.counts_calls or t is None or t.numel() == 0:
            return
        first = t[0].clone()
        prev = self._last
        if self._calls is None or prev is None or prev.device != first.device or prev.dtype != first.dtype:
            self._calls = torch.ones((), dtype=torch.long, device=first.device)
        else:
            self._calls = torch.where(first > prev, torch.ones_like(self._calls), self._calls + 1)
        self._last = first

    def reset_calls(self) -> None:
        """Start a new sampling run: the next call is call 1 (`reference` mode). Needed only where the
        timestep does not rise between runs (e.g. one-step schedules)."""
        self._calls = None
        self._last = None
        self._groups = {}

    def set(self, timesteps: Tensor | float | int | None) -> None:
        """Store the timesteps of the coming forward (a scalar becomes shape `[1]`); None clears them."""
        self._groups = {}
        self.token_timesteps = None
        if timesteps is None:
            self.timesteps = None
            return
        t = torch.as_tensor(timesteps).detach()
        if t.dim() > 2:
            raise ValueError(
                "timestep must be a scalar, a 1-D tensor [B] or a 2-D tensor [B, S] (one per latent token), "
                f"got shape {tuple(t.shape)}"
            )
        if t.dim() == 2:
            if t.shape[1] == 0:
                raise ValueError(f"a per-token timestep [B, S] needs S >= 1, got shape {tuple(t.shape)}")
            self.token_timesteps = t
            self.timesteps = t.amax(dim=1)
            return
        self.timesteps = t.reshape(-1)

    def group_index(self, groups: int, mode: GroupMode, device: torch.device | None = None) -> Tensor:
        """Per-sample group `[B]` (long): `bin` min(G-1, floor(t*G/T)), `mod` int(t) mod G, `reference`
        max(G-k, 0) for the k-th call of the run (G-1 before any counted call), `reference_nofix` G-1; on
        `device` (default: the timesteps'), cached per call so that every layer shares one copy."""
        return self._group_index(groups, mode, device, tokens=False)

    def token_group_index(
        self, groups: int, mode: GroupMode, device: torch.device | None = None
    ) -> Tensor | None:
        """Per-token groups `[B, S]` (long) of a `[B, S]` timestep, by the same rule as `group_index`
        (the `reference*` modes, which ignore the value, give each token its sample's group); None when
        the call passed a scalar or `[B]`. Cached per call like `group_index`."""
        if self.token_timesteps is None:
            return None
        return self._group_index(groups, mode, device, tokens=True)

    def _group_index(
        self, groups: int, mode: GroupMode, device: torch.device | None, *, tokens: bool
    ) -> Tensor:
        key = (groups, mode, device, tokens)
        cached = self._groups.get(key)
        if cached is not None:
            return cached
        if device is not None:
            g = self._group_index(groups, mode, None, tokens=tokens).to(device)
            self._groups[key] = g
            return g
        if tokens and mode in REFERENCE_MODES:
            tt = self.token_timesteps
            assert tt is not None
            g = self._group_index(groups, mode, None, tokens=False)[:, None].expand(tt.shape)
            self._groups[key] = g
            return g
        t = self.token_timesteps if tokens else self.timesteps
        if t is None:
            raise RuntimeError(
                "no timestep set for the activation quantizers: call the model with a `timestep` argument "
                "after `qvgen.quant.attach_timestep_context_(model)`, or call `qvgen.quant.set_timesteps_(model, t)`"
            )
        if mode == "bin":
            # float64 so that float32 timesteps near a bin edge land where exact arithmetic puts them
            g = torch.floor(t.to(torch.float64) * groups / self.num_train_timesteps)
            g = g.clamp(0, groups - 1).long()
        elif mode == "mod":
            g = torch.remainder(t.long(), groups)
        elif mode == "reference" and self._calls is not None:
            g = (groups - self._calls).clamp(0, groups - 1).reshape(1).expand(t.shape[0])
        else:  # reference_nofix, or reference before any counted call
            g = torch.full(t.shape, groups - 1, dtype=torch.long, device=t.device)
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
            self.context.begin_call(kwargs[self.kwarg])
        elif self.position is not None and len(args) > self.position:
            self.context.begin_call(args[self.position])
        else:
            self.context.begin_call(None)


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
            if getattr(module, "group_mode", None) in REFERENCE_MODES:
                context.counts_calls = True


def attach_timestep_context_(
    model: nn.Module, num_train_timesteps: int = 1000, *, timestep_kwarg: str = "timestep"
) -> TimestepContext:
    """Share one `TimestepContext` among all activation quantizers of `model`; return it.

    If `model.forward` takes a `timestep_kwarg` parameter, one forward pre-hook stores it on every call
    (Wan: float sigma*1000, CogVideoX: long; shape `[B]`, or `[B, S]` for Wan 2.2 TI2V's per-token
    timesteps). Otherwise set it with `set_timesteps_`.
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


@contextmanager
def record_call_groups(model: nn.Module) -> Iterator[list[int]]:
    """Record the clip group every call of `model` uses inside the block (e.g. one pipeline call).

    Yields a list that holds, once the block exits, one int per transformer call: the group of the call's
    first sample, read from the first activation quantizer with more than one group (all of a model's
    quantizers share the mode). The groups stay on the device until the block exits (one sync then).
    For tests and benchmarks: compare it with `reference_call_groups`.
    """
    probe = next(
        (
            m
            for m in model.modules()
            if isinstance(m, UsesTimestepContext) and getattr(m, "groups", 1) > 1 and m.context is not None
        ),
        None,
    )
    if probe is None:
        raise ValueError(
            "record_call_groups: the model has no activation quantizer with more than one clip group bound "
            "to a timestep context (`attach_timestep_context_`)"
        )
    seen: list[Tensor] = []

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        seen.append(probe.group_index()[:1])

    # registered after the context's own pre-hook, so it runs after the call's timestep was stored
    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    groups: list[int] = []
    try:
        yield groups
    finally:
        handle.remove()
        if seen:
            groups.extend(int(g) for g in torch.cat([g.cpu() for g in seen]).tolist())
