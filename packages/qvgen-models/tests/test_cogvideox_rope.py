"""CogVideoX with 3D RoPE (5B) and temporal patches (1.5): predict, training and sampling on tiny models."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from qvgen.models import CogVideoXFamily, get_real_model
from qvgen.models.cogvideox import COG_TINY_VARIANTS, frame_padding, rotary_embeddings
from qvgen.models.testing import tiny_cogvideox_checkpoint

COG = CogVideoXFamily()


@pytest.fixture(scope="module", params=["5b", "1.5"])
def tiny(request):
    comps = COG.build_tiny_components(seed=0, variant=request.param)
    return request.param, comps, COG.pipeline(comps)


def _inputs(frames: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(2, frames, 16, 8, 8, generator=g)
    x = COG.noised_inputs(x0, torch.randn(x0.shape, generator=g), torch.tensor([20, 700]))
    return x, torch.randn(2, 16, 64, generator=g)


def _direct(transformer, hidden, x, text, rotary):
    return transformer(
        hidden_states=hidden, timestep=x.timestep, encoder_hidden_states=text, image_rotary_emb=rotary,
        return_dict=False,
    )[0]  # fmt: skip


@torch.no_grad()
def test_predict_equals_the_transformer_called_with_the_pipelines_rotary_embeddings(tiny):
    _, comps, pipe = tiny
    x, text = _inputs(frames=4)
    rotary = pipe._prepare_rotary_positional_embeddings(64, 64, 4, torch.device("cpu"))
    want = _direct(comps.transformer, x.hidden_states, x, text, rotary)
    got = COG.predict(comps.transformer, x, text)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    # The embeddings matter: without them (or for another grid) the output differs.
    assert not torch.allclose(got, _direct(comps.transformer, x.hidden_states, x, text, None))
    cos, sin = rotary_embeddings(comps.transformer.config, 4, 8, 8)
    assert torch.equal(cos, rotary[0]) and torch.equal(sin, rotary[1])


@torch.no_grad()
def test_rotary_embeddings_match_the_pipeline_at_other_sizes(tiny):
    _, comps, pipe = tiny
    for frames, h, w in ((2, 4, 8), (6, 8, 4), (4, 2, 2)):
        want = pipe._prepare_rotary_positional_embeddings(h * 8, w * 8, frames, torch.device("cpu"))
        got = rotary_embeddings(comps.transformer.config, frames, h, w)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), (frames, h, w)


@torch.no_grad()
def test_temporal_patches_pad_odd_frame_counts_in_front_as_the_pipeline_does():
    comps = COG.build_tiny_components(seed=0, variant="1.5")
    config = comps.transformer.config
    assert [frame_padding(config, f) for f in (1, 2, 3, 4, 21)] == [1, 0, 1, 0, 1]
    x, text = _inputs(frames=3)
    padded = torch.cat([x.hidden_states[:, :1], x.hidden_states], dim=1)
    rotary = COG.pipeline(comps)._prepare_rotary_positional_embeddings(64, 64, 4, torch.device("cpu"))
    want = _direct(comps.transformer, padded, x, text, rotary)[:, 1:]
    got = COG.predict(comps.transformer, x, text)
    assert got.shape == x.target.shape
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_a_gradient_step_reaches_every_parameter(tiny):
    variant, _, _ = tiny
    model = COG.build_tiny_components(seed=3, variant=variant).transformer.train()
    x, text = _inputs(frames=3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    loss = F.mse_loss(COG.predict(model, x, text), x.target)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert torch.isfinite(loss) and missing == []
    opt.step()
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())


def test_the_tiny_1_5_model_loads_and_samples_through_the_family_pipeline():
    comps = COG.load(tiny_cogvideox_checkpoint("1.5"))
    assert comps.transformer.config.patch_size_t == 2
    seen = []
    comps.transformer.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append((kwargs["hidden_states"].shape[1], kwargs["image_rotary_emb"])),
        with_kwargs=True,
    )
    kwargs = COG.sample_kwargs(
        comps, prompt="a cat playing piano", height=32, width=48, num_frames=9, num_inference_steps=2,
        generator=torch.Generator().manual_seed(0), output_type="np",
    )  # fmt: skip
    frames = COG.pipeline(comps)(**kwargs).frames
    assert frames.shape == (1, 9, 32, 48, 3) and bool(np.isfinite(frames).all())
    assert len(seen) == 2  # the pipeline padded 3 latent frames to 4 and built RoPE for 2 × 2 × 3 tokens
    assert all(f == 4 and rope is not None and rope[0].shape == (2 * 2 * 3, 64) for f, rope in seen)


def test_sample_kwargs_refuse_sizes_the_token_grid_cannot_take():
    comps = COG.build_tiny_components(seed=0, variant="1.5")
    assert COG.sample_kwargs(comps)["height"] == 64
    with pytest.raises(ValueError, match="exceeds the RoPE table: at most sample_height=8"):
        COG.sample_kwargs(comps, height=80)
    with pytest.raises(ValueError, match="width=40 must be a multiple of 16"):
        COG.sample_kwargs(comps, width=40)
    _, text = _inputs(frames=2)
    big = COG.noised_inputs(torch.randn(1, 2, 16, 10, 8), torch.randn(1, 2, 16, 10, 8), torch.tensor([5]))
    with pytest.raises(ValueError, match=r"5×4 tokens exceeds .* RoPE table of 4×4 \(sample_height=8"):
        COG.predict(comps.transformer, big, text[:1])
    odd = COG.noised_inputs(torch.randn(1, 2, 16, 7, 8), torch.randn(1, 2, 16, 7, 8), torch.tensor([5]))
    with pytest.raises(ValueError, match="patch_size=2"):
        COG.predict(comps.transformer, odd, text[:1])


@pytest.mark.parametrize("name", ["cogvideox-5b", "cogvideox1.5-5b"])
def test_rotary_tables_cover_the_real_models_at_their_paper_sampling_size(name):
    from types import SimpleNamespace

    entry = get_real_model(name)
    config = SimpleNamespace(**{"patch_size_t": None, **entry.transformer})
    s = entry.sampling
    frames = (s.num_frames - 1) // 4 + 1
    frames += frame_padding(config, frames)
    cos, sin = rotary_embeddings(config, frames, s.height // 8, s.width // 8)
    tokens_t = frames // (config.patch_size_t or 1)
    assert cos.shape == sin.shape == (tokens_t * (s.height // 16) * (s.width // 16), 64)
    assert entry.trainable


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [("ofs_embed_dim", 512, "ofs_embed_dim=512 marks CogVideoX1.5 image-to-video"),
     ("in_channels", 32, "in_channels=32 != out_channels=16")],
)  # fmt: skip
def test_image_to_video_checkpoints_are_refused_on_load_naming_the_field(tmp_path, field, value, match):
    from diffusers import CogVideoXTransformer3DModel

    CogVideoXTransformer3DModel(**{**COG_TINY_VARIANTS["1.5"], field: value}).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=match):
        COG.load_transformer(tmp_path)
