import random

import numpy as np
import pytest
import torch

from qvgen.data import (
    COLOURS,
    SHAPE_SETS,
    CaptionGrammarError,
    MovingShape,
    WorldStyle,
    make_clip,
    parse_caption,
    render,
)
from qvgen.eval.adherence import (
    ATTRIBUTES,
    AdherenceConfig,
    VideoAdherence,
    chance_levels,
    change_attribute,
    find_objects,
    score_video,
    score_videos,
)


def _frames(clip_frames: torch.Tensor) -> np.ndarray:
    """qvgen.data's (3, F, H, W) in [-1, 1] → (F, H, W, 3) in [0, 1]."""
    return ((clip_frames.permute(1, 2, 3, 0) + 1) / 2).numpy()


def _track(start: tuple[float, float], velocity: tuple[float, float], frames: int = 9) -> torch.Tensor:
    t = torch.arange(frames, dtype=torch.float32)[:, None]
    return torch.tensor(start) + t * torch.tensor(velocity)


def _grey(height: int = 64, width: int = 64) -> torch.Tensor:
    return torch.full((3, height, width), 0.3)


def _paint(frames: np.ndarray, obj: MovingShape, rgb: tuple[float, float, float]) -> np.ndarray:
    """`frames` with `obj`'s silhouette painted in an arbitrary (off-palette) colour."""
    mask = _frames(render([obj], torch.zeros(3, *frames.shape[1:3]))).max(axis=-1) > 0
    out = frames.copy()
    out[mask] = rgb
    return out


@pytest.fixture(scope="module")
def clips() -> list:
    one = [make_clip(3, i, frames=9, num_objects=1) for i in range(16)]
    two = [make_clip(5, i, frames=9, num_objects=2) for i in range(12)]
    return one + two


def test_ground_truth_one_and_two_object_clips_score_perfectly(clips):
    report = score_videos([_frames(c.frames) for c in clips], [c.caption for c in clips])
    assert (report.colour, report.shape, report.motion, report.num_unscorable) == (1.0, 1.0, 1.0, 0)
    claims = [o.claim for v in report.videos for o in v.objects]
    assert {c.shape for c in claims} == {"circle", "square", "triangle"}
    assert {c.direction for c in claims} == {"left", "right", "up", "down"}
    assert sum(len(v.objects) == 2 for v in report.videos) == 12


@pytest.mark.parametrize("attribute", ATTRIBUTES)
def test_negative_controls_changed_attribute_scores_at_most_chance_plus_a_tenth(clips, attribute):
    rng = random.Random(0)
    changed = [
        change_attribute(c.caption, attribute, rng, clause=i % len(c.objects)) for i, c in enumerate(clips)
    ]
    report = score_videos([_frames(c.frames) for c in clips], changed)
    hits, others = [], []
    for i, v in enumerate(report.videos):
        for k, o in enumerate(v.objects):
            checks = {"colour": o.colour_ok, "shape": o.shape_ok, "motion": o.motion_ok}
            (hits if k == i % len(v.objects) else others).append(checks.pop(attribute))
            others += checks.values()
    assert np.mean(hits) <= chance_levels()[attribute] + 0.1
    assert all(others)  # the unchanged attributes and clauses still pass


ELONGATED = WorldStyle("plain", (0.24, 0.28), "lanes", 0.55, "elongated")


def test_elongated_world_ground_truth_scores_perfectly_and_its_shape_controls_fail():
    clips = [make_clip(7, i, frames=9, num_objects=1 + (i % 3 == 0), style=ELONGATED) for i in range(24)]
    videos = [_frames(c.frames) for c in clips]
    report = score_videos(videos, [c.caption for c in clips])
    assert (report.colour, report.shape, report.motion, report.num_unscorable) == (1.0, 1.0, 1.0, 0)
    assert {o.claim.shape for v in report.videos for o in v.objects} == {"circle", "bar", "column"}
    shapes = SHAPE_SETS["elongated"]
    rng = random.Random(0)
    changed = [change_attribute(c.caption, "shape", rng, shapes=shapes) for c in clips]
    assert all({c.shape for c in parse_caption(x)} <= set(shapes) for x in changed)
    control = score_videos(videos, changed)
    hits = [v.objects[0].shape_ok for v in control.videos]
    assert np.mean(hits) <= chance_levels(shapes)["shape"] + 0.1
    assert chance_levels(shapes)["shape"] == pytest.approx(1 / 3)


