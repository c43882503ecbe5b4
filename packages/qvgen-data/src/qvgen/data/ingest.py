"""Source clips: caption tables (OpenVid-1M layout) and video decoding into bucketed pixel tensors."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import assert_never

import av
import torch
import torch.nn.functional as F
from torch import Tensor

from qvgen.data.config import Bucket, FpsSampling, FrameSampling, IngestConfig, UniformSampling


class BadSampleError(ValueError):
    """One source sample cannot be used (unreadable video, empty caption, ...); the message names it."""


@dataclass(frozen=True, slots=True)
class VideoRecord:
    """One source clip: a stable id, its caption, and a video file or an already bucketed (3, F, H, W) tensor."""

    id: str
    caption: str
    video: Path | Tensor


def read_caption_table(cfg: IngestConfig) -> list[VideoRecord]:
    """Read a `.csv` or `.jsonl` caption table into records (video paths resolved, nothing decoded).

    Missing columns raise naming the file; empty captions and missing videos surface per sample when
    the writer reads them (so `on_error="skip"` can count them).
    """
    path = cfg.captions
    root = cfg.video_root if cfg.video_root is not None else path.parent
    rows = _read_rows(path)
    needed = [cfg.video_column, cfg.caption_column, *([cfg.id_column] if cfg.id_column else [])]
    records = []
    for line, row in rows:
        missing = [c for c in needed if c not in row]
        if missing:
            raise ValueError(
                f"{path}:{line}: missing column(s) {missing}; found {sorted(row)}; "
                "set IngestConfig.video_column / caption_column / id_column"
            )
        video = str(row[cfg.video_column] or "")
        sample_id = str(row[cfg.id_column]) if cfg.id_column else video
        records.append(
            VideoRecord(id=sample_id, caption=str(row[cfg.caption_column] or ""), video=root / video)
        )
    return records


def _read_rows(path: Path) -> list[tuple[int, dict[str, object]]]:
    if path.suffix.lower() not in (".csv", ".jsonl"):
        raise ValueError(f"{path}: caption table must be .csv or .jsonl, not {path.suffix!r}")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a spreadsheet's BOM is not part of the first column
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read caption table: {e}") from e
    match path.suffix.lower():
        case ".csv":
            # csv's own line handling: quoted newlines stay in the caption, U+2028 is not a row break
            reader = csv.DictReader(io.StringIO(text, newline=""))
            csv_rows: list[tuple[int, dict[str, object]]] = []
            try:
                for row in reader:
                    if None in row:  # DictReader's restkey: the row has more fields than the header
                        raise ValueError(
                            f"{path}:{reader.line_num}: {len(reader.fieldnames or ()) + len(row[None])} fields, "
                            f"the header has {len(reader.fieldnames or ())}; quote a caption that holds a comma"
                        )
                    csv_rows.append((reader.line_num, dict(row)))
            except csv.Error as e:  # e.g. a field past csv.field_size_limit()
                raise ValueError(f"{path}:{reader.line_num}: not a valid CSV row: {e}") from e
            return csv_rows
        case ".jsonl":
            rows = []
            for i, line in enumerate(text.split("\n"), start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except (ValueError, RecursionError) as e:  # JSONDecodeError, a 5000-digit int, deep nesting
                    raise ValueError(f"{path}:{i}: invalid JSON line: {type(e).__name__}: {e}") from e
                if not isinstance(row, dict):
                    raise ValueError(f"{path}:{i}: expected a JSON object per line, got {type(row).__name__}")
                rows.append((i, row))
            return rows
        case other:
            raise ValueError(f"{path}: caption table must be .csv or .jsonl, not {other!r}")


def nearest_bucket(height: int, width: int, buckets: Sequence[Bucket]) -> Bucket:
    """The bucket whose aspect ratio is closest (in log ratio) to height × width."""
    aspect = math.log(width / height)
    return min(buckets, key=lambda b: abs(math.log(b.width / b.height) - aspect))


def video_size(path: Path) -> tuple[int, int]:
    """(height, width) of the first video stream, without decoding frames."""
    try:
        with av.open(str(path)) as container:
            stream = _video_stream(container, path)
            return stream.codec_context.height, stream.codec_context.width
    except (av.FFmpegError, OSError) as e:
        raise BadSampleError(f"{path}: unreadable video: {e}") from e


def read_video(path: str | Path, bucket: Bucket, sampling: FrameSampling | None = None) -> Tensor:
    """Decode `bucket.frames` frames, resize to cover and centre-crop to the bucket, scale to [-1, 1].

    Returns float32 (3, F, H, W). Uniform sampling spreads the frames over the whole clip; fps sampling
    takes them at `sampling.fps` from the start. Any decoding problem raises `BadSampleError` naming the file.
    """
    path = Path(path)
    try:
        frames = _decode(path, bucket.frames, sampling or UniformSampling())
    except (av.FFmpegError, OSError, EOFError) as e:
        raise BadSampleError(f"{path}: unreadable video: {e}") from e
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).float()  # (F, 3, h, w), 0..255
    video = resize_center_crop(video, bucket.height, bucket.width)
    return (video / 127.5 - 1.0).clamp_(-1.0, 1.0).permute(1, 0, 2, 3).contiguous()


def resize_center_crop(frames: Tensor, height: int, width: int) -> Tensor:
    """Resize (N, C, h, w) so it covers height × width (aspect kept), then crop the centre."""
    h, w = frames.shape[-2:]
    scale = max(height / h, width / w)
    rh, rw = max(height, round(h * scale)), max(width, round(w * scale))
    if (rh, rw) != (h, w):
        frames = F.interpolate(frames, size=(rh, rw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (rh - height) // 2, (rw - width) // 2
    return frames[..., top : top + height, left : left + width]


def _video_stream(container: av.container.InputContainer, path: Path) -> av.VideoStream:
    if not container.streams.video:
        raise BadSampleError(f"{path}: no video stream")
    return container.streams.video[0]


def _decode(path: Path, count: int, sampling: FrameSampling):  # -> np.ndarray (F, h, w, 3) uint8
    import numpy as np

    with av.open(str(path)) as container:
        stream = _video_stream(container, path)
        match sampling:
            case UniformSampling():
                total = stream.frames or sum(1 for p in container.demux(stream) if p.size)
                if total < count:
                    raise BadSampleError(f"{path}: has {total} frames; the bucket needs {count}")
                wanted = [(i * total) // count for i in range(count)]
                container.seek(0)
                picked: list = []
                want = iter(wanted)
                target = next(want)
                for index, frame in enumerate(container.decode(stream)):
                    while target == index:
                        picked.append(frame.to_ndarray(format="rgb24"))
                        target = next(want, -1)
                    if target < 0:
                        break
            case FpsSampling(fps=fps, pad=pad):
                picked = []
                period = 1.0 / fps
                start: float | None = None
                for frame in container.decode(stream):
                    # time from the clip's first frame: cut clips often start at a pts above 0
                    t = float(frame.time or 0.0)
                    start = t if start is None else start
                    t -= start
                    while len(picked) < count and t + 1e-6 >= len(picked) * period - 0.5 / _rate(stream):
                        picked.append(frame.to_ndarray(format="rgb24"))
                    if len(picked) == count:
                        break
                if len(picked) < count:
                    if pad == "error" or not picked:
                        raise BadSampleError(
                            f"{path}: yields {len(picked)} frames at {fps} fps; the bucket needs {count} "
                            "(use FpsSampling(pad='repeat_last') or a shorter bucket)"
                        )
                    picked += [picked[-1]] * (count - len(picked))
            case _:
                assert_never(sampling)
    if len(picked) != count:
        raise BadSampleError(f"{path}: decoded {len(picked)} of {count} wanted frames (truncated file?)")
    return np.stack(picked)


def _rate(stream: av.VideoStream) -> float:
    rate = stream.average_rate or stream.guessed_rate
    return float(rate) if rate else 30.0
