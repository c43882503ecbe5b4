import numpy as np
import pytest

from qvgen.data import encode_video, read_video_frames, write_video


def _smooth(frames: int = 5, height: int = 32, width: int = 48) -> np.ndarray:
    y, x = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    base = np.stack([x, y, (x + y) / 2], axis=-1)[None] * 0.7  # smooth: survives h264's 4:2:0 chroma
    return base + np.linspace(0, 0.2, frames)[:, None, None, None]


def test_write_then_read_keeps_frame_count_size_and_roughly_the_pixels(tmp_path):
    frames = _smooth()
    path = write_video(frames, tmp_path / "clip-0.mp4", fps=8)
    back = read_video_frames(path)
    assert back.shape == (5, 32, 48, 3) and back.dtype == np.uint8
    assert np.abs(back.astype(float) / 255 - frames).mean() < 0.05
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip-0.mp4"]  # no temp file left


def test_yuv444_at_crf0_keeps_sharp_colour_edges_that_yuv420_smears(tmp_path):
    frames = np.zeros((3, 16, 16, 3), dtype=np.uint8)
    frames[:, :, ::2] = (255, 0, 0)  # one-pixel colour stripes: 4:2:0 chroma cannot hold them
    frames[:, :, 1::2] = (0, 0, 255)
    sharp = read_video_frames(write_video(frames, tmp_path / "a.mp4", fps=8, pixel_format="yuv444p"))
    smeared = read_video_frames(write_video(frames, tmp_path / "b.mp4", fps=8))
    assert np.abs(sharp.astype(int) - frames).max() <= 3
    assert np.abs(smeared.astype(int) - frames).max() > 60


def test_encoding_is_deterministic():
    frames = _smooth(frames=3)
    assert encode_video(frames, 8) == encode_video(frames, 8)


def test_write_video_refuses_odd_sizes_for_yuv420_and_names_the_file(tmp_path):
    with pytest.raises(ValueError, match=r"x\.mp4.*odd"):
        write_video(np.zeros((3, 21, 32, 3)), tmp_path / "x.mp4", fps=8)
    assert not list(tmp_path.iterdir())


def test_write_video_rejects_frames_that_are_not_rgb(tmp_path):
    with pytest.raises(ValueError, match=r"\[F, H, W, 3\]"):
        write_video(np.zeros((3, 16, 16)), tmp_path / "x.mp4", fps=8)


def test_read_video_frames_names_a_missing_or_broken_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.mp4"):
        read_video_frames(tmp_path / "nope.mp4")
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    with pytest.raises(ValueError, match=r"bad\.mp4"):
        read_video_frames(tmp_path / "bad.mp4")