def test_a_wide_or_tall_blob_is_a_bar_or_a_column_whatever_its_outline():
    for shape, expected in (("bar", "bar"), ("column", "column"), ("square", "square")):
        obj = MovingShape(shape, "red", "right", 9.0, _track((20.0, 32.0), (2.0, 0.0)))
        (found,) = find_objects(_frames(render([obj], _grey())))
        assert found.shape == expected
        assert found.aspect == pytest.approx({"bar": 2.5, "column": 0.4, "square": 1.0}[shape], rel=0.2)


def test_change_attribute_changes_exactly_one_attribute_of_one_clause():
    caption = "a red square moves left and a blue circle moves up"
    for attribute in ATTRIBUTES:
        before, after = (
            parse_caption(caption),
            parse_caption(change_attribute(caption, attribute, random.Random(1), 1)),
        )
        assert before[0] == after[0]
        diff = [a for a, f in zip(ATTRIBUTES, ("colour", "shape", "direction"), strict=True)
                if getattr(before[1], f) != getattr(after[1], f)]  # fmt: skip
        assert diff == [attribute]
    assert parse_caption(change_attribute(caption, "colour", random.Random(2)))[0].colour not in {
        "red",
        "blue",
    }
    with pytest.raises(ValueError, match="no clause 2"):
        change_attribute(caption, "shape", random.Random(0), clause=2)


@pytest.mark.parametrize("mix", [0.35, 0.45, 0.5, 0.55, 0.65])
def test_a_violet_object_passes_as_blue_or_as_purple_never_as_both(mix):
    obj = MovingShape("square", "blue", "right", 9.0, _track((16.0, 32.0), (3.0, 0.0)))
    blue, purple = (np.array(COLOURS[c]) / 255.0 for c in ("blue", "purple"))
    violet = tuple((1 - mix) * blue + mix * purple)
    frames = _paint(np.repeat(_frames(render([], _grey()))[:1], 9, axis=0), obj, violet)
    blue_ok, purple_ok = (
        score_video(frames, f"a {c} square moves right").value("colour") for c in ("blue", "purple")
    )
    assert blue_ok + purple_ok <= 1.0
    if abs(mix - 0.5) > 0.1:  # clearly nearer one of them: that one passes
        assert (blue_ok, purple_ok) == ((1.0, 0.0) if mix < 0.5 else (0.0, 1.0))


def test_a_stray_blob_of_the_stated_colour_earns_nothing():
    red = MovingShape("square", "red", "left", 10.0, _track((48.0, 20.0), (-3.0, 0.0)))
    green = MovingShape("circle", "green", "left", 3.0, _track((16.0, 52.0), (0.0, 0.0)))
    frames = _frames(render([red, green], _grey()))
    result = score_video(frames, "a green square moves left")
    assert (result.colour, result.shape, result.motion) == (0.0, 1.0, 1.0)
    assert result.objects[0].matched is not None and result.objects[0].matched.colour == "red"
    assert [o.colour for o in result.found] == ["red", "green"]


def test_colours_bound_to_the_wrong_objects_fail_colour():
    objects = [
        MovingShape("circle", "red", "left", 8.0, _track((52.0, 16.0), (-3.0, 0.0))),
        MovingShape("square", "blue", "right", 8.0, _track((12.0, 48.0), (3.0, 0.0))),
    ]
    frames = _frames(render(objects, _grey()))
    right = score_video(frames, "a red circle moves left and a blue square moves right")
    swapped = score_video(frames, "a blue circle moves left and a red square moves right")
    assert (right.colour, right.shape, right.motion) == (1.0, 1.0, 1.0)
    assert (swapped.colour, swapped.shape, swapped.motion) == (0.0, 1.0, 1.0)


def test_a_missing_second_object_fails_its_clause_and_only_it():
    obj = MovingShape("triangle", "yellow", "down", 9.0, _track((32.0, 12.0), (0.0, 3.0)))
    result = score_video(
        _frames(render([obj], _grey())), "a yellow triangle moves down and a red circle moves up"
    )
    assert (result.colour, result.shape, result.motion) == (0.5, 0.5, 0.5)
    assert result.objects[1].matched is None and result.unscorable is None


def test_a_video_without_objects_is_an_explicit_unscorable_entry_that_the_summary_counts():
    clip = make_clip(3, 2, frames=9, num_objects=1)
    empty = np.full((9, 64, 64, 3), 0.3)
    result = score_video(empty, clip.caption)
    assert result.unscorable is not None and "no object" in result.unscorable
    assert (result.colour, result.shape, result.motion, result.overall) == (None, None, None, None)
    report = score_videos([empty, _frames(clip.frames)], [clip.caption, clip.caption])
    assert report.num_unscorable == 1 and report.num_videos == 2
    assert (report.colour, report.overall) == (0.5, 0.5)  # counted as failing, and counted


