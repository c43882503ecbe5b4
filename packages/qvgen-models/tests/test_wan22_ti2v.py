"""The tiny Wan 2.2 TI2V-5B-shaped checkpoint and the family's `expand_timesteps` convention, checked against
the timestep and latents that `WanPipeline` / `WanImageToVideoPipeline` themselves pass to the transformer."""

from typing import Any

import numpy as np
import pytest
import torch
from diffusers import WanImageToVideoPipeline
from PIL import Image

from qvgen.models import FAMILIES, WanSpec, token_timesteps, wan_pipeline_config
from qvgen.models.testing import tiny_checkpoint, tiny_wan_checkpoint

WAN = FAMILIES["wan"]
PROMPT = "a red square moves left"


def _capture(transformer: torch.nn.Module) -> tuple[list[dict[str, Any]], Any]:
    """Every call's keyword arguments (the pipeline calls the transformer with keywords only)."""
    seen: list[dict[str, Any]] = []

    def hook(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        seen.append({k: v.clone() if torch.is_tensor(v) else v for k, v in kwargs.items()})

    return seen, transformer.register_forward_pre_hook(hook, with_kwargs=True)


def test_tiny_ti2v_folder_loads_as_a_wan_2_2_ti2v_checkpoint() -> None:
    base = tiny_wan_checkpoint("ti2v")
    components = WAN.load(base)
    vae = components.vae.config
    assert (vae.z_dim, vae.is_residual, vae.patch_size, vae.scale_factor_spatial) == (48, True, 2, 16)
    assert components.transformer.config.in_channels == components.transformer.config.out_channels == 48
    assert (
        components.pipeline_config == {"expand_timesteps": True} == wan_pipeline_config(base / "transformer")
    )
    assert WAN.pipeline(components).config.expand_timesteps is True
    assert WAN.checkpoint_fps(base) == 24 and WAN.checkpoint_fps(tiny_checkpoint("wan")) == 16
    assert WAN.load(tiny_checkpoint("wan")).pipeline_config == {}
    kwargs = WAN.sample_kwargs(components)
    assert (kwargs["height"], kwargs["width"], kwargs["num_frames"]) == (704, 1280, 121)


def test_tiny_ti2v_build_is_seeded() -> None:
    a = WAN.build_tiny_components(seed=0, variant="ti2v")
    b = WAN.build_tiny_components(seed=0, variant="ti2v")
    for x, y in ((a.transformer, b.transformer), (a.vae, b.vae)):
        sa, sb = x.state_dict(), y.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_text_to_video_timesteps_and_noising_match_what_wan_pipeline_passes() -> None:
    base = tiny_wan_checkpoint("ti2v")
    components = WAN.load(base)
    pipe = WAN.pipeline(components)
    seen, handle = _capture(components.transformer)
    pipe(prompt=PROMPT, height=64, width=64, num_frames=9, num_inference_steps=2, guidance_scale=1.0,
         max_sequence_length=16, generator=torch.Generator().manual_seed(0), output_type="latent")  # fmt: skip
    handle.remove()
    first = seen[0]
    latents = first["hidden_states"]  # (1, 48, 3, 4, 4): step 0's latents are pure noise
    assert latents.shape == (1, 48, 3, 4, 4)
    t = pipe.scheduler.timesteps[0].reshape(1)
    expected = token_timesteps(t, tuple(latents.shape), first_frame_clean=False)
    assert torch.equal(first["timestep"], expected)  # bit for bit, [B, S]
    # the family on the same shape: σ = t/T noising of (x0 = 0, ε = the pipeline's latents) is those latents
    spec = WanSpec(checkpoint=base, dtype="float32")
    x = WAN.noised_inputs(torch.zeros_like(latents), latents, t, spec)
    assert torch.equal(x.timestep, first["timestep"])
    torch.testing.assert_close(x.hidden_states, latents * (t / 1000), rtol=0, atol=0)
    # text-to-video tokens all share t: the hidden states equal the per-sample (B,) noising bit for bit
    x0, noise = torch.randn(2, 48, 3, 4, 4), torch.randn(2, 48, 3, 4, 4)
    tb = torch.tensor([870.0, 310.5])
    per_token, per_sample = WAN.noised_inputs(x0, noise, tb, spec), WAN.noised_inputs(x0, noise, tb)
    assert per_token.timestep.shape == (2, 12) and per_sample.timestep.shape == (2,)
    assert torch.equal(per_token.hidden_states, per_sample.hidden_states)
    assert torch.equal(per_token.target, per_sample.target)


def test_image_to_video_mode_matches_what_wan_image_to_video_pipeline_passes() -> None:
    base = tiny_wan_checkpoint("ti2v")
    components = WAN.load(base)
    pipe = WanImageToVideoPipeline(**components.as_dict())
    pipe.set_progress_bar_config(disable=True)
    seen, handle = _capture(components.transformer)
    image = Image.fromarray(np.full((64, 64, 3), 128, dtype=np.uint8))
    # WanPipeline's prompt encoding (the I2V pipeline's own prompt cleaning needs the optional ftfy)
    embeds, _ = WAN.pipeline(components).encode_prompt(PROMPT, do_classifier_free_guidance=False,
                                                       max_sequence_length=16)  # fmt: skip
    pipe(image=image, prompt_embeds=embeds, height=64, width=64, num_frames=9, num_inference_steps=2,
         guidance_scale=1.0, max_sequence_length=16, generator=torch.Generator().manual_seed(0),
         output_type="latent")  # fmt: skip
    handle.remove()
    first = seen[0]
    hidden = first["hidden_states"]
    t = pipe.scheduler.timesteps[0].reshape(1)
    expected = token_timesteps(t, tuple(hidden.shape), first_frame_clean=True)
    assert torch.equal(first["timestep"], expected)
    assert bool((first["timestep"][:, :4] == 0).all()) and bool((first["timestep"][:, 4:] == t).all())
    # the family in image-to-video mode: the same timesteps, and the first latent frame kept clean
    spec = WanSpec(checkpoint=base, dtype="float32", image_to_video=True)
    x0, noise = torch.randn(hidden.shape), torch.randn(hidden.shape)
    x = WAN.noised_inputs(x0, noise, t, spec)
    assert torch.equal(x.timestep, first["timestep"])
    assert torch.equal(x.hidden_states[:, :, 0], x0[:, :, 0])
    s = t / 1000
    torch.testing.assert_close(x.hidden_states[:, :, 1:], (1 - s) * x0[:, :, 1:] + s * noise[:, :, 1:])


def test_image_to_video_needs_a_ti2v_folder() -> None:
    spec = WanSpec(checkpoint=tiny_checkpoint("wan"), dtype="float32", image_to_video=True)
    x0 = torch.randn(1, 16, 3, 4, 4)
    with pytest.raises(ValueError, match="image_to_video to false"):
        WAN.noised_inputs(x0, x0, torch.tensor([500.0]), spec)


def test_per_token_timesteps_of_the_wrong_shape_are_refused() -> None:
    x0 = torch.randn(1, 48, 3, 4, 4)
    with pytest.raises(ValueError, match=r"\(1, 12\)"):
        WAN.noised_inputs(x0, x0, torch.zeros(1, 10))
