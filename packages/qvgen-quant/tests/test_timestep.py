import copy

import pytest
import torch
from torch import nn

from qvgen.quant import (
    ActivationQuantizer,
    ClippedDynamicActivation,
    TimestepContext,
    attach_timestep_context_,
    record_call_groups,
    reference_call_groups,
    set_timesteps_,
    timestep_context,
)


class _Denoiser(nn.Module):
    """Stand-in transformer root: CogVideoX-like signature, timestep third positional."""

    def __init__(self) -> None:
        super().__init__()
        self.a = ActivationQuantizer(ClippedDynamicActivation(groups=10))
        self.b = nn.Sequential(ActivationQuantizer(ClippedDynamicActivation(groups=10, group_mode="mod")))
        self.seen: list[torch.Tensor] = []

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                timestep: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        self.seen.append(self.a.group_index())
        return self.b(self.a(hidden_states))


def test_attach_shares_one_context_among_all_activation_quantizers() -> None:
    model = _Denoiser()
    ctx = attach_timestep_context_(model)
    assert isinstance(ctx, TimestepContext)
    assert model.a.context is ctx and model.b[0].context is ctx
    assert timestep_context(model) is ctx
    assert attach_timestep_context_(model) is ctx  # idempotent
    assert len(model._forward_pre_hooks) == 1


@pytest.mark.parametrize("how", ["kwarg", "positional"])
def test_pre_hook_reads_the_timestep_argument_each_call(how: str) -> None:
    model = _Denoiser()
    attach_timestep_context_(model)
    x = torch.randn(2, 3, 8)
    for t in (torch.tensor([0, 999]), torch.tensor([450, 451])):
        if how == "kwarg":
            model(x, timestep=t)
        else:
            model(x, None, t)
    assert [g.tolist() for g in model.seen] == [[0, 9], [4, 4]]


def test_pre_hook_clears_timesteps_when_a_call_passes_none() -> None:
    model = _Denoiser()
    attach_timestep_context_(model)
    model(torch.randn(1, 2, 8), timestep=torch.tensor([5]))
    with pytest.raises(RuntimeError, match="no timestep set"):
        model(torch.randn(1, 2, 8))


def test_no_hook_without_timestep_parameter_and_manual_set_works() -> None:
    model = nn.Sequential(ActivationQuantizer(ClippedDynamicActivation(groups=5)))
    ctx = attach_timestep_context_(model)
    assert len(model._forward_pre_hooks) == 0
    set_timesteps_(model, torch.tensor([999.0]))
    assert ctx.group_index(5, "bin").tolist() == [4]
    model(torch.randn(1, 3, 4))


def test_set_timesteps_attaches_a_context_when_missing() -> None:
    model = nn.Sequential(ActivationQuantizer(ClippedDynamicActivation(groups=5)))
    ctx = set_timesteps_(model, 10)
    assert model[0].context is ctx and ctx.timesteps is not None and ctx.timesteps.shape == (1,)


def test_num_train_timesteps_sets_the_bin_width() -> None:
    model = nn.Sequential(ActivationQuantizer(ClippedDynamicActivation(groups=4)))
    attach_timestep_context_(model, num_train_timesteps=100)
    set_timesteps_(model, torch.tensor([24.0, 25.0, 99.0, 500.0]))
    assert model[0].group_index().tolist() == [0, 1, 3, 3]
    with pytest.raises(ValueError, match="num_train_timesteps=100, not 1000"):
        attach_timestep_context_(model, num_train_timesteps=1000)


def test_context_rejects_3d_timesteps_and_bad_num_train_timesteps() -> None:
    # [B, S] per-token timesteps are accepted (test_per_token_timesteps.py); more dimensions are not
    with pytest.raises(ValueError, match=r"shape \(2, 2, 2\)"):
        TimestepContext().set(torch.zeros(2, 2, 2))
    with pytest.raises(ValueError, match=r"S >= 1"):
        TimestepContext().set(torch.zeros(2, 0))
    with pytest.raises(ValueError, match="num_train_timesteps must be >= 1"):
        TimestepContext(0)


def test_group_indices_are_computed_once_per_call_and_reset_on_set() -> None:
    ctx = TimestepContext()
    ctx.set(torch.tensor([10.0]))
    first = ctx.group_index(50, "bin")
    assert ctx.group_index(50, "bin") is first
    ctx.set(torch.tensor([990.0]))
    assert ctx.group_index(50, "bin").tolist() == [49]
    # every layer on the model's device shares one copy (timesteps given on the host: one transfer per call)
    on_device = ctx.group_index(50, "bin", torch.device("cpu"))
    assert ctx.group_index(50, "bin", torch.device("cpu")) is on_device and on_device.tolist() == [49]


def test_deepcopy_of_a_model_gets_its_own_shared_context() -> None:
    model = _Denoiser()
    attach_timestep_context_(model)
    clone = copy.deepcopy(model)
    ctx = timestep_context(clone)
    assert ctx is not timestep_context(model)
    assert clone.a.context is ctx and clone.b[0].context is ctx
    clone(torch.randn(1, 2, 8), timestep=torch.tensor([999]))
    assert ctx.timesteps is not None and timestep_context(model).timesteps is None


