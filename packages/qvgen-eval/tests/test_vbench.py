"""The VBench adapter offline: recorded result files, constants, missing weights; the real package when at hand.

`tests/data/vbench/` holds videos written by qvgen and the result file the real VBench 0.1.5
temporal_flickering produced for them (packages/qvgen-eval/scripts/vbench_smoke.py --record), plus a
16-dimension file in VBench's result format with hand-picked scores.
"""

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from qvgen.eval import (
    VBenchConfig,
    aggregate,
    check_weights,
    missing_weights,
    parse_results,
    read_video,
    run_vbench,
)
from qvgen.eval import temporal_flickering as our_flickering
from qvgen.eval.vbench import constants, vbench_python

DATA = Path(__file__).parent / "data" / "vbench"
RECORDED = DATA / "temporal_flickering_eval_results.json"


def test_constants_are_vbench_leaderboard_values():
    c = constants()
    assert (c.quality_weight, c.semantic_weight) == (4, 1)
    assert c.normalize["temporal_flickering"] == (0.6293, 1.0)
    assert c.normalize["motion_smoothness"] == (0.706, 0.9975)
    assert c.normalize["scene"] == (0.0, 0.8222)
    assert c.normalize["appearance_style"] == (0.0009, 0.2855)
    assert c.dimension_weight["dynamic_degree"] == 0.5
    assert len(c.quality_dimensions) == 7 and len(c.semantic_dimensions) == 9
    assert set(c.quality_dimensions) | set(c.semantic_dimensions) == set(c.normalize) == set(c.weights)


def test_our_flickering_matches_the_real_vbench_on_recorded_videos_within_1e6():
    recorded = json.loads(RECORDED.read_text())["temporal_flickering"]
    assert len(recorded[1]) == 5
    for entry in recorded[1]:
        ours = our_flickering(read_video(DATA / entry["video_path"]))
        assert ours == pytest.approx(entry["video_results"], abs=1e-6), entry["video_path"]


def test_recorded_temporal_flickering_parses_with_normalised_score_and_no_aggregates():
    report = parse_results(RECORDED)
    tf = report.dimensions["temporal_flickering"]
    assert tf.score == pytest.approx(0.8800151047052122)
    assert tf.normalized == pytest.approx((tf.score - 0.6293) / (1 - 0.6293))
    assert len(tf.videos) == 5 and all(v.score is not None for v in tf.videos)
    assert report.quality is None and report.total is None
    assert "subject_consistency" in report.missing_for_quality
    assert "temporal_flickering" not in report.missing_for_quality


def test_all_dimensions_aggregate_like_vbench_cal_final_score():
    report = parse_results(DATA / "all_dimensions_eval_results.json")
    # Quality: six dimensions at their max (normalised 1, weight 1), dynamic_degree 0 (weight 0.5).
    assert report.quality == pytest.approx(6 / 6.5)
    # Semantic: eight at max, scene at 0; all weights 1.
    assert report.semantic == pytest.approx(8 / 9)
    assert report.total == pytest.approx((4 * 6 / 6.5 + 8 / 9) / 5)
    assert report.missing_for_quality == () and report.missing_for_semantic == ()
    dd = report.dimensions["dynamic_degree"].videos[0]
    assert dd.score == 0.0  # VBench's per-video bools count as 0/1
    mo = report.dimensions["multiple_objects"].videos[0]
    assert mo.score is None and mo.raw == {"score": 1.0, "detected": ["a cat", "a dog"]}


def test_aggregate_of_minimum_scores_is_zero():
    c = constants()
    q, s, t, _, _ = aggregate({d: lo for d, (lo, _) in c.normalize.items()})
    assert (q, s, t) == (0.0, 0.0, 0.0)


def test_parse_results_names_the_file_and_the_problem(tmp_path):
    bad = tmp_path / "r.json"
    bad.write_text(json.dumps({"not_a_dimension": [1.0, []]}))
    with pytest.raises(ValueError, match=r"r\.json: unknown dimension 'not_a_dimension'"):
        parse_results(bad)
    bad.write_text(json.dumps({"color": "high"}))
    with pytest.raises(ValueError, match=r"'color': expected \[score"):
        parse_results(bad)


