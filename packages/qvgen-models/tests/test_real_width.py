"""Real-width builds: released transformer / VAE / text-encoder widths, only depth reduced, deterministic."""

import hashlib

import pytest
import torch

from qvgen.models import REAL_MODELS, REAL_WIDTH_MODELS, build_real_width

torch.set_num_threads(1)

# The released VAE configs (Wan-AI/Wan2.1-T2V-1.3B-Diffusers vae/config.json, THUDM/CogVideoX-2b
# vae/config.json), pinned here so a diffusers default that moves is caught.
RELEASED_VAE = {
    "wan2.1-t2v-1.3b": {
        "base_dim": 96, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_scales": [],
        "temperal_downsample": [False, True, True],
    },
    "cogvideox-2b": {
        "block_out_channels": [128, 256, 256, 512], "latent_channels": 16, "layers_per_block": 3,
        "norm_num_groups": 32, "temporal_compression_ratio": 4, "scaling_factor": 1.15258426,
        "use_quant_conv": False, "use_post_quant_conv": False,
    },
}  # fmt: skip
TEXT = {"d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_heads": 64, "feed_forward_proj": "gated-gelu"}


def _plain(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("name", REAL_WIDTH_MODELS)
def test_released_widths_only_depth_reduced(name: str) -> None:
    c = build_real_width(name, num_layers=3, text_layers=2, device="meta")
    released = REAL_MODELS[name].transformer
    got = dict(c.transformer.config)
    for key, value in released.items():
        want = 3 if key == "num_layers" else value
        assert _plain(got[key]) == _plain(want), key
    assert len(getattr(c.transformer, "blocks", getattr(c.transformer, "transformer_blocks", []))) == 3
    for key, value in RELEASED_VAE[name].items():
        assert _plain(c.vae.config[key]) == value, key
    text = c.text_encoder.config
    assert {k: getattr(text, k) for k in TEXT} == TEXT and text.num_layers == 2
    expected_cls = "UMT5EncoderModel" if name.startswith("wan") else "T5EncoderModel"
    assert type(c.text_encoder).__name__ == expected_cls
    assert c.tokenizer.model_max_length == (
        512 if name.startswith("wan") else released["max_text_seq_length"]
    )


def _digest(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(tensor.detach().contiguous().view(torch.uint8).numpy().tobytes()[:4096])
    return h.hexdigest()


def test_deterministic_from_seed() -> None:
    a = build_real_width("wan2.1-t2v-1.3b", num_layers=1)
    b = build_real_width("wan2.1-t2v-1.3b", num_layers=1)
    for part in ("transformer", "vae", "text_encoder"):
        assert _digest(getattr(a, part)) == _digest(getattr(b, part)), part
    assert a.transformer.config.num_layers == 1
    assert a.text_encoder.get_input_embeddings().weight.shape[1] == 4096


def test_unknown_model_named() -> None:
    with pytest.raises(ValueError, match=r"wan2\.1-t2v-1\.3b"):
        build_real_width("cogvideox-5b", device="meta")


def test_weights_digest_of_a_real_width_tensor() -> None:
    """A UMT5-XXL block's FFN weight has 41943040 elements: float32 linspace put the last sample past the end."""
    from qvgen.models import weights_digest

    module = torch.nn.Module()
    module.register_buffer("w", torch.zeros(41_943_040, dtype=torch.int8))
    assert len(weights_digest(module)) == 12
