import json
from pathlib import Path

import pytest
import torch

from qvgen.data import (
    BadSampleError,
    Bucket,
    FpsSampling,
    IngestConfig,
    encode_mp4,
    make_clip,
    nearest_bucket,
    read_caption_table,
    read_video,
)


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.Tensor]:
    clip = make_clip(11, 0, frames=9, height=32, width=32, max_objects=2)
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    path.write_bytes(encode_mp4(clip.frames, fps=8))
    return path, clip.frames


def _nearest_frames(video: torch.Tensor, truth: torch.Tensor) -> list[int]:
    dist = (video[:, :, None] - truth[:, None]).abs().mean(dim=(0, 3, 4))  # (F_read, F_truth)
    return dist.argmin(dim=1).tolist()


def test_uniform_sampling_spreads_frames_over_the_whole_clip(clip_file: tuple[Path, torch.Tensor]) -> None:
    path, truth = clip_file
    video = read_video(path, Bucket(frames=3, height=32, width=32))
    assert video.shape == (3, 3, 32, 32) and video.dtype == torch.float32
    assert float(video.min()) >= -1.0 and float(video.max()) <= 1.0
    assert _nearest_frames(video, truth) == [0, 3, 6]


def test_fps_sampling_takes_frames_at_the_target_rate(clip_file: tuple[Path, torch.Tensor]) -> None:
    path, truth = clip_file
    video = read_video(path, Bucket(frames=4, height=32, width=32), FpsSampling(fps=4))  # source is 8 fps
    assert _nearest_frames(video, truth) == [0, 2, 4, 6]


def test_fps_sampling_counts_time_from_the_first_frame_of_a_clip_cut_from_a_longer_video(
    tmp_path: Path,
) -> None:
    from fractions import Fraction

    import av
    import numpy as np

    path = tmp_path / "cut.mp4"
    with av.open(str(path), mode="w") as container:  # 16 frames at 8 fps, timestamps from 1.0 s
        stream = container.add_stream("libx264", rate=8, options={"crf": "0", "threads": "1"})
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv444p"
        stream.codec_context.time_base = Fraction(1, 8)
        for i in range(16):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 16 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = 8 + i, Fraction(1, 8)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    video = read_video(path, Bucket(frames=6, height=32, width=32), FpsSampling(fps=4))
    source_index = ((video[0, :, 0, 0] + 1) * 127.5 / 16).round().tolist()
    assert source_index == [0, 2, 4, 6, 8, 10]


def test_fps_sampling_errors_or_pads_when_the_clip_is_too_short(clip_file: tuple[Path, torch.Tensor]) -> None:
    path, truth = clip_file
    with pytest.raises(BadSampleError, match=r"clip\.mp4: yields 5 frames at 4\.0 fps"):
        read_video(path, Bucket(frames=6, height=32, width=32), FpsSampling(fps=4))
    video = read_video(path, Bucket(frames=6, height=32, width=32), FpsSampling(fps=4, pad="repeat_last"))
    assert _nearest_frames(video, truth) == [0, 2, 4, 6, 8, 8]


def test_uniform_sampling_rejects_a_clip_shorter_than_the_bucket(
    clip_file: tuple[Path, torch.Tensor],
) -> None:
    with pytest.raises(BadSampleError, match=r"clip\.mp4: has 9 frames; the bucket needs 12"):
        read_video(clip_file[0], Bucket(frames=12, height=32, width=32))


def test_resize_keeps_aspect_and_crops_the_centre(tmp_path: Path) -> None:
    frames = torch.full((3, 2, 32, 64), -1.0)
    frames[1, :, :, 12:52] = 1.0  # green middle, black sides (a plain resize would keep the black)
    path = tmp_path / "wide.mp4"
    path.write_bytes(encode_mp4(frames))
    video = read_video(path, Bucket(frames=2, height=16, width=16))  # 32×64 → 16×32 → centre 16×16
    expected = torch.tensor([-1.0, 1.0, -1.0])[:, None, None, None].expand_as(video)
    assert float((video - expected).abs().max()) < 0.1


def test_unreadable_video_raises_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video" * 10)
    with pytest.raises(BadSampleError, match=r"broken\.mp4: unreadable video"):
        read_video(bad, Bucket(frames=2, height=16, width=16))


def test_nearest_bucket_matches_aspect_ratio() -> None:
    buckets = (Bucket(frames=9, height=48, width=80), Bucket(frames=9, height=64, width=64))
    assert nearest_bucket(1080, 1920, buckets) == buckets[0]
    assert nearest_bucket(500, 480, buckets) == buckets[1]


def test_caption_table_reads_csv_and_jsonl_with_configured_columns(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text('clip,text,uid\nx/1.mp4,"a red, square",u1\n2.mp4,,u2\n')
    cfg = IngestConfig(
        captions=tmp_path / "a.csv", video_column="clip", caption_column="text", id_column="uid"
    )
    records = read_caption_table(cfg)
    assert [(r.id, r.caption, r.video) for r in records] == [
        ("u1", "a red, square", tmp_path / "x/1.mp4"),
        ("u2", "", tmp_path / "2.mp4"),
    ]
    rows = [{"video": "v.mp4", "caption": "a blue circle moves up", "score": 5.1}]
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    (record,) = read_caption_table(IngestConfig(captions=tmp_path / "b.jsonl", video_root=Path("/data")))
    assert (record.id, record.caption, record.video) == (
        "v.mp4",
        "a blue circle moves up",
        Path("/data/v.mp4"),
    )


def test_caption_table_keeps_quoted_newlines_unicode_separators_and_ignores_a_bom(tmp_path: Path) -> None:
    text = 'video,caption\n1.mp4,"first line\nsecond line"\n2.mp4,a dog\u2028runs\n3.mp4,ok\n'
    (tmp_path / "a.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    records = read_caption_table(IngestConfig(captions=tmp_path / "a.csv"))
    assert [(r.id, r.caption) for r in records] == [
        ("1.mp4", "first line\nsecond line"),
        ("2.mp4", "a dog\u2028runs"),
        ("3.mp4", "ok"),
    ]
    line = json.dumps({"video": "1.mp4", "caption": "a dog\u2028runs"}, ensure_ascii=False)
    (tmp_path / "b.jsonl").write_text(line + "\n")
    (record,) = read_caption_table(IngestConfig(captions=tmp_path / "b.jsonl"))
    assert record.caption == "a dog\u2028runs"


def test_caption_table_errors_name_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("path,caption\nv.mp4,hello\n")
    with pytest.raises(ValueError, match=r"a\.csv:2: missing column\(s\) \['video'\]"):
        read_caption_table(IngestConfig(captions=tmp_path / "a.csv"))
    (tmp_path / "b.jsonl").write_text('{"video": "v.mp4", "caption": "x"}\n{oops\n')
    with pytest.raises(ValueError, match=r"b\.jsonl:2: invalid JSON"):
        read_caption_table(IngestConfig(captions=tmp_path / "b.jsonl"))
    with pytest.raises(ValueError, match=r"must be \.csv or \.jsonl"):
        read_caption_table(IngestConfig(captions=tmp_path / "c.parquet"))
