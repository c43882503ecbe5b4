import pytest
import torch
from torch import nn
from torchao.quantization import quantize_

from qvgen.quant import (
    LayerRole,
    MinMaxWeight,
    QuantConfig,
    QuantLinear,
    QVGenFakeQuantConfig,
    RoleOverride,
    initialize_,
    mse_weight_range,
    plan_quantization,
    prepare_,
    quant_parameter_groups,
    quantized_layers,
    set_timesteps_,
    timestep_context,
)


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.to_q = nn.Linear(32, 32)
        self.to_out = nn.ModuleList([nn.Linear(32, 32)])
        self.ffn = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32))
        self.mha = nn.MultiheadAttention(32, 2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.to_out[0](self.to_q(x))
        x = x + self.mha(x, x, x, need_weights=False)[0]
        return x + self.ffn(x)


def _model() -> nn.Sequential:
    return nn.Sequential(_Block(), _Block(), nn.Linear(32, 8))


ROLES = {
    "*.to_q": LayerRole.attn_q,
    "*.to_out.0": LayerRole.attn_out,
    "*.ffn.0": LayerRole.ffn_up,
    "*.ffn.2": LayerRole.ffn_down,
}


def test_prepare_swaps_linears_with_roles_from_globs_and_returns_them() -> None:
    model = _model()
    layers = prepare_(model, QuantConfig.w4a4(), layer_roles=ROLES)
    assert layers == quantized_layers(model)
    roles = {name: layer.role for name, layer in layers.items()}
    assert roles == {
        "0.to_q": LayerRole.attn_q, "0.to_out.0": LayerRole.attn_out, "0.ffn.0": LayerRole.ffn_up,
        "0.ffn.2": LayerRole.ffn_down, "1.to_q": LayerRole.attn_q, "1.to_out.0": LayerRole.attn_out,
        "1.ffn.0": LayerRole.ffn_up, "1.ffn.2": LayerRole.ffn_down, "2": LayerRole.other,
    }  # fmt: skip
    # nn.MultiheadAttention's out_proj is read directly by MHA and must stay a plain Linear
    assert type(model[0].mha.out_proj) is nn.modules.linear.NonDynamicallyQuantizableLinear
    assert timestep_context(model) is not None
    assert all(layer.act_quantizer.context is timestep_context(model) for layer in layers.values())


def test_errors_of_a_prepared_layer_name_its_path_in_the_model() -> None:
    model = _model()
    prepare_(model, QuantConfig.w4a4(), layer_roles=ROLES)
    with pytest.raises(RuntimeError, match=r"layer '0\.to_q' has no weight range yet"):
        model(torch.randn(2, 5, 32))
    initialize_(model, progress=False)
    set_timesteps_(model, torch.tensor([10.0, 900.0]))
    # a layer fed frames folded into the batch: 6 rows against 2 timesteps
    with pytest.raises(
        ValueError, match=r"layer '0\.to_q': activation quantizer: activation of shape \(6, 5, 32\)"
    ):
        model(torch.randn(6, 5, 32))


def test_prepare_keeps_high_precision_globs_from_config_and_argument() -> None:
    model = _model()
    cfg = QuantConfig(keep_high_precision=("2",))
    layers = prepare_(model, cfg, layer_roles=ROLES, keep_high_precision=("0.*",))
    assert sorted(layers) == ["1.ffn.0", "1.ffn.2", "1.to_out.0", "1.to_q"]
    assert type(model[2]) is nn.Linear and type(model[0].to_q) is nn.Linear


def test_prepare_skips_roles_and_applies_role_bits() -> None:
    model = _model()
    cfg = QuantConfig(
        role_overrides={
            LayerRole.attn_q: RoleOverride(skip=True),
            LayerRole.ffn_down: RoleOverride(weight_bits=8),
        }
    )
    layers = prepare_(model, cfg, layer_roles=ROLES)
    assert "0.to_q" not in layers and type(model[0].to_q) is nn.Linear
    assert layers["0.ffn.2"].weight_quantizer.bits == 8 and layers["0.ffn.0"].weight_quantizer.bits == 4


def test_plan_matches_what_prepare_swaps() -> None:
    plan = plan_quantization(_model(), QuantConfig(), layer_roles=ROLES, keep_high_precision=("1.*",))
    model = _model()
    layers = prepare_(model, QuantConfig(), layer_roles=ROLES, keep_high_precision=("1.*",))
    assert plan == {name: layer.role for name, layer in layers.items()}


def test_prepare_rejects_bad_role_prepared_model_and_bare_linear() -> None:
    with pytest.raises(ValueError, match=r"layer_roles\['\*.to_q'\] = 'query' is not a LayerRole"):
        prepare_(_model(), QuantConfig(), layer_roles={"*.to_q": "query"})  # type: ignore[dict-item]
    model = _model()
    prepare_(model, QuantConfig())
    with pytest.raises(ValueError, match="already prepared"):
        prepare_(model, QuantConfig())
    with pytest.raises(ValueError, match=r"wrap a bare nn\.Linear"):
        prepare_(nn.Linear(4, 4), QuantConfig())


def test_torchao_quantize_accepts_the_registered_config() -> None:
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    quantize_(model, QVGenFakeQuantConfig(quant=QuantConfig.w3a3(), role=LayerRole.ffn_up))
    assert isinstance(model[0], QuantLinear) and isinstance(model[2], QuantLinear)
    assert model[0].role is LayerRole.ffn_up and model[0].weight_quantizer.bits == 3


def test_initialize_sets_mse_ranges_on_every_layer_and_enables_forward() -> None:
    model = _model()
    layers = prepare_(model, QuantConfig.w4a4(), layer_roles=ROLES)
    initialize_(model, progress=False)
    for layer in layers.values():
        assert layer.weight_quantizer.initialized
        s, z = mse_weight_range(layer.weight, 4)  # float64 parity of this search: test_fake_quant.py
        torch.testing.assert_close(layer.weight_quantizer.scale.data, s, atol=0, rtol=0)
        torch.testing.assert_close(layer.weight_quantizer.zero_point.data, z, atol=0, rtol=0)
    set_timesteps_(model, torch.tensor([10.0, 990.0]))
    out = model(torch.randn(2, 6, 32))
    assert out.shape == (2, 6, 8) and bool(torch.isfinite(out).all())


def test_initialize_uses_minmax_for_rtn_config() -> None:
    model = nn.Sequential(nn.Linear(16, 8))
    prepare_(model, QuantConfig(weight=MinMaxWeight(bits=4)))
    initialize_(model, progress=False)
    w = model[0].weight
    expected = (w.amax(1, keepdim=True) - w.amin(1, keepdim=True)) / 15
    torch.testing.assert_close(model[0].weight_quantizer.scale, expected, atol=0, rtol=0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_initialize_names_the_layer_whose_weight_is_not_finite(bad: float) -> None:
    model = _model()
    prepare_(model, QuantConfig(), layer_roles=ROLES)
    with torch.no_grad():
        model[1].ffn[2].weight[3, 5] = bad
    with pytest.raises(ValueError, match=r"layer '1\.ffn\.2': weight has 1 NaN/Inf values"):
        initialize_(model, progress=False)


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors:UserWarning")
def test_initialize_names_the_layer_whose_weight_cannot_be_quantized() -> None:
    model = nn.Sequential(nn.Linear(8, 4), nn.Linear(0, 4))
    prepare_(model, QuantConfig())
    with pytest.raises(ValueError, match=r"layer '1': weight of shape \(4, 0\) cannot be quantized"):
        initialize_(model, progress=False)


def test_initialize_rejects_meta_weights_and_unprepared_models() -> None:
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(8, 4))
    prepare_(model, QuantConfig())
    with pytest.raises(ValueError, match="layer '0': weight is on the meta device"):
        initialize_(model, progress=False)
    with pytest.raises(ValueError, match=r"call `qvgen\.quant\.prepare_"):
        initialize_(nn.Sequential(nn.Linear(4, 4)), progress=False)


def test_initialize_refuses_layers_that_already_have_phi() -> None:
    model = _model()
    layers = prepare_(model, QuantConfig(), layer_roles=ROLES)
    layers["1.ffn.0"].lowrank = nn.Linear(1, 1)  # any module in the slot
    with pytest.raises(ValueError, match=r"layer '1\.ffn\.0' \(and 0 more\) already has Φ attached"):
        initialize_(model, progress=False)


def test_quant_parameter_groups_split_weights_qparams_and_clips() -> None:
    model = _model()
    layers = prepare_(model, QuantConfig(), layer_roles=ROLES)
    groups = quant_parameter_groups(model)
    assert len(groups.weights) == len(layers) == 9
    assert len(groups.weight_qparams) == 2 * len(layers) and len(groups.act_clip) == 2 * len(layers)
    ids = [id(p) for p in (*groups.weights, *groups.weight_qparams, *groups.act_clip)]
    assert len(set(ids)) == len(ids)
    biases = {id(layer.bias) for layer in layers.values()}
    assert not biases & set(ids)
    rtn = _model()
    prepare_(rtn, QuantConfig.rtn_w4a4())
    assert quant_parameter_groups(rtn).weight_qparams == []  # min-max ranges are frozen


def test_a_few_qat_steps_reduce_the_distillation_loss() -> None:
    teacher = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32))
    student = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32))
    student.load_state_dict(teacher.state_dict())
    prepare_(student, QuantConfig.w3a3())
    initialize_(student, progress=False)
    groups = quant_parameter_groups(student)
    opt = torch.optim.Adam(
        [
            {"params": groups.weights, "lr": 3e-3},
            {"params": groups.weight_qparams, "lr": 1e-4},
            {"params": groups.act_clip, "lr": 1e-2},
        ]
    )
    x = torch.randn(4, 16, 32)
    set_timesteps_(student, torch.tensor([0.0, 300.0, 600.0, 900.0]))
    with torch.no_grad():
        target = teacher(x)
    losses = []
    for _ in range(30):
        loss = (student(x) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_prepare_attaches_the_timestep_range_it_is_given() -> None:
    model = nn.Sequential(nn.Linear(64, 64))
    prepare_(model, QuantConfig(), num_train_timesteps=500)
    context = timestep_context(model)
    assert context is not None and context.num_train_timesteps == 500
