"""`qvgen-eval compare` on the tiny Wan and CogVideoX: full precision vs fake-quant vs real low-bit export."""

import copy
import os
import shutil
import subprocess

import pytest
import yaml

from qvgen import quant
from qvgen.eval import load_report
from qvgen.eval.cli import main
from qvgen.models import get_family, save_student
from qvgen.models.testing import tiny_checkpoint


def _export_student(family: str, fake_dir, deploy_dir) -> None:
    """A PTQ student written in the two on-disk forms eval reads.

    fake_dir: the fake-quant student folder (`qvgen.models.save_student`, as qvgen-train writes it); deploy_dir:
    qvgen-quant's `convert_` + `save_quantized`.
    """
    fam = get_family(family)
    ckpt = tiny_checkpoint(family)
    cfg = quant.QuantConfig()
    student = fam.load_transformer(ckpt)
    quant.prepare_(student, cfg, layer_roles=fam.layer_roles, keep_high_precision=fam.keep_high_precision)
    quant.initialize_(student, progress=False)
    save_student(student, fake_dir, family=family, checkpoint=ckpt, quant_config=cfg)
    deployed = copy.deepcopy(student)
    quant.convert_(deployed)
    quant.save_quantized(deployed, deploy_dir, identity=str(ckpt))


@pytest.fixture(scope="module", params=["wan", "cogvideox"])
def compared(request, tmp_path_factory):
    family = request.param
    root = tmp_path_factory.mktemp(f"compare-{family}")
    _export_student(family, root / "fake", root / "deploy")
    ckpt = str(tiny_checkpoint(family))
    cfg = root / "compare.yaml"
    cfg.write_text(yaml.safe_dump({
        "family": family,
        "teacher": {"kind": "full_precision", "path": ckpt},
        "variants": [
            {"name": "fp_copy", "model": {"kind": "full_precision", "path": ckpt}},
            {"name": "w4a4_fake", "model": {"kind": "fake_quant", "path": str(root / "fake")}},
            {"name": "w4a4_deploy", "model": {"kind": "deploy", "path": str(root / "deploy")}},
        ],
        "prompts": {"prompts": ["a cat playing piano", "a dog running on the beach"]},
        "out_dir": str(root / "out"),
        "seed": 7,
        "sampling": {"height": 32, "width": 32, "num_frames": 9, "num_inference_steps": 4, "guidance_scale": 5.0},
        "device": "cpu",
    }))  # fmt: skip
    assert main(["compare", str(cfg)]) == 0
    return family, root / "out"


def test_compare_writes_a_report_with_every_model_and_video(compared):
    family, out = compared
    report = load_report(out / "report.json")
    assert report.family == family
    assert [v.name for v in report.variants] == ["fp_copy", "w4a4_fake", "w4a4_deploy"]
    assert [v.kind for v in report.variants] == ["full_precision", "fake_quant", "deploy"]
    for m in (report.teacher, *report.variants):
        assert [(s.prompt, s.index, s.seed) for s in m.samples] == [
            ("a cat playing piano", 0, 7), ("a dog running on the beach", 0, 8),
        ]  # fmt: skip
        for s in m.samples:
            assert (out / s.video.path).is_file() and s.video.path.endswith(f"{s.prompt}-0.mp4")
            assert 0.0 < s.video.temporal_flickering <= 1.0


def test_teacher_against_itself_has_zero_error_at_the_same_seed(compared):
    _, out = compared
    fp = load_report(out / "report.json").variants[0]
    for s in fp.samples:
        f = s.fidelity
        assert f is not None
        assert f.latent_mse == 0.0 and f.psnr_db == 100.0 and f.ssim == pytest.approx(1.0)
        assert f.motion_energy_ratio == pytest.approx(1.0)
        assert len(f.step_errors) == 4 and all(e.relative_mse == 0.0 for e in f.step_errors)


def test_quantized_variants_differ_from_the_teacher_and_deploy_tracks_fake_quant(compared):
    _, out = compared
    report = load_report(out / "report.json")
    fake, deploy = report.variants[1], report.variants[2]
    for v in (fake, deploy):
        s = v.summary
        assert s.latent_mse is not None and s.step_relative_mse is not None and s.psnr_db is not None
        assert s.latent_mse > 0 and s.step_relative_mse > 0 and 0 < s.psnr_db < 100
        assert s.ssim is not None and 0 < s.ssim < 1
        assert s.motion_energy_ratio is not None and s.motion_energy_ratio > 0
        first = [smp.fidelity.step_errors[0].relative_mse for smp in v.samples if smp.fidelity]
        assert all(0 < e < 1 for e in first)  # the first step sees identical inputs: pure quantization error
    # At inference the fake-quant layers run the deploy layers' integer arithmetic: the same videos.
    d, f = deploy.summary.scalars(), fake.summary.scalars()
    assert d["step_relative_mse"] == f["step_relative_mse"]
    assert d["psnr_db"] == f["psnr_db"]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install -y chromium)")
def test_html_report_renders_in_headless_chromium_and_every_video_loads(compared):
    _, out = compared
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--virtual-time-budget=10000", "--dump-dom", (out / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    assert "<h1>qvgen eval" in dom and dom.count("<svg") >= 5
    assert 'data-total="8" data-loaded="8" data-failed="0"' in dom


