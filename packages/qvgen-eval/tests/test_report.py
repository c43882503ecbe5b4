import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from qvgen.core import Provenance, write_provenance
from qvgen.eval import EvalReport, load_report, parse_results, sidecar_path, write_report, write_video
from qvgen.eval.report import (
    FidelityMetrics,
    SampleRecord,
    StepErrorRecord,
    VariantReport,
    VideoMetrics,
    summarize,
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
PROMPT = 'a <b>bold</b> "cat"'


def _write_video(frames, path, kind: str, digest: str) -> None:
    """An mp4 and its sidecar naming the model that made it (what `qvgen-eval` writes)."""
    write_video(frames, path, fps=8)
    write_provenance(sidecar_path(path), Provenance.of("test", {"model.kind": kind, "model.digest": digest}))


def _report(tmp_path) -> EvalReport:
    t = np.linspace(0, 1, 6)[:, None, None, None]
    frames = np.broadcast_to(t * np.ones((1, 16, 32, 3)) * 0.8, (6, 16, 32, 3))
    _write_video(frames, tmp_path / "teacher" / "clip-0.mp4", "full_precision", "tree:t")
    _write_video(frames[::-1], tmp_path / "w4" / "clip-0.mp4", "fake_quant", "sha256:w4")
    video = VideoMetrics(path="teacher/clip-0.mp4", temporal_flickering=0.9, motion_energy=0.1)
    teacher = [SampleRecord(prompt=PROMPT, index=0, seed=1, video=video)]
    fid = FidelityMetrics(
        latent_mse=0.5, psnr_db=20.0, ssim=0.7, motion_energy_ratio=1.1,
        step_errors=(StepErrorRecord(step=0, timestep=999, mse=0.1, relative_mse=0.01),
                     StepErrorRecord(step=1, timestep=500, mse=0.2, relative_mse=0.03)),
    )  # fmt: skip
    variant = [SampleRecord(prompt=PROMPT, index=0, seed=1, fidelity=fid,
                            video=video.model_copy(update={"path": "w4/clip-0.mp4"}))]  # fmt: skip
    return EvalReport(
        family="wan",
        created="2026-01-01T00:00:00+00:00",
        pipeline_kwargs={"num_inference_steps": 2},
        teacher=VariantReport(name="teacher", kind="full_precision", source="x", samples=tuple(teacher),
                              summary=summarize(teacher), model_digest="tree:t"),
        variants=(VariantReport(name="w4", kind="fake_quant", source="y", samples=tuple(variant),
                                summary=summarize(variant), model_digest="sha256:w4"),),
        vbench={"w4": parse_results(__import__("pathlib").Path(__file__).parent / "data" / "vbench"
                                    / "all_dimensions_eval_results.json")},
    )  # fmt: skip


def test_summary_means_every_scalar_metric():
    rec = lambda f, p: SampleRecord(  # noqa: E731
        prompt="p", index=0, seed=0, video=VideoMetrics(path="v", temporal_flickering=f, motion_energy=f / 10),
        fidelity=FidelityMetrics(latent_mse=p, psnr_db=p, ssim=p, motion_energy_ratio=p,
                                 step_errors=(StepErrorRecord(step=0, timestep=1, mse=p, relative_mse=p),)),
    )  # fmt: skip
    s = summarize([rec(0.8, 1.0), rec(1.0, 3.0)])
    assert s.scalars() == pytest.approx({"temporal_flickering": 0.9, "motion_energy": 0.09, "latent_mse": 2.0,
                               "psnr_db": 2.0, "ssim": 2.0, "motion_energy_ratio": 2.0, "step_relative_mse": 2.0})  # fmt: skip
    assert s.scores == {}
    with pytest.raises(ValueError, match="no samples"):
        summarize([])


def test_fidelity_metrics_carry_their_interval_over_videos():
    rec = lambda p: SampleRecord(  # noqa: E731
        prompt="p", index=int(p), seed=0, video=VideoMetrics(path="v", temporal_flickering=1, motion_energy=1),
        fidelity=FidelityMetrics(latent_mse=p, psnr_db=10 * p, ssim=p, motion_energy_ratio=p,
                                 step_errors=(StepErrorRecord(step=0, timestep=1, mse=p, relative_mse=p),
                                              StepErrorRecord(step=1, timestep=0, mse=p, relative_mse=3 * p))),
    )  # fmt: skip
    s = summarize([rec(1.0), rec(2.0), rec(6.0)])
    psnr = s.intervals["psnr_db"]
    assert psnr.mean == pytest.approx(30.0) and psnr.n == 3
    assert psnr.ci95 == pytest.approx(4.303 * np.std([10, 20, 60], ddof=1) / np.sqrt(3), rel=1e-3)
    assert s.intervals["step_relative_mse"].mean == pytest.approx(2 * 3.0)  # per-video step means 2, 4, 12
    assert summarize([rec(1.0)]).vs_teacher == {}


def _scored(prompt: str, seed: int, overall: float | None) -> SampleRecord:
    from qvgen.eval import ValueScores

    score = (
        ValueScores(values={}, unscorable="nothing seen")
        if overall is None
        else ValueScores(values={"overall": overall})
    )
    video = VideoMetrics(path="v", temporal_flickering=1, motion_energy=1)
    return SampleRecord(prompt=prompt, index=0, seed=seed, video=video, scores={"fake": score})


def test_paired_difference_from_the_teacher_joins_videos_by_prompt_and_seed():
    from qvgen.eval import paired_vs_teacher

    teacher = [_scored("a", 0, 1.0), _scored("b", 1, 1.0), _scored("c", 2, 0.5)]
    # the variant's videos come in another order; its unscorable video counts 0
    variant = [_scored("c", 2, 0.5), _scored("a", 0, 0.5), _scored("b", 1, None)]
    diff = paired_vs_teacher(variant, teacher)["fake.overall"]
    assert diff.mean == pytest.approx((0.0 - 0.5 - 1.0) / 3) and diff.n == 3
    assert diff.ci95 == pytest.approx(4.303 * np.std([0.0, -0.5, -1.0], ddof=1) / np.sqrt(3), rel=1e-3)
    assert summarize(variant, teacher).vs_teacher == {"fake.overall": diff}
    with pytest.raises(ValueError, match="different videos"):
        paired_vs_teacher([*variant[:2], _scored("b", 7, 1.0)], teacher)


def test_report_round_trips_through_json_and_the_html_escapes_prompts(tmp_path):
    report = _report(tmp_path)
    json_path, html_path = write_report(report, tmp_path)
    assert load_report(json_path) == report
    assert json.loads(json_path.read_text())["schema_version"] == 2
    page = html_path.read_text()
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    assert page.count("data:video/mp4;base64,") == 2  # self-contained: no external resources
    assert re.search(r"""(src|href)=["']?(https?:|//)|<link|<script src""", page) is None
    linked = write_report(report, tmp_path / "linked" / "..", embed_videos=False)[1].read_text()
    assert 'src="teacher/clip-0.mp4"' in linked


def test_report_refuses_a_video_without_sidecar_or_made_by_another_model(tmp_path):
    report = _report(tmp_path)
    other = report.variants[0].model_copy(update={"model_digest": "sha256:other"})
    with pytest.raises(ValueError, match=r"w4/clip-0.mp4: its sidecar names the fake_quant model sha256:w4, but "
                                         r"report row 'w4' claims the fake_quant model sha256:other"):  # fmt: skip
        write_report(report.model_copy(update={"variants": (other,)}), tmp_path)
    as_deploy = report.variants[0].model_copy(update={"kind": "deploy"})
    with pytest.raises(ValueError, match="report row 'w4' claims the deploy model"):
        write_report(report.model_copy(update={"variants": (as_deploy,)}), tmp_path)
    sidecar_path(tmp_path / "teacher" / "clip-0.mp4").unlink()
    with pytest.raises(ValueError, match=r"teacher/clip-0.mp4: no sidecar .* \(report row 'teacher'"):
        write_report(report, tmp_path)
    assert not (tmp_path / "report.json").exists()  # refused before anything is written


def test_linked_video_paths_are_url_quoted(tmp_path):
    from qvgen.eval.report import _video_src

    src = _video_src(tmp_path, "teacher/a cat #1 at 100% zoom?-0.mp4", embed=False)
    assert src == "teacher/a%20cat%20%231%20at%20100%25%20zoom%3F-0.mp4"


def test_load_report_names_the_file(tmp_path):
    bad = tmp_path / "report.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match=r"report\.json"):
        load_report(bad)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install -y chromium)")
