"""The paper's real models (meta device): every Linear has a role, counts from the architectures."""

from collections import Counter

import pytest
from torch import nn

from qvgen.models import roles_of
from qvgen.models.real_models import REAL_MODELS, build_real_on_meta, get_real_model
from qvgen.quant import LayerRole

R = LayerRole


def _wan(blocks: int) -> dict[LayerRole, int]:
    per_block = (R.attn_q, R.attn_k, R.attn_v, R.attn_out, R.cross_q, R.cross_k, R.cross_v, R.cross_out,
                 R.ffn_up, R.ffn_down)  # fmt: skip
    return {R.time_embed: 2, R.modulation: 1, R.text_proj: 2, R.proj_out: 1, **{r: blocks for r in per_block}}


def _cog(blocks: int, temporal_patches: bool = False) -> dict[LayerRole, int]:
    per_block = (R.attn_q, R.attn_k, R.attn_v, R.attn_out, R.ffn_up, R.ffn_down)
    counts = {R.text_proj: 1, R.time_embed: 2, R.modulation: 2 * blocks + 1, R.proj_out: 1}
    counts |= {r: blocks for r in per_block}
    if temporal_patches:
        counts[R.patch_embed] = 1  # the patch projection is a Linear with patch_size_t
    return counts


def _wan_i2v(blocks: int) -> dict[LayerRole, int]:
    return {**_wan(blocks), R.image_k: blocks, R.image_v: blocks, R.image_proj: 2}


# Wan: 10 Linears per block + 6 outside (I2V: +2 per block, +2 in the image embedder); CogVideoX: 8 per block
# (2 adaLN) + 5 outside (+1 in 1.5).
EXPECTED = {
    "wan2.1-t2v-1.3b": (306, _wan(30), 1.42e9),
    "wan2.1-t2v-14b": (406, _wan(40), 14.29e9),
    "wan2.1-i2v-14b-480p": (488, _wan_i2v(40), 16.39e9),
    "wan2.2-ti2v-5b": (306, _wan(30), 5.00e9),  # released: 5B
    "wan2.2-t2v-a14b": (406, _wan(40), 14.29e9),  # released: 27B in two experts, 14B each (A14B: active)
    "wan2.2-i2v-a14b": (406, _wan(40), 14.29e9),  # no CLIP image tokens: the image enters as latents
    "cogvideox-2b": (245, _cog(30), 1.69e9),
    "cogvideox-5b": (341, _cog(42), 5.57e9),
    "cogvideox1.5-5b": (342, _cog(42, temporal_patches=True), 5.57e9),
}


def test_the_table_holds_the_papers_models():
    assert set(REAL_MODELS) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_linear_of_the_real_model_has_its_expected_role(name):
    entry = get_real_model(name)
    model = build_real_on_meta(name)
    params = list(model.parameters())
    assert all(p.is_meta for p in params)
    n_linear, counts, n_params = EXPECTED[name]
    assert sum(p.numel() for p in params) == pytest.approx(n_params, rel=0.01)
    roles = roles_of(model, entry.family)
    assert len(roles) == sum(isinstance(m, nn.Linear) for m in model.modules()) == n_linear
    assert LayerRole.other not in roles.values()
    assert dict(Counter(roles.values())) == counts


def test_sampling_settings_are_data():
    wan14 = get_real_model("wan2.1-t2v-14b").sampling
    assert (wan14.height, wan14.width, wan14.num_frames, wan14.fps) == (720, 1280, 81, 16)
    assert wan14.scheduler_overrides["flow_shift"] == 5.0
    assert get_real_model("wan2.1-t2v-1.3b").sampling.scheduler_overrides["flow_shift"] == 3.0
    cog15 = get_real_model("cogvideox1.5-5b").sampling
    assert cog15.scheduler == "CogVideoXDPMScheduler" and (cog15.height, cog15.width) == (768, 1360)
    assert get_real_model("cogvideox-5b").sampling.scheduler == "CogVideoXDDIMScheduler"


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(KeyError, match="cogvideox-5b"):
        get_real_model("mochi-10b")


