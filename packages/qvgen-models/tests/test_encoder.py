import copy

import pytest
import torch

from qvgen.data import VideoEncoder
from qvgen.models import FAMILIES, encoder_identity, load_components, weights_digest
from qvgen.models.testing import tiny_spec

PROMPTS = ["a cat playing piano", "a blue circle moves up over a green field, cinematic"]


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def setup(request):
    name = request.param
    spec = tiny_spec(name)
    comps = load_components(spec)
    return name, comps, FAMILIES[name].encoder(comps, spec)


def test_encoder_implements_the_data_protocol(setup):
    name, _, enc = setup
    assert isinstance(enc, VideoEncoder)
    assert enc.name.startswith(f"{name}:") and enc.name.endswith(":L16")


def test_videos_become_raw_posterior_moments(setup):
    _, comps, enc = setup
    videos = torch.rand(2, 3, 9, 64, 64) * 2 - 1
    m = enc.encode_videos(videos)
    assert m.mean.shape == m.logvar.shape == (2, 16, 3, 8, 8)
    assert m.mean.dtype == torch.float32
    with torch.no_grad():
        direct = comps.vae.encode(videos).latent_dist.mean
    torch.testing.assert_close(m.mean, direct, atol=0, rtol=0)
    with pytest.raises(ValueError, match=r"\(B, 3, F, H, W\)"):
        enc.encode_videos(torch.rand(2, 9, 3, 64, 64))


def test_prompts_become_the_pipeline_conditioning_and_true_lengths(setup):
    name, comps, enc = setup
    text = enc.encode_prompts(PROMPTS)
    assert text.embeddings.shape == (2, 16, 64)
    expected_lengths = [len(comps.tokenizer(p).input_ids) for p in PROMPTS]
    assert text.lengths.tolist() == [min(n, 16) for n in expected_lengths]
    with torch.no_grad():
        reference, _ = enc.pipeline.encode_prompt(
            PROMPTS, do_classifier_free_guidance=False, max_sequence_length=16
        )
    torch.testing.assert_close(text.embeddings, reference, atol=0, rtol=0)
    if name == "wan":  # Wan zero-pads past the prompt; CogVideoX keeps the pad tokens' T5 outputs.
        assert text.embeddings[0, text.lengths[0] :].abs().sum() == 0
    with pytest.raises(ValueError, match="no prompts"):
        enc.encode_prompts([])


def test_encoder_name_tells_apart_checkpoints_that_share_configs_but_not_weights(setup):
    name, comps, enc = setup
    again = FAMILIES[name].encoder(comps, tiny_spec(name))
    assert again.name == enc.name  # deterministic: a resumed shard write sees the same identity
    config_part, weights_part = enc.name.split("@")[1].split(":")[0].split(".")
    assert len(config_part) == len(weights_part) == 12
    other_text = copy.deepcopy(comps.text_encoder)
    with torch.no_grad():
        next(other_text.parameters()).add_(1e-3)  # same config, one tensor retrained a little
    assert encoder_identity(comps.vae, other_text) != encoder_identity(comps.vae, comps.text_encoder)
    assert encoder_identity(comps.vae, other_text).split(".")[0] == config_part
    assert weights_digest(comps.vae) != weights_digest(comps.text_encoder)


def test_config_digest_ignores_the_installed_library_version(setup):
    from qvgen.models.encoder import config_digest

    _, comps, _ = setup
    config = comps.text_encoder.config
    bumped = copy.deepcopy(config)
    bumped.transformers_version = "99.0.0"
    assert config_digest(bumped) == config_digest(config)
    changed = copy.deepcopy(config)
    changed.d_model = config.d_model * 2  # a real config change still changes it
    assert config_digest(changed) != config_digest(config)
