"""prepare_/initialize_ on a tiny diffusers Wan transformer (diffusers is not a dependency: skipped without it)."""

import pytest
import torch

from qvgen.quant import LayerRole, QuantConfig, initialize_, prepare_, timestep_context

diffusers = pytest.importorskip("diffusers")

WAN_TINY = dict(
    patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=64, in_channels=16, out_channels=16,
    text_dim=64, freq_dim=256, ffn_dim=256, num_layers=2, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=32,
)  # fmt: skip

WAN_ROLES = {
    "blocks.*.attn1.to_q": LayerRole.attn_q,
    "blocks.*.attn1.to_k": LayerRole.attn_k,
    "blocks.*.attn1.to_v": LayerRole.attn_v,
    "blocks.*.attn1.to_qkv": LayerRole.attn_qkv,
    "blocks.*.attn1.to_out.0": LayerRole.attn_out,
    "blocks.*.attn2.to_q": LayerRole.cross_q,
    "blocks.*.attn2.to_k": LayerRole.cross_k,
    "blocks.*.attn2.to_v": LayerRole.cross_v,
    "blocks.*.attn2.to_kv": LayerRole.cross_kv,
    "blocks.*.attn2.to_out.0": LayerRole.cross_out,
    "blocks.*.ffn.net.0.proj": LayerRole.ffn_up,
    "blocks.*.ffn.net.2": LayerRole.ffn_down,
    "condition_embedder.time_embedder.*": LayerRole.time_embed,
    "condition_embedder.time_proj": LayerRole.modulation,
    "condition_embedder.text_embedder.*": LayerRole.text_proj,
    "proj_out": LayerRole.proj_out,
}


@pytest.fixture
def wan() -> torch.nn.Module:
    return diffusers.WanTransformer3DModel(**WAN_TINY)


def _inputs(batch: int = 2) -> dict[str, torch.Tensor]:
    return {
        "hidden_states": torch.randn(batch, 16, 3, 8, 8),
        "timestep": torch.tensor([30.5, 870.25])[:batch],
        "encoder_hidden_states": torch.randn(batch, 16, 64),
    }


def test_prepare_swaps_every_wan_linear_and_assigns_roles(wan: torch.nn.Module) -> None:
    linear_names = [n for n, m in wan.named_modules() if isinstance(m, torch.nn.Linear)]
    layers = prepare_(wan, QuantConfig.w4a4(), layer_roles=WAN_ROLES)
    assert sorted(layers) == sorted(linear_names) and len(layers) == 2 * 10 + 6
    assert {layer.role for layer in layers.values()} == set(WAN_ROLES.values()) - {
        LayerRole.attn_qkv, LayerRole.cross_kv,
    }  # fmt: skip
    assert LayerRole.other not in {layer.role for layer in layers.values()}


def test_prepare_keeps_wan_globs_high_precision(wan: torch.nn.Module) -> None:
    layers = prepare_(
        wan,
        QuantConfig.w4a4(),
        layer_roles=WAN_ROLES,
        keep_high_precision=("condition_embedder.*", "proj_out"),
    )
    assert not any(name.startswith("condition_embedder") or name == "proj_out" for name in layers)
    assert len(layers) == 20


def test_quantized_wan_runs_forward_backward_with_per_sample_timestep_groups(wan: torch.nn.Module) -> None:
    layers = prepare_(wan, QuantConfig.w4a4(), layer_roles=WAN_ROLES)
    initialize_(wan, progress=False)
    x = _inputs()
    out = wan(**x, return_dict=False)[0]
    assert out.shape == x["hidden_states"].shape and bool(torch.isfinite(out).all())
    assert timestep_context(wan).group_index(50, "bin").tolist() == [1, 43]
    out.pow(2).mean().backward()
    for name, layer in layers.items():
        assert layer.weight.grad is not None, name
        assert layer.weight_quantizer.scale.grad is not None, name
        touched = set(torch.nonzero(layer.act_quantizer.clip_logit_hi.grad).flatten().tolist())
        assert touched <= {1, 43} and touched, name


def test_quantized_wan_output_is_close_to_the_float_model_at_8_bits(wan: torch.nn.Module) -> None:
    x = _inputs()
    with torch.no_grad():
        ref = wan(**x, return_dict=False)[0]
    prepare_(
        wan,
        QuantConfig.model_validate({"weight": {"bits": 8}, "activation": {"bits": 8}}),
        layer_roles=WAN_ROLES,
    )
    initialize_(wan, progress=False)
    with torch.no_grad():
        out = wan(**x, return_dict=False)[0]
    rel = (out - ref).norm() / ref.norm()
    assert rel < 0.1
