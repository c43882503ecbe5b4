import numpy as np
import pytest
import torch

from qvgen.data import MovingShape, make_clip, render
from qvgen.eval.adherence import (
    AdherenceConfig,
    CaptionGrammarError,
    ObjectClaim,
    chance_levels,
    parse_caption,
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


def test_parse_caption_reads_one_clause_per_object():
    claims = parse_caption("A Red square moves left and a blue circle moves up.")
    assert claims == (
        ObjectClaim(colour="red", shape="square", direction="left"),
        ObjectClaim(colour="blue", shape="circle", direction="up"),
    )


@pytest.mark.parametrize(
    ("caption", "named"),
    [
        ("a pink square moves left", "colour 'pink'"),
        ("a red hexagon moves left", "shape 'hexagon'"),
        ("a red square moves sideways", "direction 'sideways'"),
        ("a red square jumps left", "clause 'a red square jumps left'"),
        ("a red square moves left and", "clause"),
        ("   ", "empty caption"),
    ],
)
def test_parse_caption_rejects_captions_outside_the_grammar_naming_the_word(caption, named):
    with pytest.raises(CaptionGrammarError, match=named):
        parse_caption(caption)


def test_ground_truth_single_object_clips_score_perfectly():
    clips = [make_clip(3, i, frames=9, max_objects=1) for i in range(24)]
    report = score_videos((_frames(c.frames) for c in clips), [c.caption for c in clips])
    assert (report.colour, report.shape, report.motion) == (1.0, 1.0, 1.0)
    shapes = {o.claim.shape for v in report.videos for o in v.objects}
    directions = {o.claim.direction for v in report.videos for o in v.objects}
    assert shapes == {"circle", "square", "triangle"} and directions == {"left", "right", "up", "down"}


def test_ground_truth_two_object_clips_score_near_perfectly():
    clips = [make_clip(5, i, frames=17, max_objects=2) for i in range(16)]
    report = score_videos([_frames(c.frames) for c in clips], [c.caption for c in clips])
    assert any(len(v.objects) == 2 for v in report.videos)
    # Occlusion by the other object can hide a corner, so a shape can be missed now and then.
    assert report.colour >= 0.95 and report.motion >= 0.95 and report.shape >= 0.9


def test_wrong_colour_fails_colour_but_shape_and_motion_are_still_judged():
    clip = make_clip(3, 0, frames=9, max_objects=1)
    (obj,) = clip.objects
    other = next(c for c in ("red", "blue") if c != obj.colour)
    result = score_video(_frames(clip.frames), f"a {other} {obj.shape} moves {obj.direction}")
    assert (result.colour, result.shape, result.motion) == (0.0, 1.0, 1.0)
    assert result.objects[0].judged_colour == obj.colour


def test_wrong_shape_and_wrong_direction_each_fail_their_own_check():
    clip = make_clip(3, 1, frames=9, max_objects=1)
    (obj,) = clip.objects
    wrong_shape = next(s for s in ("circle", "square", "triangle") if s != obj.shape)
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}[obj.direction]
    frames = _frames(clip.frames)
    shape_result = score_video(frames, f"a {obj.colour} {wrong_shape} moves {obj.direction}")
    motion_result = score_video(frames, f"a {obj.colour} {obj.shape} moves {opposite}")
    assert (shape_result.colour, shape_result.shape, shape_result.motion) == (1.0, 0.0, 1.0)
    assert (motion_result.colour, motion_result.shape, motion_result.motion) == (1.0, 1.0, 0.0)
    assert motion_result.objects[0].detected_direction == obj.direction


@pytest.mark.parametrize("shape", ["circle", "square", "triangle"])
def test_each_shape_is_recognised_while_it_moves_diagonally_down_right(shape):
    obj = MovingShape(shape, "green", "right", 9.0, _track((16.0, 20.0), (3.0, 1.0)))
    result = score_video(_frames(render([obj], _grey())), f"a green {shape} moves right")
    assert (result.colour, result.shape, result.motion) == (1.0, 1.0, 1.0)
    dx, dy = result.objects[0].displacement
    assert dx == pytest.approx(24.0, abs=0.5) and dy == pytest.approx(8.0, abs=0.5)


