"""mp4 files are qvgen-data's (`qvgen.data.write_video`, `qvgen.data.read_video_frames`); eval re-exports them
under its historical names `write_video` / `read_video` for its public API."""

from qvgen.data import read_video_frames as read_video
from qvgen.data import write_video

__all__ = ["read_video", "write_video"]
