import csv
from pathlib import Path

import pytest
import torch

from qvgen.data import (
    COLOURS,
    DIRECTIONS,
    MIN_GAP,
    PLAIN_GREY,
    RADIUS_FRACTION,
    SHAPE_SETS,
    Bucket,
    WorldStyle,
    make_clip,
    parse_caption,
    read_video,
    render,
    write_procedural_dataset,
)


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
            article = "an" if obj.colour == "orange" else "a"
            assert phrase == f"{article} {obj.colour} {obj.shape} moves {obj.direction}"


def test_centroids_move_in_the_captioned_direction_and_stay_inside_the_frame() -> None:
    for index in range(8):
        clip = make_clip(1, index, frames=17, height=64, width=64)
        for obj in clip.objects:
            step = obj.centroids[-1] - obj.centroids[0]
            dx, dy = DIRECTIONS[obj.direction]
            assert float(step @ torch.tensor([dx, dy])) > 5.0  # pixels along the direction
            assert float((step * torch.tensor([dy, dx]).abs()).abs().sum()) == 0.0  # none across it
            left, right, up, down = obj.extents()
            xs, ys = obj.centroids[:, 0], obj.centroids[:, 1]
            assert bool((xs >= left - 1e-4).all() and (xs <= 64 - right + 1e-4).all())
            assert bool((ys >= up - 1e-4).all() and (ys <= 64 - down + 1e-4).all())


def test_two_objects_have_distinct_colours_and_never_touch() -> None:
    clips = [make_clip(7, i, frames=9, height=64, width=64, num_objects=2) for i in range(40)]
    for clip in clips:
        a, b = clip.objects
        assert a.colour != b.colour
        (al, ar, au, ad), (bl, br, bu, bd) = a.extents(), b.extents()
        for (ax, ay), (bx, by) in zip(a.centroids.tolist(), b.centroids.tolist()):
            gap_x = max(bx - bl - (ax + ar), ax - al - (bx + br))
            gap_y = max(by - bu - (ay + ad), ay - au - (by + bd))
            assert max(gap_x, gap_y) >= MIN_GAP - 1e-4
    assert {len(make_clip(7, i, frames=9, num_objects=1).objects) for i in range(5)} == {1}


def test_object_sizes_follow_the_radius_range_and_palette_colours_are_far_apart() -> None:
    radii = [o.radius for i in range(30) for o in make_clip(8, i, frames=9, height=64, width=64).objects]
    lo, hi = RADIUS_FRACTION
    assert min(radii) >= lo * 64 and max(radii) <= hi * 64 and max(radii) - min(radii) > 1.0
    palette = torch.tensor(list(COLOURS.values()), dtype=torch.float32)
    distance = torch.cdist(palette, palette) + 1e9 * torch.eye(len(palette))
    assert float(distance.min()) >= 100.0
    blue, purple = (torch.tensor(COLOURS[c], dtype=torch.float32) for c in ("blue", "purple"))
    assert float((blue - purple).norm()) >= 150.0


def test_plain_style_draws_large_objects_on_one_grey_and_still_fits_two_apart() -> None:
    style = WorldStyle("plain", (0.16, 0.2))
    clips = [make_clip(9, i, frames=9, height=64, width=64, num_objects=2, style=style) for i in range(20)]
    for clip in clips:
        assert all(0.16 * 64 <= o.radius <= 0.2 * 64 for o in clip.objects)
        a, b = clip.objects
        (al, ar, au, ad), (bl, br, bu, bd) = a.extents(), b.extents()
        for (ax, ay), (bx, by) in zip(a.centroids.tolist(), b.centroids.tolist()):
            assert (
                max(bx - bl - (ax + ar), ax - al - (bx + br), by - bu - (ay + ad), ay - au - (by + bd))
                >= MIN_GAP - 1e-4
            )
        # every pixel is either the grey or one of the two object colours
        pixels = ((clip.frames + 1) / 2).permute(1, 2, 3, 0).reshape(-1, 3)
        allowed = torch.tensor(
            [[PLAIN_GREY] * 3] + [[c / 255 for c in COLOURS[o.colour]] for o in clip.objects]
        )
        assert (
            float(
                torch.cdist(pixels, allowed, compute_mode="donot_use_mm_for_euclid_dist").min(1).values.max()
            )
            < 1e-5
        )
    # the same seed and index under the default style give the default (textured) world
    textured = make_clip(9, 0, frames=9, height=64, width=64, num_objects=2)
    assert len(torch.unique(textured.frames[0, 0])) > 50


