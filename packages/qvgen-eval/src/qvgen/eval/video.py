"""mp4 in and out: atomic h264 writes through imageio-ffmpeg, uint8 RGB reads through PyAV (FFmpeg)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import av
import imageio.v2 as imageio
import numpy as np


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


def write_video(frames: np.ndarray, path: str | Path, fps: int) -> Path:
    """Write `frames` (`[F, H, W, 3]`, float in [0, 1] or uint8) as an h264 mp4, atomically."""
    out = Path(path)
    data = to_uint8(frames)
    if data.shape[1] % 16 or data.shape[2] % 16:
        raise ValueError(
            f"frame size {data.shape[2]}x{data.shape[1]} for {out} is not a multiple of 16; ffmpeg would "
            "rescale it and the metrics would not match the frames"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=".mp4", dir=out.parent)
    os.close(fd)
    try:
        writer = imageio.get_writer(
            tmp_name, format="FFMPEG", mode="I", fps=fps, codec="libx264", quality=10, macro_block_size=16
        )
        try:
            for frame in data:
                writer.append_data(frame)
        finally:
            writer.close()
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, out)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return out


def read_video(path: str | Path) -> np.ndarray:
    """All frames of a video file as uint8 RGB `[F, H, W, 3]`."""
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