def test_page_renders_in_headless_chromium_with_videos_loaded_and_a_screenshot(tmp_path):
    _, html_path = write_report(_report(tmp_path), tmp_path)
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--virtual-time-budget=10000"]  # fmt: skip
    dom = subprocess.run([*flags, "--dump-dom", html_path.as_uri()], capture_output=True, text=True,
                         timeout=120, check=True).stdout  # fmt: skip
    assert 'data-total="2" data-loaded="2" data-failed="0"' in dom
    assert "VBench — w4" in dom and "<polyline" in dom
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, "--window-size=1200,900", f"--screenshot={shot}", html_path.as_uri()],
                   capture_output=True, timeout=120, check=True)  # fmt: skip
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_report_carries_per_prompt_and_summary_adherence_with_looping_poster_videos(tmp_path):
    from qvgen.data import make_clip
    from qvgen.eval import AdherenceScorer

    clip = make_clip(3, 0, frames=8, num_objects=1)
    frames = ((clip.frames.permute(1, 2, 3, 0) + 1) / 2).numpy()
    _write_video(frames, tmp_path / "teacher" / "v.mp4", "full_precision", "tree:t")
    scorer = AdherenceScorer()
    records = [
        SampleRecord(prompt=clip.caption, index=0, seed=s, scores={"adherence": scorer.score(f, clip.caption)},
                     video=VideoMetrics(path="teacher/v.mp4", temporal_flickering=0.98123, motion_energy=0.01))
        for s, f in ((0, frames), (1, np.full_like(frames, 0.3)))
    ]  # fmt: skip
    report = EvalReport(
        family="wan", created="now", pipeline_kwargs={},
        teacher=VariantReport(name="teacher", kind="full_precision", source="x", samples=tuple(records),
                              summary=summarize(records)),
        variants=(), training_curves={"lsq": ((0, 1.0), (10, 0.5))},
    )  # fmt: skip
    json_path, html_path = write_report(report, tmp_path)
    data = json.loads(json_path.read_text())
    per_prompt = [s["scores"]["adherence"] for s in data["teacher"]["samples"]]
    assert per_prompt[0]["colour"] == 1.0 and per_prompt[1]["unscorable"] and per_prompt[1]["colour"] is None
    summary = data["teacher"]["summary"]["scores"]["adherence"]
    assert summary["num_unscorable"] == 1 and summary["values"]["overall"]["mean"] == 0.5
    page = html_path.read_text()
    assert "Scores: adherence" in page and "1 / 2" in page and "0.500 ± " in page
    assert "unscorable (no object" in page and f"{clip.caption} → " in page
    assert page.count('poster="data:image/png;base64,') == 2 and " loop " in page and "controls" not in page
    assert "0.98123" in page  # five significant digits: 0.98 for every model no longer
    assert "training loss" in page