# The released transformer configs' values (sources: the comment above `_WAN_14B` in real_models.py), read
# back from the built model so that a changed diffusers default would show up too.
RELEASED = {
    "wan2.1-t2v-14b": {
        "num_attention_heads": 40, "attention_head_dim": 128, "ffn_dim": 13824, "num_layers": 40,
        "text_dim": 4096, "freq_dim": 256, "in_channels": 16, "out_channels": 16, "eps": 1e-6,
        "qk_norm": "rms_norm_across_heads", "cross_attn_norm": True, "patch_size": (1, 2, 2),
    },
    "wan2.2-ti2v-5b": {
        "num_attention_heads": 24, "attention_head_dim": 128, "ffn_dim": 14336, "num_layers": 30,
        "text_dim": 4096, "freq_dim": 256, "in_channels": 48, "out_channels": 48, "eps": 1e-6,
        "qk_norm": "rms_norm_across_heads", "cross_attn_norm": True, "patch_size": (1, 2, 2),
        "image_dim": None, "added_kv_proj_dim": None,
    },
    "wan2.2-t2v-a14b": {
        "num_attention_heads": 40, "attention_head_dim": 128, "ffn_dim": 13824, "num_layers": 40,
        "text_dim": 4096, "freq_dim": 256, "in_channels": 16, "out_channels": 16, "eps": 1e-6,
        "qk_norm": "rms_norm_across_heads", "cross_attn_norm": True, "patch_size": (1, 2, 2),
        "image_dim": None, "added_kv_proj_dim": None,
    },
    "wan2.2-i2v-a14b": {
        "num_attention_heads": 40, "attention_head_dim": 128, "ffn_dim": 13824, "num_layers": 40,
        "text_dim": 4096, "freq_dim": 256, "in_channels": 36, "out_channels": 16, "eps": 1e-6,
        "qk_norm": "rms_norm_across_heads", "cross_attn_norm": True, "patch_size": (1, 2, 2),
        "image_dim": None, "added_kv_proj_dim": None,
    },
    "cogvideox-5b": {
        "num_attention_heads": 48, "attention_head_dim": 64, "num_layers": 42, "in_channels": 16,
        "max_text_seq_length": 226, "text_embed_dim": 4096, "time_embed_dim": 512, "patch_size": 2,
        "patch_size_t": None, "patch_bias": True, "sample_frames": 49, "sample_height": 60, "sample_width": 90,
        "use_rotary_positional_embeddings": True, "use_learned_positional_embeddings": False,
        "ofs_embed_dim": None,
    },
    "cogvideox1.5-5b": {
        "num_attention_heads": 48, "attention_head_dim": 64, "num_layers": 42, "in_channels": 16,
        "max_text_seq_length": 226, "text_embed_dim": 4096, "time_embed_dim": 512, "patch_size": 2,
        "patch_size_t": 2, "patch_bias": False, "sample_frames": 81, "sample_height": 300, "sample_width": 300,
        "use_rotary_positional_embeddings": True, "use_learned_positional_embeddings": False,
        "ofs_embed_dim": None,
    },
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_built_config_matches_the_released_config(name):
    config = build_real_on_meta(name).config
    got = {key: config[key] for key in RELEASED[name]}
    if "patch_size" in got and isinstance(got["patch_size"], list):
        got["patch_size"] = tuple(got["patch_size"])
    assert got == RELEASED[name]


def test_only_the_image_to_video_entries_are_not_trainable():
    not_trainable = {n for n, m in REAL_MODELS.items() if not m.trainable}
    assert not_trainable == {"wan2.1-i2v-14b-480p", "wan2.2-i2v-a14b"}
    i2v = get_real_model("wan2.1-i2v-14b-480p")
    assert (i2v.sampling.height, i2v.sampling.width, i2v.sampling.num_frames) == (480, 832, 81)
    built = build_real_on_meta("wan2.1-i2v-14b-480p").config
    config = (built.in_channels, built.out_channels, built.image_dim, built.added_kv_proj_dim)
    assert config == (36, 16, 1280, 5120)


def test_wan22_sampling_settings_and_experts_are_the_released_ones():
    ti2v = get_real_model("wan2.2-ti2v-5b")
    s = ti2v.sampling
    assert (s.height, s.width, s.num_frames, s.fps, s.num_inference_steps) == (704, 1280, 121, 24, 50)
    assert s.expand_timesteps and s.boundary_ratio is None and ti2v.experts == 1
    assert s.scheduler_overrides["flow_shift"] == 5.0
    t2v, i2v = get_real_model("wan2.2-t2v-a14b"), get_real_model("wan2.2-i2v-a14b")
    assert t2v.experts == i2v.experts == 2
    assert (t2v.sampling.boundary_ratio, t2v.sampling.guidance_scale, t2v.sampling.guidance_scale_2) == (
        0.875, 4.0, 3.0,
    )  # fmt: skip
    assert (i2v.sampling.boundary_ratio, i2v.sampling.guidance_scale, i2v.sampling.guidance_scale_2) == (
        0.9, 3.5, 3.5,
    )  # fmt: skip
    assert t2v.sampling.num_inference_steps == i2v.sampling.num_inference_steps == 40
    assert t2v.sampling.scheduler_overrides["flow_shift"] == 12.0
    assert i2v.sampling.scheduler_overrides["flow_shift"] == 5.0
    assert not t2v.sampling.expand_timesteps and not i2v.sampling.expand_timesteps
