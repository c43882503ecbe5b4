import imageio_ffmpeg
import pytest

from qvgen.demo.cli import main


def test_demo_writes_a_9_frame_mp4_and_prints_its_path(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--steps", "2"]) == 0
    video = out / "demo-wan.mp4"
    assert str(video.resolve()) in capsys.readouterr().out
    n_frames, seconds = imageio_ffmpeg.count_frames_and_secs(str(video))
    assert n_frames == 9 and seconds == pytest.approx(9 / 8, abs=0.01)
    assert (out / "tiny-wan" / "model_index.json").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["demo-wan.mp4", "tiny-wan"]


def test_demo_is_deterministic_for_a_seed(tmp_path):
    for name in ("a", "b"):
        assert main(["demo", "--out", str(tmp_path / name), "--steps", "1", "--seed", "3"]) == 0
    assert (tmp_path / "a" / "demo-wan.mp4").read_bytes() == (tmp_path / "b" / "demo-wan.mp4").read_bytes()


def test_demo_rejects_bad_arguments(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--steps", "0"]) == 2
    assert "--steps" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["demo", "--family", "sora"])
    assert info.value.code == 2
