"""Scorers, their summaries, and `compare_models` running them on the exact frames."""

from pathlib import Path

import numpy as np
import pytest

from qvgen.data import make_clip
from qvgen.eval import (
    AdherenceScorer,
    Contender,
    FullPrecisionModel,
    GeneratedVideo,
    SamplingSettings,
    ValueScores,
    VideoAdherence,
    VideoScorer,
    compare_models,
    load_model,
    load_report,
    plan_items,
    score_values,
    summarize_scores,
)
from qvgen.eval.testing import FakeScorer
from qvgen.models.testing import tiny_checkpoint


def _frames(clip) -> np.ndarray:
    return ((clip.frames.permute(1, 2, 3, 0) + 1) / 2).numpy()


def test_adherence_and_fake_scorers_satisfy_the_protocol():
    assert isinstance(AdherenceScorer(), VideoScorer) and isinstance(FakeScorer(), VideoScorer)
    clip = make_clip(3, 0, frames=9, num_objects=1)
    score = AdherenceScorer().score(_frames(clip), clip.caption)
    assert isinstance(score, VideoAdherence) and score_values(score)["overall"] == 1.0


def test_summaries_carry_means_cis_and_the_unscorable_count():
    clip = make_clip(3, 1, frames=9, num_objects=1)
    scorer = AdherenceScorer()
    good = scorer.score(_frames(clip), clip.caption)
    empty = scorer.score(np.full((9, 64, 64, 3), 0.3, dtype=np.float32), clip.caption)
    summary = summarize_scores([good, good, empty])
    assert summary.num_videos == 3 and summary.num_unscorable == 1
    overall = summary.values["overall"]
    assert overall.mean == pytest.approx(2 / 3) and overall.n == 3
    assert overall.ci95 == pytest.approx(4.303 * np.std([1, 1, 0], ddof=1) / np.sqrt(3), rel=1e-3)
    generic = summarize_scores([ValueScores(values={"a": 1.0}), ValueScores(values={"a": 3.0})])
    assert generic.values["a"].mean == 2.0 and generic.num_unscorable == 0
    failed = ValueScores(values={}, unscorable="decoder error")
    with_failed = summarize_scores([ValueScores(values={"a": 1.0}), ValueScores(values={"a": 1.0}), failed])
    assert with_failed.values["a"].mean == pytest.approx(2 / 3) and with_failed.values["a"].n == 3
    assert with_failed.num_unscorable == 1
    with pytest.raises(ValueError, match="no scores"):
        summarize_scores([])


@pytest.fixture(scope="module")
def scored(tmp_path_factory) -> tuple[Path, FakeScorer, list[GeneratedVideo]]:
    out = tmp_path_factory.mktemp("scored")
    ckpt = tiny_checkpoint("wan")
    contender = Contender("teacher", "full_precision", str(ckpt),
                          lambda: load_model("wan", FullPrecisionModel(path=ckpt), "float32", "cpu"))  # fmt: skip
    student = Contender("copy", "full_precision", str(ckpt), contender.load)
    fake, videos = FakeScorer(), []
    items = plan_items(
        ["a red square moves left", "a blue circle moves up and a green triangle moves down"], 1, 3
    )
    settings = SamplingSettings(height=32, width=32, num_frames=5, num_inference_steps=2, fps=8)
    compare_models("wan", contender, [student], items, settings, out,
                   scorers=(AdherenceScorer(), fake), on_video=videos.append)  # fmt: skip
    return out, fake, videos


def test_compare_models_scores_every_video_on_the_frames_it_hands_the_caller(scored):
    out, fake, videos = scored
    assert [(v.model, v.item.prompt) for v in videos] == [
        (m, p) for m in ("teacher", "copy")
        for p in ("a red square moves left", "a blue circle moves up and a green triangle moves down")
    ]  # fmt: skip
    for v, (frames, prompt) in zip(videos, fake.seen, strict=True):
        assert frames is v.frames and prompt == v.item.prompt
        assert v.frames.dtype == np.float32 and v.frames.shape == (5, 32, 32, 3)
        assert set(v.record.scores) == {"adherence", "fake"}
    report = load_report(out / "report.json")
    for model in (report.teacher, *report.variants):
        for sample in model.samples:
            adherence = sample.adherence
            assert adherence is not None and adherence.caption == sample.prompt
        summary = model.summary.scores["adherence"]
        assert summary.num_videos == 2 and set(summary.values) == {"colour", "shape", "motion", "overall"}
    # the same model at the same seeds: the copy's scores equal the teacher's
    assert report.variants[0].summary.scores == report.teacher.summary.scores


def test_compare_models_refuses_duplicate_scorer_names(tmp_path):
    with pytest.raises(ValueError, match="unique"):
        compare_models("wan", None, [], [], SamplingSettings(), tmp_path,  # type: ignore[arg-type]
                       scorers=(FakeScorer("x"), FakeScorer("x")))  # fmt: skip


def test_batched_sampling_gives_each_item_its_own_video_and_trajectory(scored, tmp_path):
    _, _, single = scored
    ckpt = tiny_checkpoint("wan")
    contender = Contender("teacher", "full_precision", str(ckpt),
                          lambda: load_model("wan", FullPrecisionModel(path=ckpt), "float32", "cpu"))  # fmt: skip
    videos: list[GeneratedVideo] = []
    items = plan_items(
        ["a red square moves left", "a blue circle moves up and a green triangle moves down"], 1, 3
    )
    settings = SamplingSettings(height=32, width=32, num_frames=5, num_inference_steps=2, fps=8)
    report = compare_models("wan", contender, [Contender("copy", "full_precision", str(ckpt), contender.load)],
                            items, settings, tmp_path, scorers=(FakeScorer(),), on_video=videos.append,
                            batch_size=2)  # fmt: skip
    for batched, alone in zip(videos, single, strict=True):
        assert (batched.model, batched.item) == (alone.model, alone.item)
        np.testing.assert_allclose(batched.frames, alone.frames, atol=2e-3)
    assert not np.allclose(videos[0].frames, videos[1].frames)  # two prompts, two seeds: two videos
    for sample in report.variants[0].samples:  # the same model batched the same way: zero error
        assert sample.fidelity is not None and sample.fidelity.latent_mse == 0.0
        assert len(sample.fidelity.step_errors) == 2
