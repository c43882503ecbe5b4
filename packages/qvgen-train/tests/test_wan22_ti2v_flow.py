"""The QVGen flow on the tiny Wan 2.2 TI2V-5B-shaped checkpoint: shards from its own 48-channel VAE and text
encoder, QVGen training (Φ to rank 0) with per-token timesteps, deploy export, `load_pipeline`, one video."""

from pathlib import Path

import numpy as np
import pytest
import torch

from qvgen.data import EncodedSample, WriterConfig, write_shards
from qvgen.models import get_family, load_pipeline
from qvgen.models.testing import tiny_wan_checkpoint
from qvgen.train.config import RunConfig
from qvgen.train.recipe import run

PROMPTS = ("a red square moves left", "a blue circle grows", "two dots swap places", "a green bar falls")


@pytest.fixture(scope="module")
def ti2v_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four 9×64×64 clips through the checkpoint's own encoder (latents (48, 3, 4, 4)), two shards."""
    wan = get_family("wan")
    encoder = wan.encoder(wan.load(tiny_wan_checkpoint("ti2v")))
    g = torch.Generator().manual_seed(0)
    videos = torch.rand(len(PROMPTS), 3, 9, 64, 64, generator=g) * 2 - 1
    moments, text = encoder.encode_videos(videos), encoder.encode_prompts(PROMPTS)
    samples = [
        EncodedSample(
            id=f"s{i}", caption=prompt, latents_mean=moments.mean[i], latents_logvar=moments.logvar[i],
            text_embeddings=text.embeddings[i], text_length=int(text.lengths[i]), video_shape=(9, 64, 64),
        )
        for i, prompt in enumerate(PROMPTS)
    ]  # fmt: skip
    assert samples[0].latents_mean.shape == (48, 3, 4, 4)
    out = tmp_path_factory.mktemp("ti2v-shards")
    cfg = WriterConfig(samples_per_shard=2, family="wan", latent_dtype="float32", text_dtype="float32")
    write_shards(samples, out, cfg, encoder_name=encoder.name)
    return out


def _cfg(run_dict, shards: Path, out: Path, image_to_video: bool, **sections) -> RunConfig:
    data = run_dict("wan", shards, out, **sections)
    data["model"] = {
        **data["model"],
        "checkpoint": str(tiny_wan_checkpoint("ti2v")),
        "image_to_video": image_to_video,
    }
    return RunConfig.model_validate(data)


def test_ti2v_qvgen_run_exports_a_deploy_model_that_samples_through_load_pipeline(
    run_dict, ti2v_shards, tmp_path
):
    sections = {"aux": {"decay": {"initial_rank": 2, "period": 1}}, "train": {"max_steps": 3}}
    result = run(_cfg(run_dict, ti2v_shards, tmp_path / "out", image_to_video=False, **sections))
    assert result.phi_rank == 0 and len(result.losses) == 3
    assert all(0 < loss < float("inf") for loss in result.losses)
    assert result.deploy_dir is not None

    base = tiny_wan_checkpoint("ti2v")
    pipe = load_pipeline(base, result.deploy_dir, progress=False)
    assert pipe.config.expand_timesteps is True and pipe.vae.config.z_dim == 48
    seen: list[torch.Tensor] = []
    handle = pipe.transformer.register_forward_pre_hook(
        lambda m, a, kw: seen.append(kw["timestep"]), with_kwargs=True
    )
    frames = pipe(prompt=PROMPTS[0], height=64, width=64, num_frames=9, num_inference_steps=2,
                  guidance_scale=1.0, max_sequence_length=16, generator=torch.Generator().manual_seed(0),
                  output_type="np").frames  # fmt: skip
    handle.remove()
    assert frames.shape == (1, 9, 64, 64, 3) and bool(np.isfinite(frames).all())
    assert seen and all(t.shape == (1, 12) for t in seen)  # per-token timesteps reached the deploy model


def test_ti2v_image_to_video_mode_trains(run_dict, ti2v_shards, tmp_path):
    sections = {
        "aux": {"decay": {"initial_rank": 1, "period": 1}},
        "train": {"max_steps": 2},
        "export": {"fake_quant": False, "deploy": False},
    }
    result = run(_cfg(run_dict, ti2v_shards, tmp_path / "out", image_to_video=True, **sections))
    assert len(result.losses) == 2 and all(0 < loss < float("inf") for loss in result.losses)