def test_missing_weights_lists_each_file_and_where_vbench_looks(tmp_path):
    (tmp_path / "clip_model").mkdir()
    (tmp_path / "clip_model" / "ViT-B-32.pt").write_bytes(b"x")
    missing = missing_weights(
        ["temporal_flickering", "background_consistency", "aesthetic_quality"], tmp_path
    )
    assert missing == {
        "aesthetic_quality": [
            tmp_path / "clip_model" / "ViT-L-14.pt",
            tmp_path / "aesthetic_model" / "emb_reader" / "sa_0_4_vit_l_14_linear.pth",
        ]
    }
    with pytest.raises(FileNotFoundError) as e:
        check_weights(["dynamic_degree"], tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "raft_model" / "models" / "raft-things.pth") in msg and "VBENCH_CACHE_DIR" in msg


def test_custom_input_refuses_dimensions_that_need_the_vbench_prompt_suite(tmp_path):
    with pytest.raises(ValueError, match="object_class"):
        VBenchConfig(videos_dir=tmp_path, dimensions=("object_class",), output_dir=tmp_path)
    VBenchConfig(
        videos_dir=tmp_path, dimensions=("object_class",), output_dir=tmp_path, mode="vbench_standard"
    )


def test_run_vbench_fails_on_missing_weights_before_starting_anything(tmp_path):
    cfg = VBenchConfig(
        videos_dir=tmp_path,
        dimensions=("imaging_quality",),
        output_dir=tmp_path / "out",
        cache_dir=tmp_path / "c",
    )
    with pytest.raises(FileNotFoundError, match="musiq_spaq_ckpt"):
        run_vbench(cfg)
    assert not (tmp_path / "out").exists()


def test_a_relative_vbench_python_is_made_absolute_against_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QVGEN_VBENCH_PYTHON", ".nox/vbench/tmp/vbench-venv/bin/python")
    assert vbench_python() == str(tmp_path / ".nox/vbench/tmp/vbench-venv/bin/python")
    assert vbench_python(Path("venv/bin/python")) == str(tmp_path / "venv/bin/python")  # the config's wins
    assert vbench_python(Path("/opt/v/bin/python")) == "/opt/v/bin/python"
    monkeypatch.delenv("QVGEN_VBENCH_PYTHON")
    assert vbench_python() == sys.executable


def test_a_venv_python_symlink_is_kept(tmp_path, monkeypatch):
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    (tmp_path / "venv" / "bin" / "python").symlink_to(sys.executable)
    monkeypatch.chdir(tmp_path)
    assert vbench_python(Path("venv/bin/python")) == str(tmp_path / "venv" / "bin" / "python")


def test_run_vbench_starts_a_relative_interpreter_from_another_cwd(tmp_path, monkeypatch):
    """VBench runs with cwd=output_dir: a relative `$QVGEN_VBENCH_PYTHON` (what `nox -s vbench` once passed)
    still names the same interpreter. This one (outside any venv) lacks VBench's imports, so the runner starts
    and fails there, instead of `[Errno 2] No such file or directory` for the interpreter."""
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    (tmp_path / "venv" / "bin" / "python").symlink_to(sys.executable)
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(next(DATA.glob("*.mp4")), videos)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QVGEN_VBENCH_PYTHON", "venv/bin/python")
    cfg = VBenchConfig(
        videos_dir=videos,
        dimensions=("temporal_flickering",),
        output_dir=tmp_path / "out",
        cache_dir=tmp_path,
    )
    with pytest.raises(RuntimeError, match=r"VBench failed \(exit 1\):\nTraceback"):
        run_vbench(cfg)


VBENCH_PYTHON = os.environ.get("QVGEN_VBENCH_PYTHON")


@pytest.mark.slow
@pytest.mark.skipif(
    not VBENCH_PYTHON,
    reason="set QVGEN_VBENCH_PYTHON to an interpreter with vbench (`nox -s vbench` builds "
    ".nox/vbench/tmp/vbench-venv and sets it; so does packages/qvgen-eval/scripts/vbench_smoke.sh)",
)
def test_real_vbench_temporal_flickering_agrees_with_ours(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for p in DATA.glob("*.mp4"):
        shutil.copy(p, videos / p.name)
    cfg = VBenchConfig(
        videos_dir=videos,
        dimensions=("temporal_flickering",),
        output_dir=tmp_path / "out",
        cache_dir=tmp_path / "cache",
        python=Path(VBENCH_PYTHON or ""),
    )
    report = run_vbench(cfg)
    for v in report.dimensions["temporal_flickering"].videos:
        assert our_flickering(read_video(v.video_path)) == pytest.approx(v.score, abs=1e-6)