def test_two_objects_of_one_colour_are_tracked_separately():
    objects = [
        MovingShape("square", "red", "down", 7.0, _track((16.0, 12.0), (0.0, 4.0))),
        MovingShape("circle", "red", "left", 8.0, _track((52.0, 40.0), (-3.0, 0.0))),
    ]
    caption = "a red circle moves left and a red square moves down"
    result = score_video(_frames(render(objects, _grey())), caption)
    assert (result.colour, result.shape, result.motion) == (1.0, 1.0, 1.0)
    assert [o.claim.shape for o in result.objects] == ["circle", "square"]


def test_static_object_fails_motion_with_no_direction():
    obj = MovingShape("circle", "yellow", "up", 9.0, _track((32.0, 32.0), (0.0, 0.1)))
    result = score_video(_frames(render([obj], _grey())), "a yellow circle moves up")
    assert (result.colour, result.shape, result.motion) == (1.0, 1.0, 0.0)
    assert result.objects[0].detected_direction is None


def test_background_only_video_scores_zero_everywhere():
    clip = make_clip(3, 2, frames=9, max_objects=1)
    background = np.repeat(_frames(clip.frames)[:1] * 0 + 0.3, 9, axis=0)
    result = score_video(background, clip.caption)
    assert (result.colour, result.shape, result.motion) == (0.0, 0.0, 0.0)
    assert result.objects[0].judged_colour is None


def test_uint8_and_float_frames_and_torch_tensors_score_the_same():
    clip = make_clip(3, 4, frames=9, max_objects=1)
    frames = _frames(clip.frames)
    as_uint8 = np.round(frames * 255).astype(np.uint8)
    a = score_video(frames, clip.caption)
    b = score_video(as_uint8, clip.caption)
    c = score_video(torch.from_numpy(frames), clip.caption)
    assert a.objects[0].displacement == pytest.approx(b.objects[0].displacement)
    assert a == c


def test_frames_in_minus_one_one_or_channels_first_are_rejected():
    clip = make_clip(3, 0, frames=9, max_objects=1)
    with pytest.raises(ValueError, match=r"\(x \+ 1\) / 2"):
        score_video(clip.frames.permute(1, 2, 3, 0).numpy(), clip.caption)
    with pytest.raises(ValueError, match="channels last"):
        score_video(clip.frames.numpy(), clip.caption)


def test_score_videos_averages_and_rejects_unpaired_inputs():
    clip = make_clip(3, 0, frames=9, max_objects=1)
    (obj,) = clip.objects
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}[obj.direction]
    frames = _frames(clip.frames)
    report = score_videos([frames, frames], [clip.caption, f"a {obj.colour} {obj.shape} moves {opposite}"])
    assert report.num_videos == 2 and report.motion == 0.5 and report.colour == 1.0
    assert report.overall == pytest.approx((1.0 + 1.0 + 0.5) / 3)
    with pytest.raises(ValueError, match="differ in length"):
        score_videos([frames], [clip.caption, clip.caption])


def test_stricter_colour_distance_loses_an_off_palette_object():
    obj = MovingShape("square", "blue", "up", 9.0, _track((32.0, 48.0), (0.0, -3.0)))
    frames = _frames(render([obj], _grey()))
    shifted = np.clip(frames + np.where(frames.max(axis=-1, keepdims=True) > 0.5, 0.15, 0.0), 0, 1)
    assert score_video(shifted, "a blue square moves up").colour == 1.0
    assert (
        score_video(shifted, "a blue square moves up", AdherenceConfig(max_colour_distance=0.1)).colour == 0.0
    )


def test_chance_levels_follow_the_world_vocabulary():
    assert chance_levels() == {"colour": 1 / 7, "shape": 1 / 3, "motion": 1 / 4}
