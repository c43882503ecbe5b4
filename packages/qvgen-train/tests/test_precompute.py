import csv

import torch
import yaml
from safetensors.torch import load_file

from qvgen.data import LoaderConfig, make_loader, read_manifest, write_procedural_dataset
from qvgen.models import WanSpec, get_family, load_components
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


def _pre_config(tmp_path, captions, out, **model):
    cfg = {
        "model": {"family": "wan", "checkpoint": str(tiny_checkpoint("wan")), "dtype": "float32", **model},
        "ingest": {"captions": str(captions)},
        "writer": {"buckets": [{"frames": 9, "height": 64, "width": 64}], "samples_per_shard": 2,
                   "latent_dtype": "float32", "text_dtype": "float32"},
        "out_dir": str(out),
    }  # fmt: skip
    path = tmp_path / f"pre-{len(list(tmp_path.glob('pre-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _stamps(out):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(out.glob("shard-*.tar"))}


def _sample_0(out):
    loader = make_loader(LoaderConfig(shards=out, mode="eval", batch_size=1, num_workers=0))
    batch = next(iter(loader))
    assert batch.ids == ("videos/000000.mp4",)
    return batch.captions[0], batch.text_embeddings[0]


def test_precompute_rerun_after_a_caption_change_is_refused_then_overwrite_rebuilds_only_shard_0(
    tmp_path, capsys
):
    """Issue 32, failure 2: the rerun used to exit 0 keeping shard 0 with the old caption and embedding."""
    captions = write_procedural_dataset(tmp_path / "videos", 4, seed=0, frames=9, height=64, width=64)
    out = tmp_path / "shards"
    assert main(["precompute", _pre_config(tmp_path, captions, out)]) == 0
    before = _stamps(out)
    old_caption, old_embedding = _sample_0(out)
    rows = list(csv.DictReader(captions.read_text().splitlines()))
    rows[0]["caption"] = "a green square moves up"
    with captions.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    capsys.readouterr()

    assert main(["precompute", _pre_config(tmp_path, captions, out)]) == 1
    err = capsys.readouterr().err
    assert f"shard-000000.tar: row 0 caption: {old_caption} → a green square moves up" in err
    assert "shard-000001" not in err and "--overwrite" in err
    assert _stamps(out) == before and _sample_0(out)[0] == old_caption

    assert main(["precompute", _pre_config(tmp_path, captions, out), "--overwrite"]) == 0
    after = _stamps(out)
    assert after["shard-000001.tar"] == before["shard-000001.tar"]
    assert after["shard-000000.tar"][0] != before["shard-000000.tar"][0]
    caption, embedding = _sample_0(out)
    spec = WanSpec(checkpoint=tiny_checkpoint("wan"), dtype="float32")
    with torch.no_grad():
        new = get_family("wan").encoder(load_components(spec), spec).encode_prompts([caption]).embeddings[0]
    assert caption == "a green square moves up" and not torch.allclose(embedding, old_embedding)
    torch.testing.assert_close(embedding, new, atol=1e-5, rtol=1e-5)
    assert read_manifest(out).num_samples == 4
    assert main(["precompute", _pre_config(tmp_path, captions, out)]) == 0  # current now: all kept


def test_precompute_rerun_with_another_encoder_setting_is_refused_naming_it(tmp_path, capsys):
    captions = write_procedural_dataset(tmp_path / "videos", 2, seed=0, frames=9, height=64, width=64)
    out = tmp_path / "shards"
    assert main(["precompute", _pre_config(tmp_path, captions, out)]) == 0
    before = _stamps(out)
    capsys.readouterr()
    assert main(["precompute", _pre_config(tmp_path, captions, out, max_text_length=8)]) == 1
    err = capsys.readouterr().err
    assert (
        "shard-000000.tar: encoder: wan:vae+umt5@" in err and "encoder.model.max_text_length: null → 8" in err
    )
    assert _stamps(out) == before


def test_precompute_refuses_a_foreign_folder_and_a_folder_inside_the_videos(tmp_path, capsys):
    captions = write_procedural_dataset(tmp_path / "videos", 2, seed=0, frames=9, height=64, width=64)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert main(["precompute", _pre_config(tmp_path, captions, foreign)]) == 1
    assert "not empty and was not written by qvgen-train precompute" in capsys.readouterr().err
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]

    inside = tmp_path / "videos" / "shards"
    assert main(["precompute", _pre_config(tmp_path, captions, inside)]) == 1
    assert f"shard folder {inside} lies inside the input {tmp_path / 'videos'}" in capsys.readouterr().err
    assert not inside.exists()
