"""SVDQuant's kept branch: smoothing + 16-bit SVD factors in QuantLinear, DeployLinear and save/load."""

from pathlib import Path

import pytest
import torch
from torch import nn

from qvgen.quant import (
    ClippedDynamicActivation,
    KeptLowRank,
    LSQPlusWeight,
    NoActivationQuant,
    QuantConfig,
    QuantLinear,
    SmoothLowRank,
    convert_,
    initialize_,
    load_quantized,
    prepare_,
    read_manifest,
    save_quantized,
    set_timesteps_,
    smoothing_factors,
)


class Two(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(64, 96)
        self.b = nn.Linear(96, 64, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


def _outlier_input(g: torch.Generator, n: int = 32, k: int = 64) -> torch.Tensor:
    x = torch.randn(1, n, k, generator=g)
    x[..., 3] *= 40.0  # one outlier channel, the case smoothing exists for
    return x


def _svdquant_model(rank: int, act_bits: int, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = Two()
    x = _outlier_input(g)
    absmax = {"a": x.abs().amax(dim=(0, 1)), "b": torch.relu(model.a(x)).abs().amax(dim=(0, 1)).detach()}
    cfg = QuantConfig(
        weight=LSQPlusWeight(bits=4),
        activation=ClippedDynamicActivation(bits=act_bits, groups=1),
        kept_lowrank=KeptLowRank(rank=rank),
    )
    layers = prepare_(model, cfg)
    for name, layer in layers.items():
        assert layer.kept is not None
        residual = layer.kept.fit_(layer.weight, absmax[name], alpha=0.5)
        layer.weight.data.copy_(residual)
    initialize_(model, progress=False)
    return model, x


def test_smoothing_factors_follow_the_migration_formula() -> None:
    act = torch.tensor([4.0, 1.0, 1e-9])
    w = torch.tensor([[1.0, -9.0, 0.5], [-4.0, 1.0, 0.0]])
    lam = smoothing_factors(act, w, alpha=0.5)
    expected = torch.tensor([(4.0**0.5) / (4.0**0.5), 1.0 / 9.0**0.5, (1e-5**0.5) / 0.5**0.5])
    torch.testing.assert_close(lam, expected)
    with pytest.raises(ValueError, match="alpha"):
        smoothing_factors(act, w, alpha=1.5)


def test_fit_splits_the_smoothed_weight_into_branch_plus_residual() -> None:
    torch.manual_seed(0)
    w, act = torch.randn(48, 32), torch.rand(32) * 10
    kept = SmoothLowRank(32, 48, 8)
    residual = kept.fit_(w, act, alpha=0.5)
    w_hat = w * kept.smooth[None, :]
    torch.testing.assert_close(kept.up.float() @ kept.down.float() + residual, w_hat)
    # the branch holds the top singular directions: the residual's norm is what SVD_8 leaves
    s = torch.linalg.svdvals(w_hat)
    assert residual.norm() == pytest.approx(float(s[8:].norm()), rel=0.05)
    x = torch.randn(5, 32)
    xs = kept.smooth_input(x)
    torch.testing.assert_close(
        torch.nn.functional.linear(xs, residual) + kept(xs), x @ w.T, rtol=1e-2, atol=1e-2
    )


def test_rank_larger_than_the_layer_is_refused() -> None:
    with pytest.raises(ValueError, match="rank 70"):
        SmoothLowRank(64, 96, 70)


def test_kept_branch_with_unquantized_path_reproduces_the_float_layer() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32))
    ref = model[0].weight.detach().clone()
    cfg = QuantConfig(
        weight=LSQPlusWeight(bits=8), activation=NoActivationQuant(), kept_lowrank=KeptLowRank(rank=8)
    )
    layer = prepare_(model, cfg)["0"]
    assert layer.kept is not None
    layer.weight.data.copy_(layer.kept.fit_(layer.weight, torch.rand(64) + 0.5, alpha=0.5))
    initialize_(model, progress=False)
    x = torch.randn(4, 64)
    torch.testing.assert_close(model(x), x @ ref.T + model[0].bias, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("act_bits", [4, 6])
def test_kept_branch_lowers_error_against_plain_w4ax_on_an_outlier_channel(act_bits: int) -> None:
    model, x = _svdquant_model(rank=8, act_bits=act_bits)
    torch.manual_seed(0)
    ref_model = Two()
    plain = Two()
    plain.load_state_dict(ref_model.state_dict())
    prepare_(
        plain,
        QuantConfig(
            weight=LSQPlusWeight(bits=4), activation=ClippedDynamicActivation(bits=act_bits, groups=1)
        ),
    )
    initialize_(plain, progress=False)
    with torch.no_grad():
        ref = ref_model(x)
        err_svd = (model(x) - ref).norm() / ref.norm()
        err_plain = (plain(x) - ref).norm() / ref.norm()
    assert err_svd < err_plain


def test_deploy_runs_the_branch_beside_the_integer_gemm_and_round_trips(tmp_path: Path) -> None:
    model, x = _svdquant_model(rank=8, act_bits=4)
    set_timesteps_(model, torch.tensor([500.0]))
    with torch.no_grad():
        fake = model(x)
    convert_(model)
    with torch.no_grad():
        deployed = model(x)
    assert torch.equal(deployed, fake)  # the fake-quant layers ran the deploy arithmetic at inference
    manifest = save_quantized(model, tmp_path)
    assert {entry.kept_rank for entry in manifest.layers} == {8}
    assert read_manifest(tmp_path).layers[0].kept_dtype == "bfloat16"
    loaded = load_quantized(Two(), tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), deployed, rtol=0, atol=0)
    state = loaded.state_dict()
    assert state["a.kept.down"].dtype == torch.bfloat16 and state["a.kept.smooth"].dtype == torch.float32


def test_load_refuses_a_kept_branch_of_the_wrong_rank(tmp_path: Path) -> None:
    import json

    from qvgen.core import seal_manifest

    model, _ = _svdquant_model(rank=8, act_bits=4)
    convert_(model)
    save_quantized(model, tmp_path)
    path = tmp_path / "quant_manifest.json"
    data = json.loads(path.read_text())
    data["layers"][0]["kept_rank"] = 4
    path.write_text(json.dumps(seal_manifest(data)))  # sealed again: reach the tensors check
    with pytest.raises(ValueError, match=r"layer 'a'.*kept.down"):
        load_quantized(Two(), tmp_path)


def test_convert_refuses_an_unmerged_weight_delta() -> None:
    model = nn.Sequential(nn.Linear(16, 16))
    layer: QuantLinear = prepare_(model, QuantConfig())["0"]
    initialize_(model, progress=False)
    layer.weight_delta = nn.Identity()
    with pytest.raises(ValueError, match="unmerged weight delta"):
        convert_(model)


def test_kept_branch_is_computed_in_float32_under_autocast():
    kept = SmoothLowRank(32, 48, 8)
    kept.down.copy_(torch.randn(8, 32))
    kept.up.copy_(torch.randn(48, 8))
    x = torch.randn(3, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = kept(x)
    assert y.dtype == torch.float32
    assert torch.equal(y, kept(x))
