"""Issue 13, failure 1: LSQ+ weight scales pushed to <= 0 by the optimizer, and exports the loader refuses.

A 256->128 W4A4 layer trained with scale lr 1e-2 had many rows <= 0 after one Adam step (initial scales are
~0.01, below one step), `convert_`/`save_quantized` wrote them and `load_quantized` refused the folder.
"""

import pytest
import torch
from torch import nn

from qvgen.quant import (
    ClippedDynamicActivation,
    LSQPlusWeight,
    QuantConfig,
    QuantLinear,
    initialize_,
    prepare_,
    quant_parameter_groups,
)
from qvgen.quant.export import convert_, load_quantized, save_quantized
from qvgen.quant.fake_quant import SCALE_FLOOR_RATIO

W4A4 = QuantConfig(weight=LSQPlusWeight(bits=4), activation=ClippedDynamicActivation(bits=4, groups=1))


class Wrap(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(256, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def _trained_with_scale_lr(lr: float, steps: int = 1) -> Wrap:
    torch.manual_seed(0)
    model = Wrap()
    prepare_(model, W4A4, keep_high_precision=())
    initialize_(model, progress=False)
    opt = torch.optim.Adam(quant_parameter_groups(model).weight_qparams, lr=lr)
    for _ in range(steps):
        x = torch.randn(16, 256)
        loss = (model(x) - 3.0 * x[:, :128]).square().mean()  # pulls the scales in one direction
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def test_one_adam_step_at_scale_lr_1e_2_drives_raw_scales_below_zero():
    """The reproduction: the raw parameter does go <= 0, so positivity must come from the forward/export."""
    layer = _trained_with_scale_lr(1e-2).proj
    assert isinstance(layer, QuantLinear)
    assert int((layer.weight_quantizer.scale <= 0).sum()) > 0


def test_effective_scale_stays_at_or_above_the_floor_tied_to_the_initial_scale():
    torch.manual_seed(0)
    model = Wrap()
    prepare_(model, W4A4, keep_high_precision=())
    initialize_(model, progress=False)
    wq = model.proj.weight_quantizer
    initial = wq.scale.detach().clone()
    torch.testing.assert_close(wq.scale_floor, initial * SCALE_FLOOR_RATIO, rtol=0, atol=0)
    with torch.no_grad():
        wq.scale.fill_(-1.0)
    assert bool((wq.effective_scale() > 0).all())
    assert torch.equal(wq.effective_scale(), wq.scale_floor)


def test_floor_passes_the_loss_gradient_straight_through():
    """A row pressed against the floor still sees the loss gradient, so it can grow back."""
    torch.manual_seed(0)
    model = Wrap()
    prepare_(model, W4A4, keep_high_precision=())
    initialize_(model, progress=False)
    wq = model.proj.weight_quantizer
    x = torch.randn(8, 256)
    model(x).square().sum().backward()
    reference = wq.scale.grad.clone()
    wq.scale.grad = None
    with torch.no_grad():
        wq.scale[:5] = -1.0  # below the floor: the forward uses the floor, the gradient passes through
    model(x).square().sum().backward()
    assert bool((wq.scale.grad[:5] != 0).all())
    assert torch.equal(wq.scale.grad[5:] != 0, reference[5:] != 0)


def test_scale_lr_1e_2_run_exports_a_folder_its_own_loader_accepts(tmp_path):
    model = _trained_with_scale_lr(1e-2, steps=3)
    convert_(model)
    save_quantized(model, tmp_path / "deploy")
    fresh = Wrap()
    loaded = load_quantized(fresh, tmp_path / "deploy")
    x = torch.randn(4, 256)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_fake_quant_forward_equals_the_deploy_layer_with_a_floored_row():
    torch.manual_seed(0)
    model = Wrap()
    prepare_(model, W4A4, keep_high_precision=())
    initialize_(model, progress=False)
    with torch.no_grad():
        model.proj.weight_quantizer.scale[:3] = -0.5
    fake = model.proj.quantized_weight()
    convert_(model)
    torch.testing.assert_close(model.proj.dequantized_weight(), fake, rtol=1e-6, atol=1e-7)


def test_student_saved_before_the_floor_existed_still_loads_and_gets_a_floor():
    torch.manual_seed(0)
    model = Wrap()
    prepare_(model, W4A4, keep_high_precision=())
    initialize_(model, progress=False)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("scale_floor")}
    other = Wrap()
    prepare_(other, W4A4, keep_high_precision=())
    other.load_state_dict(state, strict=True)
    wq = other.proj.weight_quantizer
    assert wq.initialized
    torch.testing.assert_close(wq.scale_floor, wq.scale * SCALE_FLOOR_RATIO, rtol=0, atol=0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_convert_refuses_what_load_quantized_refuses_naming_the_layer(bad, tmp_path):
    torch.manual_seed(0)
    model = Wrap()
    prepare_(model, W4A4, keep_high_precision=())
    initialize_(model, progress=False)
    with torch.no_grad():
        model.proj.weight_quantizer.zero_point[0] = bad
    with pytest.raises(ValueError, match=r"layer 'proj'.*zero point finite"):
        convert_(model)
    assert isinstance(model.proj, QuantLinear)  # nothing was swapped


def test_save_quantized_refuses_what_load_quantized_refuses(tmp_path):
    torch.manual_seed(0)
    model = Wrap()
    prepare_(model, W4A4, keep_high_precision=())
    initialize_(model, progress=False)
    convert_(model)
    with torch.no_grad():
        model.proj.weight_scale[1] = 0.0  # edited after convert_
    with pytest.raises(ValueError, match=r"layer 'proj'.*weight scale must be finite and > 0"):
        save_quantized(model, tmp_path / "deploy")
    assert not (tmp_path / "deploy").exists() or not any((tmp_path / "deploy").iterdir())
