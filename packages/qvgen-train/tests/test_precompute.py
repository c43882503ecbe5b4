import torch
import yaml
from safetensors.torch import load_file

from qvgen.data import LoaderConfig, make_loader, read_manifest, write_procedural_dataset
from qvgen.models.testing import tiny_checkpoint
from qvgen.train.cli import main
from qvgen.train.config import RunConfig
from qvgen.train.recipe import run


def test_precompute_encodes_clips_with_the_family_encoder_and_feeds_a_run(run_dict, tmp_path):
    captions = write_procedural_dataset(tmp_path / "videos", 4, seed=0, frames=9, height=64, width=64)
    cfg = {
        "model": {"family": "wan", "checkpoint": str(tiny_checkpoint("wan")), "dtype": "float32"},
        "ingest": {"captions": str(captions)},
        "writer": {"buckets": [{"frames": 9, "height": 64, "width": 64}], "samples_per_shard": 2,
                   "latent_dtype": "float32", "text_dtype": "float32"},
        "out_dir": str(tmp_path / "shards"),
    }  # fmt: skip
    (tmp_path / "pre.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["precompute", str(tmp_path / "pre.yaml")]) == 0
    manifest = read_manifest(tmp_path / "shards")
    assert manifest.num_samples == 4 and manifest.family == "wan" and manifest.has_logvar
    assert manifest.buckets[0].latent_shape == (16, 3, 8, 8)
    empty = load_file(str(tmp_path / "shards" / "empty_prompt.safetensors"))
    assert tuple(empty["embeddings"].shape[1:]) == manifest.text_shape
    batch = next(iter(make_loader(LoaderConfig(shards=tmp_path / "shards", batch_size=2, num_workers=0))))
    assert torch.isfinite(batch.latents_mean).all() and batch.text_lengths.min() > 1

    result = run(RunConfig.model_validate(run_dict(
        "wan", tmp_path / "shards", tmp_path / "out", train={"caption_dropout": 0.5},
        export={"fake_quant": False, "deploy": False},
    )))  # fmt: skip
    assert result.phi_rank == 0 and len(result.losses) == 7
