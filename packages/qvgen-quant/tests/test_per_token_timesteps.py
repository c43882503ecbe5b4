"""Per-token timesteps `[B, S]` (Wan 2.2 TI2V's `expand_timesteps`): each latent token takes the clip
group of its own timestep; `[B]` and scalar timesteps keep their behaviour bit for bit."""

import pytest
import torch
from torch import nn

from qvgen.quant import (
    ClippedDynamicActivation,
    LayerRole,
    LSQPlusWeight,
    QuantConfig,
    QuantLinear,
    TimestepContext,
    initialize_,
    prepare_,
    set_timesteps_,
)
from qvgen.quant.deploy import DeployLinear

B, S, K, N = 2, 12, 64, 48


def _layer(
    mode: str = "bin", role: LayerRole = LayerRole.attn_q, groups: int = 50
) -> tuple[nn.Module, QuantLinear]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(K, N))
    act = ClippedDynamicActivation(groups=groups, group_mode=mode)  # type: ignore[arg-type]
    prepare_(model, QuantConfig(weight=LSQPlusWeight(), activation=act), layer_roles={"0": role})
    initialize_(model, progress=False)
    layer = model[0]
    assert isinstance(layer, QuantLinear)
    with torch.no_grad():  # a different clip pair per group, so a wrong group shows in the output
        layer.act_quantizer.clip_logit_lo.copy_(torch.linspace(-1.0, 4.0, groups))
        layer.act_quantizer.clip_logit_hi.copy_(torch.linspace(4.0, -1.0, groups))
    return model, layer


def _x(*lead: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(*lead, K, generator=g) * 3 + 0.5


def test_context_keeps_token_and_sample_timesteps() -> None:
    ctx = TimestepContext()
    tt = torch.tensor([[0.0, 999.0, 500.0], [20.0, 20.0, 0.0]])
    ctx.set(tt)
    assert ctx.token_timesteps is not None and torch.equal(ctx.token_timesteps, tt)
    assert ctx.timesteps is not None and ctx.timesteps.tolist() == [999.0, 20.0]  # each sample's noise level
    assert ctx.group_index(50, "bin").tolist() == [49, 1]
    token = ctx.token_group_index(50, "bin")
    assert token is not None and token.tolist() == [[0, 49, 25], [1, 1, 0]]
    assert ctx.token_group_index(50, "bin") is token  # one copy per call, shared by every layer
    assert ctx.token_group_index(10, "reference_nofix").tolist() == [[9] * 3] * 2
    ctx.set(torch.tensor([3.0, 4.0]))
    assert ctx.token_timesteps is None and ctx.token_group_index(50, "bin") is None
    with pytest.raises(ValueError, match=r"\[B, S\]"):
        ctx.set(torch.zeros(1, 2, 3))


@pytest.mark.parametrize("mode", ["bin", "mod"])
@pytest.mark.parametrize("t", [37.0, 812.5])
def test_uniform_token_timesteps_are_bit_identical_to_per_sample_and_scalar(mode: str, t: float) -> None:
    model, layer = _layer(mode)
    deploy = DeployLinear.from_quant_linear(layer)
    x3 = _x(B, S)
    outs: dict[str, list[torch.Tensor]] = {}
    for name, ts in {
        "scalar": torch.tensor(t),
        "per_sample": torch.full((B,), t),
        "per_token": torch.full((B, S), t),
    }.items():
        set_timesteps_(model, ts)
        with torch.no_grad():
            outs[name] = [layer(x3), deploy(x3), layer.act_quantizer(x3)]
    for a, b in zip(outs["per_token"], outs["per_sample"], strict=True):
        assert torch.equal(a, b)
    for a, b in zip(outs["per_token"], outs["scalar"], strict=True):
        assert torch.equal(a, b)
    # the flattened token sequence [B*S, K] (diffusers' Wan time embedder under [B, S]) takes the same groups
    set_timesteps_(model, torch.full((B, S), t))
    with torch.no_grad():
        assert torch.equal(layer.act_quantizer(x3.reshape(B * S, K)).reshape(B, S, K), outs["per_token"][2])


@pytest.mark.parametrize("target", ["fake", "deploy"])
def test_mixed_token_timesteps_equal_running_each_token_group_separately(target: str) -> None:
    model, layer = _layer()
    deploy = DeployLinear.from_quant_linear(layer)
    run = layer if target == "fake" else deploy
    x = _x(B, S)
    # TI2V image-to-video: the first frame's tokens at t = 0, the rest at the sample's t
    tt = torch.tensor([[0.0] * 4 + [700.0] * 8, [0.0] * 4 + [130.0] * 8])
    set_timesteps_(model, tt)
    with torch.no_grad():
        out = run(x)
        act = layer.act_quantizer(x)
        assert torch.equal(layer.act_quantizer(x.reshape(B * S, K)).reshape(B, S, K), act)
    for b in range(B):
        for value in tt[b].unique():
            mask = tt[b] == value
            set_timesteps_(model, value.reshape(1))
            with torch.no_grad():
                alone = run(x[b : b + 1, mask])
                assert torch.equal(act[b, mask], layer.act_quantizer(x[b : b + 1, mask])[0])
            torch.testing.assert_close(out[b, mask], alone[0], rtol=1e-6, atol=1e-6)
    # a wrong group would show: the two halves of a sample really use different clip pairs
    set_timesteps_(model, tt[:, -1])
    with torch.no_grad():
        assert not torch.equal(run(x)[:, :4], out[:, :4])


def test_deploy_matches_fake_quant_under_token_timesteps() -> None:
    model, layer = _layer()
    deploy = DeployLinear.from_quant_linear(layer)
    g = torch.Generator().manual_seed(2)
    set_timesteps_(model, torch.rand(B, S, generator=g) * 1000)
    x = _x(B, S)
    with torch.no_grad():
        fake, out = layer(x), deploy(x)
    assert torch.equal(out, fake)
    float_form = layer(x).detach()  # with gradients: the float form of the same function
    err = float((out.double() - float_form.double()).abs().max() / float_form.double().abs().max())
    assert err <= 1e-5


def test_text_token_layers_take_the_sample_group_even_when_lengths_coincide() -> None:
    model, layer = _layer(role=LayerRole.cross_k)
    assert not layer.act_quantizer.token_groups
    deploy = DeployLinear.from_quant_linear(layer)
    assert deploy.act_quantizer is not None and not deploy.act_quantizer.token_groups
    text = _x(B, S)  # S text tokens, by chance as many as latent tokens
    tt = torch.tensor([[0.0] * 4 + [700.0] * 8, [0.0] * 4 + [130.0] * 8])
    set_timesteps_(model, tt)
    with torch.no_grad():
        mixed = [layer(text), deploy(text)]
    set_timesteps_(model, tt.amax(dim=1))
    with torch.no_grad():
        per_sample = [layer(text), deploy(text)]
    for a, b in zip(mixed, per_sample, strict=True):
        assert torch.equal(a, b)


def test_other_shapes_under_token_timesteps_take_the_sample_group() -> None:
    model, layer = _layer()
    tt = torch.tensor([[0.0] * 4 + [700.0] * 8, [0.0] * 4 + [130.0] * 8])
    x = _x(B, 5)  # e.g. a pooled or shorter sequence
    set_timesteps_(model, tt)
    with torch.no_grad():
        mixed = layer(x)
    set_timesteps_(model, tt.amax(dim=1))
    with torch.no_grad():
        assert torch.equal(mixed, layer(x))
