"""Video files for every qvgen package: h264 mp4 encoding and atomic writes, uint8 RGB reads, all on PyAV.

The one place that writes mp4s (eval's samples and reports, train's validation clips, the procedural world),
so there is one backend and one set of encoder settings.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Literal

import av
import numpy as np

from qvgen.core import atomic_write_bytes

PixelFormat = Literal["yuv420p", "yuv444p"]


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Frames `[F, H, W, 3]` as uint8: floats in [0, 1] are scaled by 255 and rounded, uint8 passes."""
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"expected frames of shape [F, H, W, 3], got {arr.shape}")
    if arr.dtype == np.uint8:
        return arr
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"expected float frames in [0, 1] or uint8 frames, got dtype {arr.dtype}")
    return np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)


def encode_video(
    frames: np.ndarray, fps: int, *, crf: int = 0, pixel_format: PixelFormat = "yuv420p"
) -> bytes:
    """h264 mp4 bytes of `frames` (`[F, H, W, 3]`, float in [0, 1] or uint8), single-threaded (deterministic).

    `crf` 0 is x264's lossless mode; `yuv420p` (what players expect) needs an even height and width,
    `yuv444p` keeps full-resolution colour (small synthetic clips whose colours matter).
    """
    data = to_uint8(frames)
    _, height, width, _ = data.shape
    if pixel_format == "yuv420p" and (height % 2 or width % 2):
        raise ValueError(
            f"frame size {width}x{height} is odd; yuv420p h264 needs an even width and height "
            "(crop or pad the frames, or pass pixel_format='yuv444p')"
        )
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": str(crf), "threads": "1"})
        stream.width, stream.height, stream.pix_fmt = width, height, pixel_format
        for frame in data:
            container.mux(
                stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24"))
            )
        container.mux(stream.encode(None))
    return buffer.getvalue()


def write_video(
    frames: np.ndarray,
    path: str | os.PathLike[str],
    fps: int,
    *,
    crf: int = 0,
    pixel_format: PixelFormat = "yuv420p",
) -> Path:
    """Encode `frames` (see `encode_video`) and write the mp4 to `path` atomically; return `path`."""
    out = Path(path)
    try:
        data = encode_video(frames, fps, crf=crf, pixel_format=pixel_format)
    except ValueError as e:
        raise ValueError(f"cannot write {out}: {e}") from e
    return atomic_write_bytes(out, data)


def read_video_frames(path: str | os.PathLike[str]) -> np.ndarray:
    """All frames of a video file as uint8 RGB `[F, H, W, 3]` (no resizing; see `read_video` for training)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no video file at {p}")
    try:
        with av.open(str(p)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except (av.FFmpegError, IndexError) as e:
        raise ValueError(f"cannot decode video {p}: {e}") from e
    if not frames:
        raise ValueError(f"video {p} has no frames")
    return np.stack(frames).astype(np.uint8, copy=False)
