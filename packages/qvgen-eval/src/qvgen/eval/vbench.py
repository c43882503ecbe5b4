"""VBench adapter: run the `vbench` package on a folder of videos, parse its results, aggregate them.

The `vbench` package is never imported here. It runs in a subprocess of a chosen interpreter
(`VBenchConfig.python`, default this one): VBench pins its own torch/torchvision pair, so it usually
lives in its own venv (`pip install qvgen-eval[vbench]` there; `nox -s vbench` and
packages/qvgen-eval/scripts/vbench_smoke.sh build one in .nox/vbench/tmp/vbench-venv).
Weights are read from a local cache folder only; missing ones are reported before anything runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, JsonValue, model_validator

from qvgen.core import Frozen

VBenchDimension = Literal[
    "subject_consistency",
    "background_consistency",
    "temporal_flickering",
    "motion_smoothness",
    "dynamic_degree",
    "aesthetic_quality",
    "imaging_quality",
    "object_class",
    "multiple_objects",
    "human_action",
    "color",
    "spatial_relationship",
    "scene",
    "appearance_style",
    "temporal_style",
    "overall_consistency",
]
CACHE_ENV = "VBENCH_CACHE_DIR"
PYTHON_ENV = "QVGEN_VBENCH_PYTHON"
RUNNER = Path(__file__).with_name("_vbench_runner.py")
VENV_HINT = ".nox/vbench/tmp/vbench-venv"
"""The VBench venv `nox -s vbench` and packages/qvgen-eval/scripts/vbench_smoke.sh build (from the repo root)."""


def vbench_python(configured: Path | None = None) -> str:
    """The interpreter that runs VBench: `configured`, else `$QVGEN_VBENCH_PYTHON`, else this one.

    A relative path is made absolute against the current directory here, when it is read: VBench runs with
    `cwd=output_dir`, where it would name another file. Symlinks are kept (a venv's bin/python is one, and
    resolving it would leave the venv). A bare name (``python3.11``) is looked up on PATH.
    """
    value = str(configured) if configured is not None else os.environ.get(PYTHON_ENV) or sys.executable
    path = Path(value).expanduser()
    if os.sep not in value and (os.altsep is None or os.altsep not in value):
        return shutil.which(value) or value
    return str(path.absolute())


class VBenchConstants(Frozen):
    """VBench's own aggregation constants and checkpoint layout, kept as data (data/vbench_constants.json)."""

    source: str
    quality_weight: float
    semantic_weight: float
    quality_dimensions: tuple[VBenchDimension, ...]
    semantic_dimensions: tuple[VBenchDimension, ...]
    dimension_weight: dict[VBenchDimension, float]
    normalize: dict[VBenchDimension, tuple[float, float]]
    """(min, max) per dimension: normalised = (raw - min) / (max - min) · weight."""
    custom_input_unsupported: tuple[VBenchDimension, ...]
    weights: dict[VBenchDimension, tuple[str, ...]]
    """Files each dimension loads, relative to the VBench cache folder."""


@cache
def constants() -> VBenchConstants:
    """The packaged VBench constants."""
    text = resources.files("qvgen.eval").joinpath("data/vbench_constants.json").read_text()
    return VBenchConstants.model_validate_json(text)


def default_cache_dir() -> Path:
    """Where VBench looks for weights: `$VBENCH_CACHE_DIR`, else `~/.cache/vbench`."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "vbench"


class VBenchConfig(Frozen):
    """One VBench run over a folder of videos."""

    schema_version: Literal[1] = 1
    videos_dir: Path
    """Folder of `{prompt}-{index}.mp4` videos (what `qvgen-eval sample` writes)."""
    dimensions: Annotated[tuple[VBenchDimension, ...], Field(min_length=1)]
    output_dir: Path
    """Where VBench writes its full-info and result JSON and where the typed report goes."""
    cache_dir: Path | None = None
    """VBench weights folder; None: `$VBENCH_CACHE_DIR`, else `~/.cache/vbench`. Nothing is downloaded."""
    mode: Literal["custom_input", "vbench_standard"] = "custom_input"
    """custom_input: prompts from file names; vbench_standard: VBench's prompt suite (5 videos per prompt)."""
    full_info: Path | None = None
    """vbench_standard only: VBench's full-info JSON; None: the one shipped in the vbench package."""
    python: Path | None = None
    """Interpreter with `vbench` installed; None: `$QVGEN_VBENCH_PYTHON`, else this one."""
    device: Literal["cpu", "cuda"] = "cpu"
    imaging_quality_preprocessing_mode: Literal["longer", "shorter", "shorter_centercrop", "None"] = "longer"
    name: str = "qvgen"
    """Prefix of VBench's output files."""

    @model_validator(mode="after")
    def _custom_dimensions(self) -> VBenchConfig:
        bad = sorted(set(self.dimensions) & set(constants().custom_input_unsupported))
        if self.mode == "custom_input" and bad:
            raise ValueError(
                f"dimensions {bad} need VBench's own prompt suite: set mode='vbench_standard' (videos named "
                "'{prompt}-{index}.mp4' for the prompts of VBench_full_info.json) or drop them"
            )
        if self.full_info is not None and self.mode != "vbench_standard":
            raise ValueError("full_info is only read with mode='vbench_standard'")
        return self


