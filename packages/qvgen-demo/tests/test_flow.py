"""The demo flow end to end on the embedded teacher, at a handful of steps and four held-out prompts (one with two objects)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from qvgen import auxiliary, quant
from qvgen.data import DEFAULT_STYLE, WorldStyle, parse_caption, read_manifest, read_video_frames
from qvgen.demo import (
    DATA_WORLD_SEED,
    DEFAULT_TEACHER_DIR,
    DemoConfig,
    DemoResult,
    TrainBudget,
    build_shards,
    decay_period,
    held_out_clips,
    held_out_prompts,
    run_config,
    run_demo,
    teacher_clip_shape,
    teacher_fingerprint,
    teacher_world_style,
)
from qvgen.eval import load_report
from qvgen.models import get_family

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoResult:
    out = tmp_path_factory.mktemp("demo")
    cfg = DemoConfig(out=out, steps=5, prompts=4, num_clips=8, batch_size=2, initial_rank=2,
                     sampling_steps=2, progress=False)  # fmt: skip
    return run_demo(cfg)


def test_demo_table_has_teacher_rtn_and_qvgen_rows_scored_against_the_teacher(demo: DemoResult) -> None:
    assert [r.name for r in demo.rows] == ["teacher", "rtn-w4a4", "qvgen-w4a4"]
    teacher, *students = demo.rows
    assert teacher.psnr_db is None and teacher.latent_mse is None
    for row in students:
        assert row.psnr_db is not None and math.isfinite(row.psnr_db)
        assert row.latent_mse is not None and row.latent_mse > 0
    for row in demo.rows:
        assert all(0.0 <= x <= 1.0 for x in (row.colour, row.shape, row.motion))
        assert row.scores.num_videos == 4 and [v.caption for v in row.scores.videos] == list(demo.prompts)
    table = demo.table()
    header = [c.strip() for c in table.splitlines()[0].split("|")]
    assert header[:4] == ["model", "colour", "shape", "motion"]
    assert "qvgen-w4a4" in table and "rtn-w4a4" in table
    assert teacher.adherence_vs_teacher is None
    for row in students:  # paired over the same four videos
        diff = row.adherence_vs_teacher
        assert diff is not None and diff.n == 4
        assert diff.mean == pytest.approx(row.adherence - teacher.adherence)
        assert f"{diff.mean:+.3f}" in table


def test_demo_writes_the_html_report_and_one_mp4_per_model(demo: DemoResult) -> None:
    assert demo.report_html.stat().st_size > 0
    report = json.loads(demo.report_json.read_text())
    assert [v["name"] for v in report["variants"]] == ["rtn-w4a4", "qvgen-w4a4"]
    typed = load_report(demo.report_json)
    for model, row in zip((typed.teacher, *typed.variants), demo.rows, strict=True):
        assert [s.adherence for s in model.samples] == list(row.scores.videos)  # per prompt, in report.json
        assert model.summary.scores["adherence"].values["overall"].mean == pytest.approx(row.adherence)
    page = demo.report_html.read_text()
    assert "Scores: adherence" in page and "Difference from the teacher" in page
    frames, _, _ = teacher_clip_shape(DEFAULT_TEACHER_DIR)
    for name in ("teacher", "rtn-w4a4", "qvgen-w4a4"):
        videos = list((demo.report_html.parent / name).glob("*.mp4"))
        assert len(videos) == 4, name
        assert read_video_frames(videos[0]).shape[0] == frames


def test_demo_decays_phi_to_rank_zero_and_exports_a_deploy_student(demo: DemoResult) -> None:
    assert demo.phi_rank == 0
    model = quant.load_quantized(get_family("wan").load_transformer(DEFAULT_TEACHER_DIR), demo.deploy_dir)
    assert quant.deployed_layers(model)
    assert not auxiliary.lowrank_parameters(model)


def test_held_out_prompts_are_distinct_and_from_another_world_than_the_training_data() -> None:
    shape = teacher_clip_shape(DEFAULT_TEACHER_DIR)
    prompts = held_out_prompts(6, shape)
    assert len(set(prompts)) == 6
    assert held_out_prompts(6, shape) == prompts
    assert held_out_prompts(6, shape, seed=DATA_WORLD_SEED) != prompts


def test_teacher_world_style_comes_from_the_report_and_defaults_for_old_teachers(tmp_path: Path) -> None:
    report = json.loads((DEFAULT_TEACHER_DIR / "training_report.json").read_text())
    cfg = report["config"]
    expected = (
        WorldStyle(
            cfg["background"],
            tuple(cfg["radius_fraction"]),
            cfg["layout"],
            cfg["lane_shrink"],
            cfg.get("shapes", "outline"),
        )
        if "background" in cfg
        else DEFAULT_STYLE
    )
    assert teacher_world_style(DEFAULT_TEACHER_DIR) == expected
    old = {
        k: v
        for k, v in cfg.items()
        if k not in {"background", "radius_fraction", "layout", "lane_shrink", "shapes"}
    }
    (tmp_path / "training_report.json").write_text(json.dumps({"config": old}))
    assert teacher_world_style(tmp_path) == DEFAULT_STYLE
    no_shrink = {**old, "background": "plain", "radius_fraction": [0.16, 0.2], "layout": "lanes"}
    (tmp_path / "training_report.json").write_text(json.dumps({"config": no_shrink}))
    # a report from before lane_shrink and shapes existed reads as qvgen.data's defaults (0.75, outline)
    assert teacher_world_style(tmp_path) == WorldStyle("plain", (0.16, 0.2), "lanes")
    (tmp_path / "training_report.json").write_text(json.dumps({"config": {**old, "background": "plain"}}))
    with pytest.raises(ValueError, match=r"training_report\.json"):
        teacher_world_style(tmp_path)


def test_held_out_prompts_put_the_two_object_captions_last():
    shape = teacher_clip_shape(DEFAULT_TEACHER_DIR)
    prompts = held_out_prompts(8, shape, two_object=3)
    assert [len(parse_caption(p)) for p in prompts] == [1] * 5 + [2] * 3 and len(set(prompts)) == 8
    assert [c.caption for c in held_out_clips(8, shape, two_object=3)] == list(prompts)
    with pytest.raises(ValueError, match="two_object"):
        held_out_prompts(2, shape, two_object=3)


def test_decay_period_removes_phi_before_the_last_step_and_rejects_short_runs() -> None:
    period = decay_period(8, 100)
    schedule = auxiliary.DecaySchedule(initial_rank=8, period=period)
    assert auxiliary.required_steps(schedule) <= 100
    assert auxiliary.rank_at(99, schedule).rank == 0
    with pytest.raises(ValueError, match="steps=4"):
        decay_period(8, 4)
    with pytest.raises(ValueError, match="steps=4"):
        DemoConfig(steps=4, initial_rank=8)


def test_shards_are_reused_for_the_same_teacher_and_rebuilt_for_another(tmp_path: Path) -> None:
    first = build_shards(DEFAULT_TEACHER_DIR, tmp_path, 4)
    stamp = (first / "manifest.json").stat().st_mtime_ns
    assert build_shards(DEFAULT_TEACHER_DIR, tmp_path, 4) == first
    assert (first / "manifest.json").stat().st_mtime_ns == stamp
    other = tmp_path / "other-teacher"
    shutil.copytree(DEFAULT_TEACHER_DIR, other)
    config = other / "vae" / "config.json"
    config.write_text(config.read_text().replace("{", '{"_note": "retrained",', 1))
    assert teacher_fingerprint(other) != teacher_fingerprint(DEFAULT_TEACHER_DIR)
    second = build_shards(other, tmp_path, 4)
    assert second != first and read_manifest(second).num_samples == 4
    # the same weights drawing another world (here: one object per clip) are another shard set too
    one_object = tmp_path / "one-object-teacher"
    shutil.copytree(DEFAULT_TEACHER_DIR, one_object)
    report = one_object / "training_report.json"
    data = json.loads(report.read_text())
    data["config"]["max_objects"] = 1
    report.write_text(json.dumps(data))
    assert teacher_fingerprint(one_object) != teacher_fingerprint(DEFAULT_TEACHER_DIR)


def test_decay_fraction_removes_phi_within_its_share_of_the_steps(tmp_path: Path) -> None:
    def schedule(budget: TrainBudget) -> auxiliary.DecaySchedule:
        cfg = run_config("qvgen", 4, DEFAULT_TEACHER_DIR, tmp_path, budget, tmp_path / "run", progress=False)
        assert cfg.aux is not None
        return cfg.aux.decay

    half = schedule(TrainBudget(steps=100, decay_fraction=0.5))
    assert auxiliary.rank_at(20, half).rank > 0 and auxiliary.rank_at(49, half).rank == 0
    assert schedule(TrainBudget(steps=100)).period == decay_period(8, 100)
    with pytest.raises(ValueError, match="decay_fraction"):
        TrainBudget(decay_fraction=0.0)


def test_act_bits_sets_the_activation_width_apart_from_the_weights(tmp_path: Path) -> None:
    budget = TrainBudget(steps=10)
    same = run_config("lsq", 4, DEFAULT_TEACHER_DIR, tmp_path, budget, tmp_path / "a", progress=False)
    wider = run_config(
        "lsq", 4, DEFAULT_TEACHER_DIR, tmp_path, budget, tmp_path / "b", progress=False, act_bits=8
    )
    assert same.quant.activation.bits == 4 and same.quant.weight.bits == 4
    assert wider.quant.activation.bits == 8 and wider.quant.weight.bits == 4
    minmax = run_config(
        "rtn", 4, DEFAULT_TEACHER_DIR, None, budget, tmp_path / "c", progress=False, act_clip_init=0.9999
    )
    assert minmax.quant.activation.clip_init == 0.9999 and minmax.train.max_steps == 0
    assert same.quant.activation.clip_init == 0.9025
    with pytest.raises(ValueError, match="clip_init"):
        run_config(
            "rtn", 4, DEFAULT_TEACHER_DIR, None, budget, tmp_path / "d", progress=False, act_clip_init=1.0
        )
