import numpy as np
import pytest

from qvgen.eval import read_video, write_video


def test_write_then_read_keeps_frame_count_size_and_roughly_the_pixels(tmp_path):
    y, x = np.meshgrid(np.linspace(0, 1, 32), np.linspace(0, 1, 48), indexing="ij")
    base = np.stack([x, y, (x + y) / 2], axis=-1)[None] * 0.7  # smooth: survives h264's 4:2:0 chroma
    frames = base + np.linspace(0, 0.2, 5)[:, None, None, None]
    path = write_video(frames, tmp_path / "clip-0.mp4", fps=8)
    back = read_video(path)
    assert back.shape == (5, 32, 48, 3) and back.dtype == np.uint8
    assert np.abs(back.astype(float) / 255 - frames).mean() < 0.05
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip-0.mp4"]  # no temp file left


def test_write_video_refuses_sizes_ffmpeg_would_rescale(tmp_path):
    with pytest.raises(ValueError, match="multiple of 16"):
        write_video(np.zeros((3, 20, 32, 3)), tmp_path / "x.mp4", fps=8)
    assert not list(tmp_path.iterdir())


def test_read_video_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.mp4"):
        read_video(tmp_path / "nope.mp4")