def test_activation_quantizers_are_bound_through_the_protocol_not_an_import_of_fake_quant() -> None:
    import ast
    from pathlib import Path

    from qvgen.quant import timestep

    tree = ast.parse(Path(timestep.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "qvgen.quant.fake_quant" not in imported  # fake_quant imports timestep: no cycle
    quantizer = ActivationQuantizer(ClippedDynamicActivation(bits=4, groups=2))
    assert isinstance(quantizer, timestep.UsesTimestepContext)
    assert not isinstance(nn.Linear(2, 2), timestep.UsesTimestepContext)


class _Reference(nn.Module):
    """Stand-in transformer whose quantizers replay the reference's sampling counter."""

    def __init__(self, mode: str = "reference", groups: int = 10) -> None:
        super().__init__()
        self.a = ActivationQuantizer(ClippedDynamicActivation(groups=groups, group_mode=mode))
        self.b = ActivationQuantizer(ClippedDynamicActivation(groups=groups, group_mode=mode))
        self.seen: list[list[int]] = []

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor | None = None) -> torch.Tensor:
        self.seen.append(self.a.group_index().tolist())
        return self.b(self.a(hidden_states))


def _cfg_run(model: nn.Module, timesteps: list[float], batch: int = 1) -> None:
    """One sampling run as Wan's pipeline makes it: a conditional then an unconditional call per step."""
    x = torch.randn(batch, 3, 8)
    for t in timesteps:
        model(x, timestep=torch.full((batch,), t))
        model(x, timestep=torch.full((batch,), t))


def test_reference_mode_counts_calls_and_restarts_when_the_timestep_rises() -> None:
    model = _Reference()
    attach_timestep_context_(model)
    steps = [999.0 - 20 * s for s in range(8)]  # 16 calls, G = 10: groups 9..0 then 0
    _cfg_run(model, steps, batch=2)
    expected = reference_call_groups(8, groups=10, cfg=True, fix=True)
    assert expected == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0, 0, 0, 0, 0, 0]
    assert model.seen == [[g, g] for g in expected]  # every sample of a call shares the call's group
    model.seen.clear()
    _cfg_run(model, steps[:2])  # a new run starts high again: counted from 1
    assert model.seen == [[9], [8], [7], [6]]


def test_reference_nofix_uses_the_last_group_for_every_call() -> None:
    model = _Reference("reference_nofix")
    attach_timestep_context_(model)
    _cfg_run(model, [999.0, 500.0, 3.0])
    assert [g for (g,) in model.seen] == reference_call_groups(3, groups=10, fix=False) == [9] * 6


def test_reset_calls_starts_a_new_run_where_the_timestep_does_not_rise() -> None:
    model = _Reference()
    ctx = attach_timestep_context_(model)
    _cfg_run(model, [999.0])
    _cfg_run(model, [999.0])  # a one-step schedule: same timestep, so the counter goes on
    assert [g for (g,) in model.seen] == [9, 8, 7, 6]
    model.seen.clear()
    ctx.reset_calls()
    _cfg_run(model, [999.0])
    assert [g for (g,) in model.seen] == [9, 8]


def test_only_reference_modes_count_calls_and_other_modes_ignore_the_counter() -> None:
    assert not attach_timestep_context_(_Denoiser()).counts_calls
    ctx = attach_timestep_context_(_Reference())
    assert ctx.counts_calls
    ctx.set(torch.tensor([5.0]))  # set by hand: no call counted, the first group
    assert ctx.group_index(10, "reference").tolist() == [9]
    assert ctx.group_index(10, "mod").tolist() == [5] and ctx.group_index(10, "bin").tolist() == [0]


def test_record_call_groups_reads_the_group_each_call_used() -> None:
    model = _Reference()
    attach_timestep_context_(model)
    with record_call_groups(model) as groups:
        _cfg_run(model, [999.0, 979.0, 959.0])
    assert groups == [9, 8, 7, 6, 5, 4] == reference_call_groups(3, groups=10)
    model(torch.randn(1, 3, 8), timestep=torch.tensor([1.0]))
    assert len(groups) == 6  # the hook is gone after the block
    with pytest.raises(ValueError, match="no activation quantizer"), record_call_groups(nn.Linear(2, 2)):
        pass


def test_reference_call_groups_matches_the_reference_wan_and_cogvideox_schedules() -> None:
    wan = reference_call_groups(50, groups=50, cfg=True, fix=True)
    assert len(wan) == 100 and wan[:4] == [49, 48, 47, 46] and wan[48:] == [1, 0] + [0] * 50
    cog = reference_call_groups(50, groups=50, cfg=True, fix=True, batched_cfg=True)
    assert cog == list(range(49, -1, -1))
    assert reference_call_groups(25, groups=50, cfg=False) == list(range(49, 24, -1))
