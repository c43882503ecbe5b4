import pytest
import torch

from qvgen.models import FAMILIES, WanSpec, load_components
from qvgen.models.testing import tiny_spec
from qvgen.models.wan import WAN_LATENTS_MEAN, WAN_LATENTS_STD

WAN = FAMILIES["wan"]


@pytest.fixture(scope="module")
def comps():
    return load_components(tiny_spec("wan"))


def test_training_timesteps_are_sigma_times_1000_on_the_1000_step_grid():
    t = WAN.sample_timesteps(4000, torch.Generator().manual_seed(0))
    assert t.dtype == torch.float32 and t.shape == (4000,)
    assert t.min() >= 1 and t.max() <= 1000
    torch.testing.assert_close(t, t.round(), atol=1e-3, rtol=0)
    assert t.unique().numel() > 900  # uniform over the 1000 sigmas
    again = WAN.sample_timesteps(4000, torch.Generator().manual_seed(0))
    torch.testing.assert_close(t, again, atol=0, rtol=0)


def test_train_flow_shift_moves_sigmas_towards_noise():
    gen = torch.Generator().manual_seed(0)
    plain = WAN.sample_timesteps(2000, gen) / 1000
    shifted = (
        WAN.sample_timesteps(2000, torch.Generator().manual_seed(0), WanSpec(train_flow_shift=3.0)) / 1000
    )
    torch.testing.assert_close(shifted, 3 * plain / (1 + 2 * plain))
    assert shifted.mean() > plain.mean()


def test_noised_inputs_follow_rectified_flow():
    x0, eps = torch.randn(3, 16, 2, 4, 4), torch.randn(3, 16, 2, 4, 4)
    t = torch.tensor([1000.0, 500.0, 1.0])
    x = WAN.noised_inputs(x0, eps, t)
    torch.testing.assert_close(x.hidden_states[0], eps[0])
    torch.testing.assert_close(x.hidden_states[1], 0.5 * x0[1] + 0.5 * eps[1])
    torch.testing.assert_close(x.hidden_states[2], 0.999 * x0[2] + 0.001 * eps[2])
    torch.testing.assert_close(x.target, eps - x0)
    torch.testing.assert_close(x.sigma, t / 1000)
    assert x.alpha_bar is None and x.timestep.dtype == torch.float32


def test_noised_inputs_reject_mismatched_shapes():
    x0 = torch.randn(2, 16, 2, 4, 4)
    with pytest.raises(ValueError, match="one per sample"):
        WAN.noised_inputs(x0, torch.randn_like(x0), torch.tensor([500.0]))
    with pytest.raises(ValueError, match="share one 5-D shape"):
        WAN.noised_inputs(x0, torch.randn(2, 16, 4, 4), torch.tensor([1.0, 2.0]))


def test_normalisation_uses_per_channel_mean_and_std(comps):
    z = torch.randn(2, 16, 3, 4, 4)
    mean = torch.tensor(WAN_LATENTS_MEAN).view(1, 16, 1, 1, 1)
    std = torch.tensor(WAN_LATENTS_STD).view(1, 16, 1, 1, 1)
    torch.testing.assert_close(WAN.normalize_latents(z), (z - mean) / std)
    assert list(comps.vae.config.latents_mean) == list(WAN_LATENTS_MEAN)
    with pytest.raises(ValueError, match="B, 16, F, H, W"):
        WAN.normalize_latents(torch.randn(2, 3, 16, 4, 4))


def test_predict_zeroes_text_tokens_past_their_length(comps):
    model = comps.transformer
    x = WAN.noised_inputs(torch.randn(1, 16, 3, 8, 8), torch.randn(1, 16, 3, 8, 8), torch.tensor([700.0]))
    text = torch.randn(1, 16, 64)
    lengths = torch.tensor([5])
    zeroed = text.clone()
    zeroed[:, 5:] = 0
    with torch.no_grad():
        masked = WAN.predict(model, x, text, lengths)
        manual = WAN.predict(model, x, zeroed)
        unmasked = WAN.predict(model, x, text)
    torch.testing.assert_close(masked, manual, atol=0, rtol=0)
    assert not torch.allclose(masked, unmasked)


def test_pipeline_applies_the_spec_sample_shift_without_touching_components(comps):
    pipe = WAN.pipeline(comps, WanSpec(sample_flow_shift=5.0))
    assert pipe.scheduler.config.flow_shift == 5.0
    assert comps.scheduler.config.flow_shift == 3.0
    assert WAN.pipeline(comps).scheduler is comps.scheduler


def test_sample_kwargs_default_to_the_official_settings_and_take_overrides(comps):
    kw = WAN.sample_kwargs(comps)
    assert (kw["height"], kw["width"], kw["num_frames"], kw["guidance_scale"]) == (480, 832, 81, 5.0)
    assert kw["max_sequence_length"] == 16  # the tiny tokenizer's own length (512 for the real one)
    assert WAN.sample_kwargs(comps, num_inference_steps=2)["num_inference_steps"] == 2


def test_max_text_length_is_512_capped_by_the_tokenizer_unless_the_spec_says(comps):
    assert WAN.max_text_length(comps) == 16
    assert WAN.max_text_length(comps, WanSpec(max_text_length=32)) == 32


@pytest.mark.parametrize(
    ("overrides", "match"),
    [({"image_dim": 96, "added_kv_proj_dim": 128}, "image_dim=96 marks Wan image-to-video"),
     ({"in_channels": 36}, "in_channels=36 != out_channels=16")],
)  # fmt: skip
def test_image_to_video_transformers_are_refused_on_load_naming_the_field(tmp_path, overrides, match):
    from diffusers import WanTransformer3DModel

    from qvgen.models import get_family
    from qvgen.models.wan import WAN_TINY_TRANSFORMER

    WanTransformer3DModel(**{**WAN_TINY_TRANSFORMER, **overrides}).save_pretrained(tmp_path / "transformer")
    with pytest.raises(ValueError, match=match) as info:
        get_family("wan").load_transformer(tmp_path / "transformer")
    assert str(tmp_path) in str(info.value)
