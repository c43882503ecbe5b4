"""Issue 32, failure 3: `qvgen-eval sample` kept another model's videos ("wrote 0, skipped 1", exit 0) after
model.path, the seed or model.kind changed. Every video now has a sidecar; a rerun reuses a video only when its
sidecar matches, else it is refused naming what changed (or `--overwrite` resamples just those videos)."""

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from qvgen import quant
from qvgen.core import MARKER_NAME, read_provenance
from qvgen.eval import DeployModel, FullPrecisionModel, model_facts, sidecar_path
from qvgen.eval.cli import main
from qvgen.models import get_family
from qvgen.models.testing import tiny_checkpoint

SMALL = {"height": 32, "width": 32, "num_frames": 5, "num_inference_steps": 2, "guidance_scale": 4.0}


@pytest.fixture(scope="module")
def deploy_dirs(tmp_path_factory):
    """Two deploy exports of the tiny Wan whose clip ranges differ (two different W4A4 models)."""
    fam, ckpt = get_family("wan"), tiny_checkpoint("wan")
    student = fam.load_transformer(ckpt)
    layers = quant.prepare_(student, quant.QuantConfig(), layer_roles=fam.layer_roles)
    quant.initialize_(student, progress=False)
    root = tmp_path_factory.mktemp("deploy")
    out = []
    for name, shift in (("a", 0.0), ("b", 0.5)):
        model = copy.deepcopy(student)
        with torch.no_grad():
            for layer_name in layers:
                model.get_submodule(layer_name).act_quantizer.clip_logit_hi.add_(shift)
        quant.convert_(model)
        quant.save_quantized(model, root / name, identity=str(ckpt))
        out.append(root / name)
    return out


def _config(tmp_path: Path, out: Path, model: dict, prompts=("a dog",), seed: int = 5) -> Path:
    path = tmp_path / "sample.yaml"
    cfg = {"family": "wan", "model": model, "prompts": {"prompts": list(prompts)}, "out_dir": str(out),
           "seed": seed, "sampling": SMALL, "device": "cpu"}  # fmt: skip
    path.write_text(yaml.safe_dump(cfg))
    return path


def _fp() -> dict:
    return {"kind": "full_precision", "path": str(tiny_checkpoint("wan"))}


def _deploy(path: Path) -> dict:
    return {"kind": "deploy", "path": str(path), "base": str(tiny_checkpoint("wan"))}


def _run(capsys, cfg: Path, *extra: str) -> tuple[int, str, str]:
    rc = main(["sample", str(cfg), *extra])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_rerun_with_another_deploy_folder_is_refused_naming_the_model_then_overwrite_resamples(
    tmp_path, deploy_dirs, capsys
):
    a, b = deploy_dirs
    out = tmp_path / "videos"
    assert _run(capsys, _config(tmp_path, out, _deploy(a)))[:2] == (0, "rank 0/1: wrote 1, skipped 0\n")
    video = out / "a dog-0.mp4"
    before = video.read_bytes()
    assert (
        read_provenance(sidecar_path(video)).facts["model.digest"]
        == model_facts("wan", DeployModel(path=a, base=tiny_checkpoint("wan")), "float32")["model.digest"]
    )

    rc, _, err = _run(capsys, _config(tmp_path, out, _deploy(b)))  # was: exit 0, "wrote 0, skipped 1"
    assert rc == 1
    assert "a dog-0.mp4: model.digest: sha256:" in err and "--overwrite" in err and "Traceback" not in err
    assert video.read_bytes() == before

    rc, stdout, _ = _run(capsys, _config(tmp_path, out, _deploy(b)), "--overwrite")
    assert (rc, stdout) == (0, "rank 0/1: wrote 1, skipped 0\n")
    b_digest = model_facts("wan", DeployModel(path=b, base=tiny_checkpoint("wan")), "float32")["model.digest"]
    assert read_provenance(sidecar_path(video)).facts["model.digest"] == b_digest
    assert _run(capsys, _config(tmp_path, out, _deploy(b)))[:2] == (0, "rank 0/1: wrote 0, skipped 1\n")


def test_rerun_with_another_seed_is_refused_naming_the_seed(tmp_path, capsys):
    out = tmp_path / "videos"
    assert _run(capsys, _config(tmp_path, out, _fp(), seed=5))[0] == 0
    before = (out / "a dog-0.mp4").read_bytes()
    rc, _, err = _run(capsys, _config(tmp_path, out, _fp(), seed=6))
    assert rc == 1 and "a dog-0.mp4: seed: 5 → 6" in err
    assert (out / "a dog-0.mp4").read_bytes() == before
    rc, _, err = _run(
        capsys, _config(tmp_path, out, _fp(), seed=6), "--set", "sampling.num_inference_steps=3"
    )
    assert rc == 1 and "a dog-0.mp4: sampling.num_inference_steps: 2 → 3, seed: 5 → 6" in err


def test_rerun_with_another_model_kind_is_refused_naming_the_kind(tmp_path, deploy_dirs, capsys):
    out = tmp_path / "videos"
    assert _run(capsys, _config(tmp_path, out, _fp()))[0] == 0
    rc, _, err = _run(capsys, _config(tmp_path, out, _deploy(deploy_dirs[0])))
    assert rc == 1 and "model.kind: full_precision → deploy" in err and "model.base: <absent> → tree:" in err


