"""A tiny Wan 2.2 TI2V-style transformer (48 latent channels, `[B, S]` timesteps as `WanPipeline` builds them
with `expand_timesteps`) through quant's timestep context: each latent token takes its own clip group."""

import pytest
import torch
from diffusers import WanTransformer3DModel

from qvgen.models import FAMILIES
from qvgen.models.wan import WAN_TINY_TRANSFORMER
from qvgen.quant import LayerRole, QuantConfig, QuantLinear, initialize_, prepare_, timestep_context

WAN = FAMILIES["wan"]
B, C, F, H, W = 2, 48, 3, 8, 8  # TI2V-5B's 48-channel latents; patch (1, 2, 2) -> S = 3 * 4 * 4 tokens
S = F * (H // 2) * (W // 2)
T = torch.tensor([870.25, 310.5])


def _token_timesteps(image_to_video: bool) -> torch.Tensor:
    """`WanPipeline`'s `expand_timesteps` timestep: the latent mask's (frame, h, w) patch grid times t,
    flattened (the first frame's tokens at 0 in image-to-video mode)."""
    mask = torch.ones(F, H, W)
    if image_to_video:
        mask[0] = 0
    return torch.stack([(mask[:, ::2, ::2] * t).flatten() for t in T])


@pytest.fixture
def wan22() -> torch.nn.Module:
    torch.manual_seed(0)
    model = WanTransformer3DModel(**{**WAN_TINY_TRANSFORMER, "in_channels": C, "out_channels": C})
    prepare_(
        model, QuantConfig.w4a4(), layer_roles=WAN.layer_roles, num_train_timesteps=WAN.num_train_timesteps
    )
    initialize_(model, progress=False)
    with torch.no_grad():  # a different clip pair per group, so the group each token takes shows
        for m in model.modules():
            if isinstance(m, QuantLinear):
                m.act_quantizer.clip_logit_lo.copy_(torch.linspace(-1.0, 4.0, m.act_quantizer.groups))
                m.act_quantizer.clip_logit_hi.copy_(torch.linspace(4.0, -1.0, m.act_quantizer.groups))
    return model


def _inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        "hidden_states": torch.randn(B, C, F, H, W, generator=g),
        "encoder_hidden_states": torch.randn(B, 16, 64, generator=g),
    }


def test_token_timesteps_follow_the_patchified_token_order(wan22: torch.nn.Module) -> None:
    """The tokens a `[B, S]` timestep marks as the first frame are the ones the Linears see as frame 0."""
    seen: list[torch.Tensor] = []
    handle = wan22.blocks[0].attn1.to_q.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    x = _inputs()
    tt = _token_timesteps(image_to_video=True)
    changed = x["hidden_states"].clone()
    changed[:, :, 0] += 1.0  # touch only the first latent frame
    with torch.no_grad():
        wan22(**x, timestep=tt)
        wan22(**{**x, "hidden_states": changed}, timestep=tt)
    handle.remove()
    assert seen[0].shape[:2] == tt.shape == (B, S)
    moved = (seen[0] != seen[1]).any(dim=-1)
    assert torch.equal(moved, tt == 0)


def test_uniform_token_timesteps_match_per_sample_timesteps(wan22: torch.nn.Module) -> None:
    x = _inputs()
    with torch.no_grad():
        per_sample = wan22(**x, timestep=T, return_dict=False)[0]
        per_token = wan22(**x, timestep=_token_timesteps(image_to_video=False), return_dict=False)[0]
    # the same groups everywhere; only the time embedder's GEMM runs on [B, S] rows instead of [B]
    torch.testing.assert_close(per_token, per_sample, rtol=1e-5, atol=1e-5)


def test_image_to_video_token_timesteps_take_per_token_groups(wan22: torch.nn.Module) -> None:
    x = _inputs()
    tt = _token_timesteps(image_to_video=True)
    out = wan22(**x, timestep=tt, return_dict=False)[0]
    assert out.shape == x["hidden_states"].shape and bool(torch.isfinite(out).all())
    ctx = timestep_context(wan22)
    assert ctx is not None and ctx.group_index(50, "bin").tolist() == [43, 15]
    token_groups = ctx.token_group_index(50, "bin")
    assert token_groups is not None and token_groups.shape == (B, S)
    assert set(token_groups[:, : S // F].flatten().tolist()) == {0}  # the clean first frame
    out.pow(2).mean().backward()
    text_roles = {LayerRole.cross_k, LayerRole.cross_v, LayerRole.text_proj}
    for name, m in wan22.named_modules():
        if not isinstance(m, QuantLinear):
            continue
        touched = set(torch.nonzero(m.act_quantizer.clip_logit_hi.grad).flatten().tolist())
        expected = {43, 15} if m.role in text_roles else {0, 43, 15}
        assert touched == expected, name
