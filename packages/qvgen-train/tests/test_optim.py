import pytest
import torch
from torch import nn

from qvgen import auxiliary, quant
from qvgen.train.config import OptimConfig
from qvgen.train.optim import build_optimizer, build_scheduler, lr_multiplier, param_groups, warmup_steps


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(64, 128)
        self.down = nn.Linear(128, 64)
        self.norm = nn.LayerNorm(64)
        self.table = nn.Parameter(torch.zeros(64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.down(torch.relu(self.up(x))) + self.table)


@pytest.fixture
def model() -> nn.Module:
    m = _Block()
    quant.prepare_(m, quant.QuantConfig.w4a4())
    quant.initialize_(m, progress=False)
    auxiliary.attach_(m, auxiliary.AuxConfig(decay=auxiliary.DecaySchedule(initial_rank=8, period=2)))
    return m


def test_param_groups_split_every_trainable_parameter_once_with_the_paper_lrs(model):
    groups = {g["name"]: g for g in param_groups(model, OptimConfig())}
    assert list(groups) == ["weights", "weight_qparams", "act_clip", "phi", "other"]
    assert [groups[n]["lr"] for n in groups] == [3e-5, 3e-5, 1e-2, 3e-5, 3e-5]
    assert all(g["weight_decay"] == 1e-4 for g in groups.values())
    ids = [id(p) for g in groups.values() for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters()) and len(ids) == len(set(ids))
    assert {id(p) for p in groups["weights"]["params"]} == {id(model.up.weight), id(model.down.weight)}
    assert {id(p) for p in groups["phi"]["params"]} == {id(p) for p in auxiliary.lowrank_parameters(model)}
    other = {id(p) for p in groups["other"]["params"]}
    assert {id(model.up.bias), id(model.table), id(model.norm.weight)} <= other


def test_every_group_gets_a_gradient_and_an_update(model):
    opt = build_optimizer(model, OptimConfig())
    before = {g["name"]: [p.detach().clone() for p in g["params"]] for g in opt.param_groups}
    quant.set_timesteps_(model, torch.tensor([500.0]))
    model(torch.randn(1, 5, 64)).pow(2).mean().backward()
    opt.step()
    for g in opt.param_groups:
        moved = [not torch.equal(a, p) for a, p in zip(before[g["name"]], g["params"])]
        assert any(moved), g["name"]


def test_frozen_parameters_are_left_out():
    m = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    m[0].requires_grad_(False)
    quant.prepare_(m, quant.QuantConfig.w4a4(), keep_high_precision=("*",))
    groups = param_groups(m, OptimConfig())
    assert [g["name"] for g in groups] == ["other"] and len(groups[0]["params"]) == 2


def test_warmup_is_ten_percent_of_the_paper_runs():
    assert warmup_steps(OptimConfig(), 2667) == 267 and warmup_steps(OptimConfig(), 2000) == 200


@pytest.mark.parametrize(
    ("step", "expected"),
    [(0, 0.0), (5, 0.5), (10, 1.0), (55, 0.5), (100, 0.0), (120, 0.0)],
)
def test_lr_multiplier_is_linear_warmup_then_cosine_to_zero(step, expected):
    assert lr_multiplier(step, warmup=10, total=100) == pytest.approx(expected, abs=1e-12)


def test_scheduler_steps_once_per_call_over_all_groups(model):
    cfg = OptimConfig(warmup_fraction=0.1)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, max_steps=20)
    for _ in range(2):
        opt.step()
        sched.step()
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["act_clip"] == pytest.approx(1e-2 * 1.0) and lrs["weights"] == pytest.approx(3e-5)
