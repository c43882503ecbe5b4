import pytest
import torch
from torch import nn

from qvgen.auxiliary import AuxConfig, DecaySchedule, LowRankBranch, attach_, lowrank_parameters, phi_disabled
from qvgen.auxiliary.testing import assert_no_phi, quant_config, tiny_mlp, tiny_quantized_mlp
from qvgen.quant import prepare_, quantized_layers


def _errors(model):
    out = {}
    for name, layer in quantized_layers(model).items():
        W, Q = layer.weight.detach().float(), layer.quantized_weight()
        phi = layer.lowrank() if layer.lowrank is not None else torch.zeros_like(W)
        out[name] = (torch.linalg.norm(W - Q).item(), torch.linalg.norm(W - Q - phi.detach()).item())
    return out


def test_svd_init_lowers_the_weight_error_to_the_best_rank_r_residual():
    model = tiny_quantized_mlp((64, 128, 64))
    attach_(model, AuxConfig(decay=DecaySchedule(initial_rank=8)))
    for name, layer in quantized_layers(model).items():
        W, Q = layer.weight.detach().float(), layer.quantized_weight()
        S = torch.linalg.svdvals((W - Q).double())
        before, after = _errors(model)[name]
        assert after < before
        assert after == pytest.approx(S[8:].square().sum().sqrt().item(), rel=1e-4)


def test_attach_clips_the_rank_to_the_layer_and_shares_one_gamma():
    model = tiny_quantized_mlp((64, 16, 64))
    branches = attach_(model, AuxConfig())
    assert {n: b.width for n, b in branches.items()} == {"0": 16, "2": 16}
    assert branches["0"].group is branches["2"].group
    assert branches["0"].group.values.shape == (32,)
    assert branches["0"].owner is model[0] and model[0].lowrank is branches["0"]


def test_gradients_reach_l_r_weight_scales_and_clips():
    model = tiny_quantized_mlp()
    attach_(model, AuxConfig(decay=DecaySchedule(initial_rank=4)))
    model(torch.randn(8, 64)).square().mean().backward()
    layer = model[0]
    for name, p in [
        ("L", layer.lowrank.L),
        ("R", layer.lowrank.R),
        ("weight", layer.weight),
        ("scale", layer.weight_quantizer.scale),
        ("zero_point", layer.weight_quantizer.zero_point),
        ("clip", layer.act_quantizer.clip_logit_hi),
    ]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_phi_sees_the_quantized_activation():
    model = tiny_quantized_mlp()
    attach_(model, AuxConfig(decay=DecaySchedule(initial_rank=4)))
    layer, x = model[0], torch.randn(5, 64)
    expected = nn.functional.linear(
        layer.act_quantizer(x), layer.quantized_weight() + layer.lowrank(), layer.bias
    )
    torch.testing.assert_close(layer(x), expected, atol=1e-6, rtol=1e-6)


def test_loftq_iterations_lower_the_error_of_the_forward_weight():
    one, three = tiny_quantized_mlp(bits=3), tiny_quantized_mlp(bits=3)
    three.load_state_dict(one.state_dict())
    scale_before = three[0].weight_quantizer.scale.detach().clone()
    attach_(one, AuxConfig(decay=DecaySchedule(initial_rank=4), init_iters=1))
    attach_(three, AuxConfig(decay=DecaySchedule(initial_rank=4), init_iters=3))
    # the quantizer the forward uses was re-fitted, and Q(W) + Φ is closer to W through it
    assert not torch.equal(three[0].weight_quantizer.scale, scale_before)
    e1, e3 = _errors(one), _errors(three)
    for name in e1:
        assert e3[name][1] < e1[name][1]


def test_attach_refuses_a_second_attach():
    model = tiny_quantized_mlp()
    attach_(model, AuxConfig())
    with pytest.raises(ValueError, match="layer '0' already has a low-rank branch"):
        attach_(model, AuxConfig())


def test_attach_before_initialize_names_the_layer_and_the_fix():
    model = tiny_mlp()
    prepare_(model, quant_config())
    with pytest.raises(RuntimeError, match=r"layer '0'.*initialize_"):
        attach_(model, AuxConfig())


def test_attach_without_quantized_layers_says_to_prepare():
    with pytest.raises(ValueError, match="prepare_"):
        attach_(tiny_mlp(), AuxConfig())


def test_lowrank_parameters_lists_every_l_and_r():
    model = tiny_quantized_mlp()
    branches = attach_(model, AuxConfig())
    expected = {id(p) for b in branches.values() for p in (b.L, b.R)}
    assert {id(p) for p in lowrank_parameters(model)} == expected and len(expected) == 4


def test_phi_disabled_runs_the_plain_quantized_model_and_restores_phi():
    plain = tiny_quantized_mlp()
    model = tiny_quantized_mlp()
    model.load_state_dict(plain.state_dict())
    branches = attach_(model, AuxConfig(decay=DecaySchedule(initial_rank=4)))
    x = torch.randn(4, 64)
    with_phi = model(x)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with phi_disabled(model):
        assert torch.equal(model(x), plain(x))
        assert_no_phi(model)
    assert torch.equal(model(x), with_phi)
    assert all(model[i].lowrank is branches[str(i)] for i in (0, 2))
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_phi_disabled_restores_phi_after_an_error():
    model = tiny_quantized_mlp()
    attach_(model, AuxConfig())
    with pytest.raises(KeyError), phi_disabled(model):
        raise KeyError("boom")
    assert isinstance(model[0].lowrank, LowRankBranch)
