import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from qvgen.auxiliary import AuxConfig, DecaySchedule, apply_, attach_, gamma_values, rank_at, required_steps
from qvgen.auxiliary.testing import assert_no_phi, tiny_quantized_mlp

SCHED = DecaySchedule(initial_rank=8, period=4)


def _setup(mode="resvd", policy="reset", dims=(64, 128, 64)):
    model = tiny_quantized_mlp(dims)
    cfg = AuxConfig(decay=SCHED, mode=mode, optimizer_state=policy)
    branches = attach_(model, cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    return model, branches, optimizer


def _train_step(model, optimizer, step):
    g = torch.Generator().manual_seed(step)
    x = torch.randn(8, 64, generator=g)
    optimizer.zero_grad()
    model(x).square().mean().backward()
    optimizer.step()


def test_resvd_shrinks_every_branch_to_the_schedule_rank():
    model, branches, optimizer = _setup(dims=(64, 6, 64))  # layer widths clip to 6
    widths = []
    for step in range(required_steps(SCHED)):
        state = rank_at(step, SCHED)
        changed = apply_(branches, state, optimizer)
        assert changed == (state.boundary and state.rank < 6)
        widths.append(sorted({b.width for b in branches.values()}))
        for b in branches.values():
            assert torch.equal(b.gamma, gamma_values(state, b.width))
        if branches:
            _train_step(model, optimizer, step)
    assert widths[::4] == [[6], [4], [2], [1], []]


def test_resvd_leaves_phi_unchanged_at_the_boundary():
    model, branches, optimizer = _setup()
    for step in range(4):
        apply_(branches, rank_at(step, SCHED), optimizer)
        _train_step(model, optimizer, step)
    before = {n: b().detach().clone() for n, b in branches.items()}
    kept = {n: (b.L[:, :4] @ b.R[:4]).detach().clone() for n, b in branches.items()}
    dropped = {n: (b.L[:, 4:] @ b.R[4:]).detach().clone() for n, b in branches.items()}
    alpha = rank_at(3, SCHED).alpha
    assert apply_(branches, rank_at(4, SCHED), optimizer)
    for n, b in branches.items():
        assert b.width == 4
        after = b().detach()
        torch.testing.assert_close(after, kept[n], atol=1e-6, rtol=1e-5)
        # the full Φ only loses the decayed half, which carried the weight α(T - 1)
        torch.testing.assert_close(after, before[n] - alpha * dropped[n], atol=1e-6, rtol=1e-5)


def test_resvd_acts_on_the_parameters_the_optimizer_holds():
    model, branches, optimizer = _setup()
    for step in range(5):
        apply_(branches, rank_at(step, SCHED), optimizer)
        _train_step(model, optimizer, step)
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for b in branches.values():
        assert id(b.L) in held and id(b.R) in held and b.width == 4
    n_params = sum(len(g["params"]) for g in optimizer.param_groups)
    assert n_params == len(list(model.parameters()))


def test_a_failed_resvd_names_the_branch_and_leaves_phi_and_the_optimizer_as_they_were():
    model, branches, optimizer = _setup()
    for step in range(4):
        apply_(branches, rank_at(step, SCHED), optimizer)
        _train_step(model, optimizer, step)
    names = list(branches)
    with torch.no_grad():
        branches[names[-1]].L[0, 0] = float("nan")  # the last branch's SVD fails after the others ran
    held_before = [p for group in optimizer.param_groups for p in group["params"]]
    with pytest.raises(RuntimeError, match=rf"branch '{names[-1]}' to rank 4 at step 4"):
        apply_(branches, rank_at(4, SCHED), optimizer)
    assert {b.width for b in branches.values()} == {8}
    assert [p for group in optimizer.param_groups for p in group["params"]] == held_before
    held = {id(p) for p in held_before}
    assert all(id(b.L) in held and id(b.R) in held for b in branches.values())


def test_reset_policy_drops_the_moments_of_the_shrunk_factors():
    model, branches, optimizer = _setup(policy="reset")
    for step in range(4):
        apply_(branches, rank_at(step, SCHED), optimizer)
        _train_step(model, optimizer, step)
    old = [(b.L, b.R) for b in branches.values()]
    apply_(branches, rank_at(4, SCHED), optimizer)
    for (old_L, old_R), b in zip(old, branches.values()):
        assert old_L not in optimizer.state and old_R not in optimizer.state
        assert b.L not in optimizer.state
    _train_step(model, optimizer, 4)
    for b in branches.values():
        assert optimizer.state[b.L]["exp_avg"].shape == b.L.shape
        assert optimizer.state[b.L]["step"].item() == 1


def test_slice_policy_carries_the_moments_of_the_kept_columns():
    model, branches, optimizer = _setup(policy="slice")
    for step in range(4):
        apply_(branches, rank_at(step, SCHED), optimizer)
        _train_step(model, optimizer, step)
    old = [{k: v.clone() for k, v in optimizer.state[b.R].items()} for b in branches.values()]
    apply_(branches, rank_at(4, SCHED), optimizer)
    for old_state, b in zip(old, branches.values()):
        new_state = optimizer.state[b.R]
        assert torch.equal(new_state["exp_avg"], old_state["exp_avg"][:4])
        assert torch.equal(new_state["exp_avg_sq"], old_state["exp_avg_sq"][:4])
        assert torch.equal(new_state["step"], old_state["step"])
    _train_step(model, optimizer, 4)


def test_columns_mode_keeps_width_and_masks_trailing_columns():
    model, branches, optimizer = _setup(mode="columns")
    Ls = {n: b.L for n, b in branches.items()}
    for step in range(13):
        assert not apply_(branches, rank_at(step, SCHED), optimizer)
        _train_step(model, optimizer, step)
    state = rank_at(12, SCHED)  # rank 1
    for n, b in branches.items():
        assert b.L is Ls[n] and b.width == 8
        assert torch.equal(b.gamma, gamma_values(state, 8))
        torch.testing.assert_close(b(), state.alpha * b.L[:, :1] @ b.R[:1])


@pytest.mark.parametrize("mode", ["resvd", "columns"])
def test_removal_leaves_exactly_a_plain_quantized_model(mode):
    model, branches, optimizer = _setup(mode=mode)
    plain = tiny_quantized_mlp()
    for step in range(required_steps(SCHED)):
        apply_(branches, rank_at(step, SCHED), optimizer)
        _train_step(model, optimizer, step)
    assert branches == {}
    assert_no_phi(model)
    assert list(model.state_dict()) == list(plain.state_dict())
    assert [n for n, _ in model.named_modules()] == [n for n, _ in plain.named_modules()]
    held = [p for g in optimizer.param_groups for p in g["params"]]
    assert {id(p) for p in held} == {id(p) for p in model.parameters()}
    assert set(optimizer.state) <= set(held)
    plain.load_state_dict(model.state_dict())
    x = torch.randn(4, 64)
    assert torch.equal(model(x), plain(x))
    flops = []
    for m in (model, plain):
        with FlopCounterMode(display=False) as counter:
            m(x)
        flops.append(counter.get_total_flops())
    assert flops[0] == flops[1]


def test_apply_on_steps_without_event_only_updates_gamma():
    _, branches, optimizer = _setup()
    L, gamma = branches["0"].L, branches["0"].group.values
    assert not apply_(branches, rank_at(2, SCHED), optimizer)
    assert branches["0"].L is L
    assert branches["0"].group.values is gamma  # written in place, once for all branches
    assert torch.equal(branches["0"].group.values, gamma_values(rank_at(2, SCHED), 8))


def test_apply_refuses_to_grow_phi():
    _, branches, optimizer = _setup()
    apply_(branches, rank_at(4, SCHED), optimizer)
    with pytest.raises(ValueError, match="cannot grow to rank 8"):
        apply_(branches, rank_at(0, SCHED), optimizer)


def test_resume_rebuilds_the_shapes_from_the_step_and_loads_the_checkpoint():
    model, branches, optimizer = _setup()
    for step in range(10):
        apply_(branches, rank_at(step, SCHED), optimizer)
        _train_step(model, optimizer, step)
    checkpoint = {k: v.clone() for k, v in model.state_dict().items()}
    resumed = tiny_quantized_mlp()
    resumed_branches = attach_(resumed, AuxConfig(decay=SCHED))
    apply_(resumed_branches, rank_at(10, SCHED))
    resumed.load_state_dict(checkpoint)  # strict: same keys and shapes
    apply_(branches, rank_at(10, SCHED), optimizer)
    x = torch.randn(4, 64)
    assert torch.equal(resumed(x), model(x))


def test_apply_after_removal_accepts_rank_zero_only():
    _, branches, optimizer = _setup()
    apply_(branches, rank_at(16, SCHED), optimizer)
    assert not apply_(branches, rank_at(17, SCHED), optimizer)
    with pytest.raises(ValueError, match="already removed"):
        apply_(branches, rank_at(3, SCHED), optimizer)