def test_lanes_layout_puts_the_first_clause_on_top_starts_at_the_back_and_keeps_objects_apart() -> None:
    style = WorldStyle("plain", (0.16, 0.2), "lanes")
    for i in range(30):
        clip = make_clip(11, i, frames=9, height=64, width=64, style=style)
        n = len(clip.objects)
        band = (64 - (n - 1) * MIN_GAP) / n
        for k, obj in enumerate(clip.objects):
            left, right, up, down = obj.extents()
            top = k * (band + MIN_GAP)
            ys, xs = obj.centroids[:, 1], obj.centroids[:, 0]
            assert bool((ys - up >= top - 1e-4).all() and (ys + down <= top + band + 1e-4).all())
            assert bool((xs - left >= -1e-4).all() and (xs + right <= 64 + 1e-4).all())
            dx, dy = DIRECTIONS[obj.direction]
            along = xs if dx else ys
            lo, hi = (left, 64 - right) if dx else (top + up, top + band - down)
            start = float(along[0]) - lo if (dx or dy) > 0 else hi - float(along[0])
            assert 0 <= start <= 0.05 * min(64, band) + 1e-4  # from the back of its room
            assert float((along[-1] - along[0]).abs()) >= 0.6 * (hi - lo) - 1e-4
        assert len({o.colour for o in clip.objects}) == n
        assert clip.caption == " and ".join(o.phrase for o in clip.objects)


def test_lane_shrink_scales_only_the_objects_of_two_object_clips() -> None:
    style = WorldStyle("plain", (0.24, 0.28), "lanes", lane_shrink=0.55)
    radii = {1: [], 2: []}
    for i in range(40):
        clip = make_clip(12, i, frames=9, height=64, width=64, style=style)
        radii[len(clip.objects)] += [o.radius for o in clip.objects]
    assert radii[1] and radii[2]
    assert all(0.24 * 64 - 1e-4 <= r <= 0.28 * 64 + 1e-4 for r in radii[1])
    assert all(0.55 * 0.24 * 64 - 1e-4 <= r <= 0.55 * 0.28 * 64 + 1e-4 for r in radii[2])


@pytest.mark.parametrize("layout", ["random", "lanes"])
def test_elongated_world_draws_discs_bars_and_columns_of_their_extent(layout) -> None:
    style = WorldStyle(
        "plain", (0.24, 0.28) if layout == "lanes" else (0.12, 0.17), layout, 0.55, "elongated"
    )
    seen = set()
    for i in range(40):
        clip = make_clip(13, i, frames=9, height=64, width=64, style=style)
        assert {c.shape for c in parse_caption(clip.caption)} <= set(SHAPE_SETS["elongated"])
        for obj in clip.objects:
            seen.add(obj.shape)
            left, right, up, down = obj.extents()
            mask = (render([obj], torch.full((3, 64, 64), -1.0)) > -2.5).any(0)[0]  # frame 0, alone
            ys, xs = torch.nonzero(mask, as_tuple=True)
            aspect = float(xs.max() - xs.min() + 1) / float(ys.max() - ys.min() + 1)
            expected = {"bar": 2.5, "column": 0.4, "circle": 1.0}[obj.shape]
            assert aspect == pytest.approx(expected, rel=0.15)
            if obj.shape == "bar":
                assert left == right == pytest.approx(2.5 * up) and up == down
            elif obj.shape == "column":
                assert up == down == pytest.approx(2.5 * left) and left == right
            else:
                assert left == right == up == down
    assert seen == set(SHAPE_SETS["elongated"])


def test_outline_world_is_unchanged_by_the_shape_sets() -> None:
    """The default set draws from the same random stream as before shape sets existed."""
    clip = make_clip(1000, 3, frames=9, style=WorldStyle("plain", (0.24, 0.28), "lanes", 0.55))
    assert clip.caption == "an orange square moves left and a green circle moves down"


def test_world_style_rejects_radii_and_shrinks_outside_their_range() -> None:
    with pytest.raises(ValueError, match="radius_fraction"):
        WorldStyle("plain", (0.25, 0.4))
    with pytest.raises(ValueError, match="lane_shrink"):
        WorldStyle("plain", (0.16, 0.2), "lanes", lane_shrink=1.5)


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
    assert not list(tmp_path.rglob(".*.tmp-*"))  # qvgen.core's temp names


@pytest.mark.parametrize("num_objects", [0, -1])
def test_make_clip_refuses_fewer_than_one_object(num_objects: int) -> None:
    with pytest.raises(ValueError, match=f"num_objects={num_objects}"):
        make_clip(0, 0, frames=9, height=32, width=32, num_objects=num_objects)