class VideoScore(Frozen):
    video_path: str
    score: float | None
    """The per-video value when VBench gives a number (bools count as 0/1), else None."""
    raw: JsonValue = None
    """VBench's per-video value when it is not a plain number."""


class DimensionResult(Frozen):
    dimension: VBenchDimension
    score: float
    """VBench's raw score for the dimension (before normalisation)."""
    normalized: float
    """(score - min) / (max - min) · dimension weight, VBench's leaderboard normalisation."""
    videos: tuple[VideoScore, ...] = ()


class VBenchReport(Frozen):
    """VBench results in typed form, with the Quality/Semantic/Total aggregates where computable."""

    schema_version: Literal[1] = 1
    source: str
    """The VBench result file this was parsed from."""
    dimensions: dict[VBenchDimension, DimensionResult]
    quality: float | None
    """Weighted mean of the normalised quality dimensions; None unless all 7 were scored."""
    semantic: float | None
    """Weighted mean of the normalised semantic dimensions; None unless all 9 were scored."""
    total: float | None
    """(4 · quality + 1 · semantic) / 5; None unless both are known."""
    missing_for_quality: tuple[VBenchDimension, ...]
    missing_for_semantic: tuple[VBenchDimension, ...]


def normalized_score(dimension: VBenchDimension, score: float) -> float:
    """VBench's normalised, weighted score of one dimension."""
    c = constants()
    lo, hi = c.normalize[dimension]
    return (score - lo) / (hi - lo) * c.dimension_weight[dimension]


def aggregate(
    scores: Mapping[VBenchDimension, float],
) -> tuple[
    float | None, float | None, float | None, tuple[VBenchDimension, ...], tuple[VBenchDimension, ...]
]:
    """(quality, semantic, total, missing quality dims, missing semantic dims) from raw dimension scores."""
    c = constants()

    def group(dims: Sequence[VBenchDimension]) -> tuple[float | None, tuple[VBenchDimension, ...]]:
        missing = tuple(d for d in dims if d not in scores)
        if missing:
            return None, missing
        total_weight = sum(c.dimension_weight[d] for d in dims)
        return sum(normalized_score(d, scores[d]) for d in dims) / total_weight, ()

    quality, miss_q = group(c.quality_dimensions)
    semantic, miss_s = group(c.semantic_dimensions)
    total = None
    if quality is not None and semantic is not None:
        total = (quality * c.quality_weight + semantic * c.semantic_weight) / (
            c.quality_weight + c.semantic_weight
        )
    return quality, semantic, total, miss_q, miss_s


def _video_score(entry: Any, where: str) -> VideoScore:
    if not isinstance(entry, dict) or "video_path" not in entry or "video_results" not in entry:
        raise ValueError(f"{where}: expected {{'video_path': ..., 'video_results': ...}}, got {entry!r:.120}")
    value = entry["video_results"]
    if isinstance(value, bool | int | float):
        return VideoScore(video_path=str(entry["video_path"]), score=float(value))
    return VideoScore(video_path=str(entry["video_path"]), score=None, raw=value)