def _small_compare_config(tmp_path, **extra):
    ckpt = str(tiny_checkpoint("wan"))
    cfg = tmp_path / "compare.yaml"
    cfg.write_text(yaml.safe_dump({
        "family": "wan",
        "teacher": {"path": ckpt},
        "variants": [{"name": "copy", "model": {"kind": "full_precision", "path": ckpt}}],
        "prompts": {"prompts": ["a red kite"]},
        "out_dir": str(tmp_path / "out"),
        "sampling": {"height": 32, "width": 32, "num_frames": 9, "num_inference_steps": 2, "guidance_scale": 3.0},
        "device": "cpu",
        **extra,
    }))  # fmt: skip
    return cfg


def test_compare_with_vbench_fails_on_missing_weights_before_sampling(tmp_path, capsys):
    cfg = _small_compare_config(
        tmp_path, vbench={"dimensions": ["dynamic_degree"], "cache_dir": str(tmp_path)}
    )
    assert main(["compare", str(cfg)]) == 1  # a user error: one message, no traceback
    err = capsys.readouterr().err
    assert "raft-things.pth" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "teacher").exists()
    with pytest.raises(FileNotFoundError, match=r"raft-things\.pth"):
        main(["compare", str(cfg), "--debug"])


def test_compare_refuses_vbench_dimensions_that_need_its_prompt_suite(tmp_path, capsys):
    cfg = _small_compare_config(tmp_path, vbench={"dimensions": ["color"]})
    assert main(["compare", str(cfg)]) == 2
    assert "vbench_standard" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("QVGEN_VBENCH_PYTHON"),
    reason="set QVGEN_VBENCH_PYTHON to an interpreter with vbench (`nox -s vbench` builds "
    ".nox/vbench/tmp/vbench-venv and sets it; so does packages/qvgen-eval/scripts/vbench_smoke.sh)",
)
def test_compare_scores_every_model_with_the_real_vbench(tmp_path):
    cfg = _small_compare_config(
        tmp_path, vbench={"dimensions": ["temporal_flickering"], "cache_dir": str(tmp_path)}
    )
    assert main(["compare", str(cfg)]) == 0
    report = load_report(tmp_path / "out" / "report.json")
    assert set(report.vbench) == {"teacher", "copy"}
    for m in (report.teacher, *report.variants):
        vb = report.vbench[m.name].dimensions["temporal_flickering"]
        assert vb.score == pytest.approx(m.samples[0].video.temporal_flickering, abs=1e-6)


def test_compare_refuses_adherence_on_prompts_outside_the_world(tmp_path, capsys):
    cfg = _small_compare_config(tmp_path, adherence=True)  # "a red kite" is not a world caption
    assert main(["compare", str(cfg)]) == 2
    assert "a red kite" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_compare_refuses_adherence_on_a_prompt_file_outside_the_world_before_sampling(tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red square moves left\na red kite\n")
    cfg = _small_compare_config(tmp_path, adherence=True, prompts={"file": str(prompts)})
    assert main(["compare", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert "prompts.txt" in err and "a red kite" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_compare_refuses_a_device_that_torch_does_not_name(tmp_path, capsys):
    cfg = _small_compare_config(tmp_path, device="gpu")
    assert main(["compare", str(cfg)]) == 2
    assert "device" in capsys.readouterr().err


def test_compare_with_adherence_records_it_per_video_and_per_model(tmp_path):
    cfg = _small_compare_config(tmp_path, adherence=True)
    data = yaml.safe_load(cfg.read_text())
    data["prompts"] = {"prompts": ["a red square moves left"]}
    cfg.write_text(yaml.safe_dump(data))
    assert main(["compare", str(cfg)]) == 0
    report = load_report(tmp_path / "out" / "report.json")
    for model in (report.teacher, *report.variants):
        assert set(model.summary.scores) == {"adherence"}
        assert model.summary.scores["adherence"].num_videos == 1
        assert all("adherence" in s.scores for s in model.samples)


def test_compare_writes_a_sidecar_per_video_naming_its_model_and_refuses_a_foreign_out_dir(tmp_path, capsys):
    from qvgen.core import read_provenance
    from qvgen.eval import FullPrecisionModel, model_facts, sidecar_path

    cfg = _small_compare_config(tmp_path)
    assert main(["compare", str(cfg)]) == 0
    report = load_report(tmp_path / "out" / "report.json")
    digest = model_facts("wan", FullPrecisionModel(path=tiny_checkpoint("wan")), "float32")["model.digest"]
    for m in (report.teacher, *report.variants):
        assert m.model_digest == digest
        for s in m.samples:
            facts = read_provenance(sidecar_path(tmp_path / "out" / s.video.path)).facts
            assert (facts["model.kind"], facts["model.digest"], facts["seed"]) == (
                "full_precision",
                digest,
                "0",
            )
    assert main(["compare", str(cfg)]) == 0  # its own folder: compared again in place

    capsys.readouterr()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert main(["compare", str(cfg), "--set", f"out_dir={foreign}"]) == 1
    assert "not empty and was not written by qvgen-eval compare" in capsys.readouterr().err
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