def test_unchanged_rerun_skips_and_overwrite_resamples_only_the_videos_whose_sidecar_differs(
    tmp_path, capsys
):
    out = tmp_path / "videos"
    cfg = _config(tmp_path, out, _fp(), prompts=("a dog", "a cat", "a bird"))
    assert _run(capsys, cfg)[:2] == (0, "rank 0/1: wrote 3, skipped 0\n")
    assert _run(capsys, cfg)[:2] == (0, "rank 0/1: wrote 0, skipped 3\n")
    assert sorted(p.name for p in out.iterdir()) == [
        MARKER_NAME, "a bird-0.mp4", "a bird-0.mp4.json", "a cat-0.mp4", "a cat-0.mp4.json", "a dog-0.mp4",
        "a dog-0.mp4.json",
    ]  # fmt: skip
    sidecar = json.loads(sidecar_path(out / "a dog-0.mp4").read_text())
    assert sidecar["tool"] == "qvgen-eval sample"
    assert {"model.kind", "model.digest", "model.dtype", "family", "prompt", "index", "seed", "fps",
            "sampling.num_inference_steps", "sampling.guidance_scale", "sampling.height"} <= set(sidecar["facts"])  # fmt: skip

    # a video dropped in by hand (or whose writer died before its sidecar), and one of another seed
    shutil.copyfile(out / "a dog-0.mp4", out / "a cat-0.mp4")
    sidecar_path(out / "a cat-0.mp4").unlink()
    edited = json.loads(sidecar_path(out / "a bird-0.mp4").read_text())
    edited["facts"]["seed"] = "99"
    sidecar_path(out / "a bird-0.mp4").write_text(json.dumps(edited))
    dog = (out / "a dog-0.mp4").stat().st_mtime_ns

    rc, _, err = _run(capsys, cfg)
    assert rc == 1 and "a cat-0.mp4: no sidecar" in err and "a bird-0.mp4: seed: 99 → 7" in err
    assert "a dog-0.mp4" not in err
    assert _run(capsys, cfg, "--overwrite")[:2] == (0, "rank 0/1: wrote 2, skipped 1\n")
    assert (out / "a dog-0.mp4").stat().st_mtime_ns == dog
    assert read_provenance(sidecar_path(out / "a bird-0.mp4")).facts["seed"] == "7"
    assert _run(capsys, cfg)[:2] == (0, "rank 0/1: wrote 0, skipped 3\n")


def test_a_non_empty_folder_not_written_by_sample_is_refused_and_left_alone(tmp_path, deploy_dirs, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    (out / "a dog-0.mp4").write_bytes(b"an older sample, no sidecar")
    rc, _, err = _run(capsys, _config(tmp_path, out, _fp()))
    assert rc == 1 and "not empty and was not written by qvgen-eval sample" in err
    assert sorted(p.name for p in out.iterdir()) == ["a dog-0.mp4", "notes.txt"]
    assert (out / "a dog-0.mp4").read_bytes() == b"an older sample, no sidecar"


@pytest.mark.parametrize("where", ["inside", "equal"])
def test_an_out_dir_inside_or_equal_to_the_model_folder_is_refused(tmp_path, deploy_dirs, capsys, where):
    a = deploy_dirs[0]
    out = a / "videos" if where == "inside" else a
    before = {p: p.stat().st_mtime_ns for p in a.iterdir()}
    rc, _, err = _run(capsys, _config(tmp_path, out, _deploy(a)))
    assert rc == 1 and ("lies inside the input" in err if where == "inside" else "is also an input" in err)
    assert {p: p.stat().st_mtime_ns for p in a.iterdir()} == before


def test_model_facts_identify_the_weights_not_the_folder(tmp_path, deploy_dirs):
    a, b = deploy_dirs
    base = tiny_checkpoint("wan")
    facts = model_facts("wan", DeployModel(path=a, base=base), "float32")
    copied = shutil.copytree(a, tmp_path / "moved")
    assert model_facts("wan", DeployModel(path=copied, base=base), "float32") == facts
    assert (
        model_facts("wan", DeployModel(path=b, base=base), "float32")["model.digest"] != facts["model.digest"]
    )
    assert facts["model.base"] == model_facts("wan", FullPrecisionModel(path=base), "float32")["model.digest"]
    assert model_facts("wan", DeployModel(path=a, base=base), "bfloat16")["model.dtype"] == "bfloat16"


def test_the_refusal_groups_videos_by_what_changed_and_counts_the_rest(tmp_path):
    from qvgen.eval.sidecar import MAX_LISTED, stale_videos_error

    same = {tmp_path / f"p-{i}.mp4": ["sampling.height: 32 → 64"] for i in range(4)}
    seeds = {tmp_path / f"q-{i}.mp4": [f"seed: {i} → {i + 10}"] for i in range(MAX_LISTED + 2)}
    message = str(stale_videos_error(tmp_path, {**same, **seeds}, "REMEDY"))
    assert "p-0.mp4, p-1.mp4, p-2.mp4, … (4 videos): sampling.height: 32 → 64" in message
    assert "q-0.mp4: seed: 0 → 10" in message and "… and 3 more videos); REMEDY" in message
