import pytest
import torch

from qvgen.models import FAMILIES, CogVideoXSpec, load_components
from qvgen.models.cogvideox import COG_SCALING_FACTOR
from qvgen.models.testing import tiny_spec

COG = FAMILIES["cogvideox"]


@pytest.fixture(scope="module")
def comps():
    return load_components(tiny_spec("cogvideox"))


def test_training_timesteps_are_integers_from_0_to_999():
    t = COG.sample_timesteps(5000, torch.Generator().manual_seed(0))
    assert t.dtype == torch.int64 and t.min() == 0 and t.max() == 999


def test_noised_inputs_follow_the_v_prediction_schedule():
    x0, eps = torch.randn(3, 2, 16, 4, 4), torch.randn(3, 2, 16, 4, 4)
    x = COG.noised_inputs(x0, eps, torch.tensor([0, 500, 999]))
    ab = x.alpha_bar.view(-1, 1, 1, 1, 1)
    torch.testing.assert_close(x.hidden_states, ab.sqrt() * x0 + (1 - ab).sqrt() * eps)
    torch.testing.assert_close(x.target, ab.sqrt() * eps - (1 - ab).sqrt() * x0)
    # x0 = √ᾱ·x_t − √(1−ᾱ)·v: the identity behind the official x0-space loss.
    torch.testing.assert_close(ab.sqrt() * x.hidden_states - (1 - ab).sqrt() * x.target, x0)
    assert x.alpha_bar[0] > 0.99 and x.alpha_bar[2] < 1e-3 and x.sigma is None  # zero terminal SNR
    with pytest.raises(TypeError, match="integers"):
        COG.noised_inputs(x0, eps, torch.tensor([0.5, 1.0, 2.0]))


def test_normalisation_scales_and_puts_frames_first():
    z = torch.randn(2, 16, 3, 4, 4)
    x = COG.normalize_latents(z)
    assert x.shape == (2, 3, 16, 4, 4)
    torch.testing.assert_close(x[:, 1], z[:, :, 1] * COG_SCALING_FACTOR)
    torch.testing.assert_close(COG.normalize_latents(z, {"scaling_factor": 0.7})[:, 0], z[:, :, 0] * 0.7)


def test_predict_refuses_text_of_the_wrong_length(comps):
    x = COG.noised_inputs(torch.randn(1, 3, 16, 8, 8), torch.randn(1, 3, 16, 8, 8), torch.tensor([10]))
    with pytest.raises(ValueError, match="max_text_seq_length=16"):
        COG.predict(comps.transformer, x, torch.randn(1, 226, 64))


def test_sample_kwargs_derive_size_and_text_length_from_the_transformer(comps):
    kw = COG.sample_kwargs(comps)
    assert (kw["height"], kw["width"], kw["num_frames"]) == (64, 64, 9)
    assert (kw["guidance_scale"], kw["use_dynamic_cfg"], kw["max_sequence_length"]) == (6.0, True, 16)
    with pytest.raises(ValueError, match="max_text_seq_length=16"):
        COG.sample_kwargs(comps, max_sequence_length=226)


def test_spec_text_length_must_match_the_transformer(comps):
    assert COG.max_text_length(comps) == 16
    with pytest.raises(ValueError, match="differs from the transformer's max_text_seq_length=16"):
        COG.max_text_length(comps, CogVideoXSpec(max_text_length=226))