def test_an_object_seen_on_too_few_frames_is_not_an_object():
    obj = MovingShape("circle", "orange", "right", 9.0, _track((16.0, 32.0), (3.0, 0.0)))
    frames = _frames(render([obj], _grey()))
    frames[3:] = 0.3  # the object is gone after three of nine frames
    assert score_video(frames, "an orange circle moves right").unscorable is not None
    assert (
        score_video(frames, "an orange circle moves right", AdherenceConfig(min_presence=0.3)).colour == 1.0
    )


@pytest.mark.parametrize("shape", ["circle", "square", "triangle"])
def test_each_shape_is_recognised_while_it_moves_diagonally_down_right(shape):
    obj = MovingShape(shape, "green", "right", 9.0, _track((16.0, 20.0), (3.0, 1.0)))
    result = score_video(_frames(render([obj], _grey())), f"a green {shape} moves right")
    assert (result.colour, result.shape, result.motion) == (1.0, 1.0, 1.0)
    matched = result.objects[0].matched
    assert matched is not None
    assert matched.displacement[0] == pytest.approx(24.0, abs=0.5)
    assert matched.displacement[1] == pytest.approx(8.0, abs=0.5)


def test_static_object_fails_motion_with_no_direction():
    obj = MovingShape("circle", "yellow", "up", 9.0, _track((32.0, 32.0), (0.0, 0.1)))
    result = score_video(_frames(render([obj], _grey())), "a yellow circle moves up")
    assert (result.colour, result.shape, result.motion) == (1.0, 1.0, 0.0)
    assert result.objects[0].matched is not None and result.objects[0].matched.direction is None


def test_captions_outside_the_grammar_raise_before_scoring():
    frames = np.full((9, 64, 64, 3), 0.3)
    with pytest.raises(CaptionGrammarError, match="unknown colour 'pink'"):
        score_video(frames, "a pink square moves left")
    with pytest.raises(CaptionGrammarError, match="clause"):
        score_videos([frames], ["a red square jumps"])


def test_a_caption_with_more_objects_than_the_matching_can_try_is_refused():
    clause = "a red square moves left"
    frames = np.full((9, 64, 64, 3), 0.3)
    with pytest.raises(ValueError, match="names 7 objects; adherence scores at most 6"):
        score_video(frames, " and ".join([clause] * 7))


def test_uint8_and_float_frames_and_torch_tensors_score_the_same():
    clip = make_clip(3, 4, frames=9, num_objects=2)
    frames = _frames(clip.frames)
    a = score_video(frames, clip.caption)
    b = score_video(np.round(frames * 255).astype(np.uint8), clip.caption)
    c = score_video(torch.from_numpy(frames), clip.caption)
    assert (a.colour, a.shape, a.motion) == (b.colour, b.shape, b.motion) == (1.0, 1.0, 1.0)
    assert a == c


def test_frames_in_minus_one_one_or_channels_first_are_rejected():
    clip = make_clip(3, 0, frames=9, num_objects=1)
    with pytest.raises(ValueError, match=r"\(x \+ 1\) / 2"):
        score_video(clip.frames.permute(1, 2, 3, 0).numpy(), clip.caption)
    with pytest.raises(ValueError, match="channels last"):
        score_video(clip.frames.numpy(), clip.caption)


def test_score_videos_averages_and_rejects_unpaired_inputs():
    clip = make_clip(3, 0, frames=9, num_objects=1)
    frames = _frames(clip.frames)
    changed = change_attribute(clip.caption, "motion", random.Random(0))
    report = score_videos([frames, frames], [clip.caption, changed])
    assert report.num_videos == 2 and report.motion == 0.5 and report.colour == 1.0
    assert report.overall == pytest.approx((1.0 + 1.0 + 0.5) / 3)
    with pytest.raises(ValueError, match="differ in length"):
        score_videos([frames], [clip.caption, clip.caption])


def test_video_adherence_round_trips_through_json():
    clip = make_clip(5, 1, frames=9, num_objects=2)
    result = score_video(_frames(clip.frames), clip.caption)
    assert VideoAdherence.model_validate_json(result.model_dump_json()) == result


def test_chance_levels_follow_the_world_vocabulary():
    assert chance_levels() == {"colour": 1 / len(COLOURS), "shape": 1 / 3, "motion": 1 / 4}


def test_find_objects_describes_each_object_without_the_caption():
    clip = make_clip(5, 3, frames=9, num_objects=2)
    found = find_objects(_frames(clip.frames))
    described = sorted((o.colour, o.shape, o.direction) for o in found)
    assert described == sorted((o.colour, o.shape, o.direction) for o in clip.objects)
    assert all(o.presence == 1.0 and o.colour_distance < 0.01 for o in found)
