"""quant's `prepare_` on the real diffusers transformers of each family, with the family's own role globs.

(Moved from qvgen-quant's tests, where diffusers is not a dependency and the Wan role table was copied.)
"""

import pytest
import torch
from diffusers import CogVideoXTransformer3DModel, WanTransformer3DModel

from qvgen.models import FAMILIES
from qvgen.models.cogvideox import COG_TINY_TRANSFORMER
from qvgen.models.wan import WAN_TINY_TRANSFORMER
from qvgen.quant import LayerRole, QuantConfig, QuantLinear, initialize_, prepare_, timestep_context

WAN = FAMILIES["wan"]
COG = FAMILIES["cogvideox"]


@pytest.fixture
def wan() -> torch.nn.Module:
    return WanTransformer3DModel(**WAN_TINY_TRANSFORMER)


@pytest.fixture
def cogvideox() -> torch.nn.Module:
    return CogVideoXTransformer3DModel(**COG_TINY_TRANSFORMER)


def _wan_inputs(batch: int = 2) -> dict[str, torch.Tensor]:
    return {
        "hidden_states": torch.randn(batch, 16, 3, 8, 8),
        "timestep": torch.tensor([30.5, 870.25])[:batch],
        "encoder_hidden_states": torch.randn(batch, 16, 64),
    }


def test_prepare_swaps_every_wan_linear_and_assigns_roles(wan: torch.nn.Module) -> None:
    linear_names = [n for n, m in wan.named_modules() if isinstance(m, torch.nn.Linear)]
    layers = prepare_(wan, QuantConfig.w4a4(), layer_roles=WAN.layer_roles)
    assert sorted(layers) == sorted(linear_names) and len(layers) == 2 * 10 + 6
    assert LayerRole.other not in {layer.role for layer in layers.values()}


def test_prepare_keeps_wan_globs_high_precision(wan: torch.nn.Module) -> None:
    layers = prepare_(
        wan,
        QuantConfig.w4a4(),
        layer_roles=WAN.layer_roles,
        keep_high_precision=("condition_embedder.*", "proj_out"),
    )
    assert not any(name.startswith("condition_embedder") or name == "proj_out" for name in layers)
    assert len(layers) == 20


def test_quantized_wan_runs_forward_backward_with_per_sample_timestep_groups(wan: torch.nn.Module) -> None:
    layers = prepare_(
        wan, QuantConfig.w4a4(), layer_roles=WAN.layer_roles, num_train_timesteps=WAN.num_train_timesteps
    )
    initialize_(wan, progress=False)
    x = _wan_inputs()
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
    x = _wan_inputs()
    with torch.no_grad():
        ref = wan(**x, return_dict=False)[0]
    prepare_(
        wan,
        QuantConfig.model_validate({"weight": {"bits": 8}, "activation": {"bits": 8}}),
        layer_roles=WAN.layer_roles,
    )
    initialize_(wan, progress=False)
    with torch.no_grad():
        out = wan(**x, return_dict=False)[0]
    rel = (out - ref).norm() / ref.norm()
    assert rel < 0.1


def test_quantized_cogvideox_takes_positional_integer_timesteps(cogvideox: torch.nn.Module) -> None:
    layers = prepare_(
        cogvideox,
        QuantConfig.w4a4(),
        layer_roles=COG.layer_roles,
        num_train_timesteps=COG.num_train_timesteps,
    )
    assert len(layers) == sum(1 for m in cogvideox.modules() if isinstance(m, QuantLinear))
    initialize_(cogvideox, progress=False)
    hidden = torch.randn(2, 3, 16, 8, 8)  # CogVideoX: (B, F, C, H, W)
    text = torch.randn(2, 16, 64)
    out = cogvideox(hidden, text, torch.tensor([999, 20]), return_dict=False)[0]  # timestep is 3rd positional
    assert out.shape == hidden.shape and bool(torch.isfinite(out).all())
    assert timestep_context(cogvideox).group_index(50, "bin").tolist() == [49, 1]
