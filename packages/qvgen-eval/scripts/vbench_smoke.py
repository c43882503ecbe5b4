"""Run the real VBench temporal_flickering on our own videos and check qvgen's metric agrees (≤ 1e-6).

Usage (from the repo root, dev venv active):
    python packages/qvgen-eval/scripts/vbench_smoke.py --vbench-python .nox/vbench/tmp/vbench-venv/bin/python \
        [--out /tmp/vbench-smoke] [--record packages/qvgen-eval/tests/data/vbench]

Videos: synthetic clips (still, drifting gradient, random flicker) and tiny-Wan samples, written with
`qvgen.eval.write_video`. With --record, the videos and VBench's result JSON are copied there (the
offline test fixture). Exit status 1 when any video differs by more than the tolerance.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

TOLERANCE = 1e-6


def synthetic_videos(out: Path) -> list[Path]:
    from qvgen.eval import write_video

    rng = np.random.default_rng(0)
    f, h, w = 9, 32, 48
    still = np.repeat(rng.random((1, h, w, 3)), f, axis=0)
    x = np.linspace(0, 1, w)[None, None, :, None]
    t = np.arange(f)[:, None, None, None] / f
    drift = np.broadcast_to((np.sin(2 * np.pi * (x + t)) + 1) / 2, (f, h, w, 3))
    noise = rng.random((f, h, w, 3))
    return [
        write_video(still, out / "a still frame-0.mp4", 8),
        write_video(drift, out / "a drifting gradient-0.mp4", 8),
        write_video(noise, out / "random flicker-0.mp4", 8),
    ]


def wan_videos(out: Path) -> list[Path]:
    from qvgen.eval import SamplingSettings, from_components, plan_items, sample_items
    from qvgen.models import get_family
    from qvgen.models.testing import tiny_checkpoint

    fam = get_family("wan")
    model = from_components(fam, fam.load(tiny_checkpoint("wan")))
    items = plan_items(["a cat playing piano"], 2, 0)
    settings = SamplingSettings(height=32, width=32, num_frames=9, num_inference_steps=4, guidance_scale=5.0)
    written, _ = sample_items(model, items, out, settings, skip_existing=False)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vbench-python", type=Path, required=True)
    p.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="vbench-smoke-")))
    p.add_argument("--record", type=Path, help="copy the videos and VBench's result JSON here")
    args = p.parse_args(argv)

    from qvgen.eval import VBenchConfig, read_video, run_vbench, temporal_flickering

    videos_dir = args.out / "videos"
    videos = synthetic_videos(videos_dir) + wan_videos(videos_dir)
    cache = args.out / "vbench-cache"
    cache.mkdir(parents=True, exist_ok=True)
    cfg = VBenchConfig(
        videos_dir=videos_dir,
        dimensions=("temporal_flickering",),
        output_dir=args.out / "results",
        cache_dir=cache,
        python=args.vbench_python,
    )
    report = run_vbench(cfg)
    theirs = {Path(v.video_path).name: v.score for v in report.dimensions["temporal_flickering"].videos}
    worst = 0.0
    for path in videos:
        ours = temporal_flickering(read_video(path))
        ref = theirs[path.name]
        assert ref is not None
        worst = max(worst, abs(ours - ref))
        print(f"{path.name:32s} vbench={ref:.10f} qvgen={ours:.10f} diff={abs(ours - ref):.2e}")
    print(f"videos={len(videos)} max_abs_diff={worst:.3e} tolerance={TOLERANCE:g}")
    print(f"vbench temporal_flickering={report.dimensions['temporal_flickering'].score:.10f}")
    if args.record:
        args.record.mkdir(parents=True, exist_ok=True)
        for path in videos:
            shutil.copy(path, args.record / path.name)
        data = json.loads(Path(report.source).read_text())
        for entry in data["temporal_flickering"][1]:
            entry["video_path"] = Path(entry["video_path"]).name
        (args.record / "temporal_flickering_eval_results.json").write_text(json.dumps(data, indent=4) + "\n")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
