import pytest
import torch

from qvgen.data import VideoEncoder
from qvgen.models import FAMILIES, load_components
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
