import csv
from pathlib import Path

import torch

from qvgen.data import COLOURS, DIRECTIONS, Bucket, make_clip, read_video, write_procedural_dataset


def test_make_clip_is_deterministic_in_seed_and_index() -> None:
    a, b = make_clip(3, 1, frames=9, height=32, width=32), make_clip(3, 1, frames=9, height=32, width=32)
    assert torch.equal(a.frames, b.frames) and a.caption == b.caption
    assert not torch.equal(a.frames, make_clip(3, 2, frames=9, height=32, width=32).frames)
    assert not torch.equal(a.frames, make_clip(4, 1, frames=9, height=32, width=32).frames)


def test_caption_names_every_object_colour_shape_and_direction() -> None:
    for index in range(8):
        clip = make_clip(0, index, frames=9, height=64, width=64)
        phrases = clip.caption.split(" and ")
        assert len(phrases) == len(clip.objects) in (1, 2)
        for phrase, obj in zip(phrases, clip.objects):
            assert phrase == f"a {obj.colour} {obj.shape} moves {obj.direction}"


def test_centroids_move_in_the_captioned_direction_and_stay_inside_the_frame() -> None:
    for index in range(8):
        clip = make_clip(1, index, frames=17, height=64, width=64)
        for obj in clip.objects:
            step = obj.centroids[-1] - obj.centroids[0]
            dx, dy = DIRECTIONS[obj.direction]
            assert float(step @ torch.tensor([dx, dy])) > 5.0  # pixels along the direction
            assert float((step * torch.tensor([dy, dx]).abs()).abs().sum()) == 0.0  # none across it
            assert bool(
                (obj.centroids >= obj.radius - 1e-4).all() and (obj.centroids <= 64 - obj.radius + 1e-4).all()
            )


def test_frames_show_the_top_object_colour_at_its_centroid() -> None:
    clip = make_clip(2, 0, frames=9, height=64, width=64, max_objects=1)
    obj = clip.objects[0]
    colour = torch.tensor(COLOURS[obj.colour], dtype=torch.float32) / 127.5 - 1
    for f in (0, 8):
        x, y = obj.centroids[f].long().tolist()
        torch.testing.assert_close(clip.frames[:, f, y, x], colour)
    assert clip.frames.shape == (3, 9, 64, 64) and float(clip.frames.abs().max()) <= 1.0


def test_written_dataset_has_openvid_columns_and_decodable_videos_close_to_ground_truth(
    tmp_path: Path,
) -> None:
    csv_path = write_procedural_dataset(tmp_path, 3, seed=5, frames=9, height=32, width=32)
    rows = list(csv.DictReader(csv_path.read_text().splitlines()))
    assert [r["video"] for r in rows] == [f"videos/{i:06d}.mp4" for i in range(3)]
    for r in rows:
        truth = make_clip(5, int(r["index"]), frames=9, height=32, width=32)
        assert r["caption"] == truth.caption
        video = read_video(tmp_path / r["video"], Bucket(frames=9, height=32, width=32))
        assert float((video - truth.frames).abs().mean()) < 0.03
    assert not list(tmp_path.rglob("*.tmp"))