def parse_results(path: str | Path) -> VBenchReport:
    """Parse VBench's `*_eval_results.json` (`{dimension: [score, [per-video entries]]}`)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read VBench results {p}: {e}") from e
    if not isinstance(data, dict) or not data:
        raise ValueError(f"VBench results {p}: expected a non-empty object of dimensions")
    known = set(constants().normalize)
    results: dict[VBenchDimension, DimensionResult] = {}
    for dim, value in data.items():
        if dim not in known:
            raise ValueError(f"VBench results {p}: unknown dimension {dim!r}; known: {sorted(known)}")
        if not isinstance(value, list) or len(value) != 2 or not isinstance(value[0], int | float):
            raise ValueError(
                f"VBench results {p}, {dim!r}: expected [score, [videos...]], got {value!r:.120}"
            )
        videos = value[1] if isinstance(value[1], list) else []
        score = float(value[0])
        results[dim] = DimensionResult(
            dimension=dim,
            score=score,
            normalized=normalized_score(dim, score),
            videos=tuple(_video_score(v, f"VBench results {p}, {dim!r}") for v in videos),
        )
    quality, semantic, total, miss_q, miss_s = aggregate({d: r.score for d, r in results.items()})
    return VBenchReport(
        source=str(p),
        dimensions=results,
        quality=quality,
        semantic=semantic,
        total=total,
        missing_for_quality=miss_q,
        missing_for_semantic=miss_s,
    )


def missing_weights(
    dimensions: Sequence[VBenchDimension], cache_dir: Path
) -> dict[VBenchDimension, list[Path]]:
    """Per dimension, the weight files VBench would load from `cache_dir` that are not there."""
    table = constants().weights
    out: dict[VBenchDimension, list[Path]] = {}
    for dim in dimensions:
        absent = [cache_dir / rel for rel in table[dim] if not (cache_dir / rel).is_file()]
        if absent:
            out[dim] = absent
    return out


def check_weights(dimensions: Sequence[VBenchDimension], cache_dir: Path) -> None:
    """Fail, listing every missing file per dimension, before VBench would try to download it."""
    missing = missing_weights(dimensions, cache_dir)
    if not missing:
        return
    lines = [f"  {dim}: " + ", ".join(str(p) for p in paths) for dim, paths in missing.items()]
    raise FileNotFoundError(
        f"VBench weights missing from {cache_dir} (VBench looks in ${CACHE_ENV}, default ~/.cache/vbench; "
        "qvgen never downloads them):\n" + "\n".join(lines) + "\nPut the files there (see VBench's "
        "vbench/utils.py init_submodules for their sources) or drop those dimensions."
    )


def run_vbench(cfg: VBenchConfig) -> VBenchReport:
    """Run VBench for `cfg.dimensions` on `cfg.videos_dir` and return the parsed, aggregated report."""
    cache_dir = (cfg.cache_dir or default_cache_dir()).expanduser().resolve()
    check_weights(cfg.dimensions, cache_dir)
    videos_dir = cfg.videos_dir.expanduser().resolve()
    if not videos_dir.is_dir() or not any(videos_dir.glob("*.mp4")):
        raise FileNotFoundError(f"no .mp4 videos in {videos_dir}; sample them with `qvgen-eval sample` first")
    output_dir = cfg.output_dir.expanduser().resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    args = {
        "videos_dir": str(videos_dir),
        "dimensions": list(cfg.dimensions),
        "output_dir": str(output_dir),
        "cache_dir": str(cache_dir),
        "mode": cfg.mode,
        "full_info": str(cfg.full_info.expanduser().resolve()) if cfg.full_info else None,
        "device": cfg.device,
        "name": cfg.name,
        "prompt_list": [],
        "imaging_quality_preprocessing_mode": cfg.imaging_quality_preprocessing_mode,
    }
    python = vbench_python(cfg.python)
    proc = subprocess.run(
        [python, str(RUNNER), json.dumps(args)], capture_output=True, text=True, cwd=output_dir, check=False
    )
    if proc.returncode != 0:
        hint = ""
        if "No module named 'vbench'" in proc.stderr:
            hint = (
                f"\n{python} has no `vbench`: install `qvgen-eval[vbench]` there, or set `python` to a venv "
                f"that has it (`nox -s vbench` and packages/qvgen-eval/scripts/vbench_smoke.sh build {VENV_HINT})"
            )
        raise RuntimeError(f"VBench failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}{hint}")
    lines = proc.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError("VBench printed no result path")
    return parse_results(lines[-1])
