"""`qvgen-eval compare`: teacher and quantized variants at the same seeds → metrics → JSON + HTML report.

The teacher runs first; per video its frames, final latents and every transformer output are kept in a
safetensors file under `out_dir/teacher/trajectories/`, so one model at a time is in memory. Each
variant then runs the same prompts and seeds with the same recorder, and is scored against them.
Every `VideoScorer` passed in scores every video on its exact frames (not the encoded mp4); a caller that
wants the frames themselves gets each `GeneratedVideo` through `on_video` as soon as it exists.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from qvgen.core import Provenance, atomic_write, claim_output_dir, write_provenance
from qvgen.data import parse_caption
from qvgen.eval import metrics
from qvgen.eval.config import CompareConfig, ModelSource, SamplingSettings
from qvgen.eval.loading import LoadedModel, base_folder, load_model
from qvgen.eval.prompts import SampleItem, plan_items
from qvgen.eval.report import (
    EvalReport,
    FidelityMetrics,
    SampleRecord,
    StepErrorRecord,
    VariantReport,
    VideoMetrics,
    summarize,
    write_report,
)
from qvgen.eval.sample import DEFAULT_FPS, Generated, generate, pipeline_kwargs, resolve_prompts
from qvgen.eval.scorer import AdherenceScorer, VideoScorer
from qvgen.eval.sidecar import COMPARE_TOOL, sidecar_path, video_provenance
from qvgen.eval.vbench import VBenchConfig, check_weights, default_cache_dir, run_vbench
from qvgen.eval.video import read_video, write_video

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Run:
    """One video of one model: what the metrics need."""

    generated: Generated
    calls: list[metrics.TransformerCall]
    video_path: Path


def run_item(model: LoadedModel, item: SampleItem, kwargs: dict[str, Any], video_path: Path, fps: int) -> Run:
    """Generate `item` while recording the transformer calls, and write its mp4."""
    with metrics.record_transformer_calls(model.components.transformer) as calls:
        gen = generate(model, item, kwargs)
    write_video(gen.frames, video_path, fps)
    return Run(gen, calls, video_path)


def _item_rows(t: torch.Tensor, j: int, batch: int) -> torch.Tensor:
    """Rows of item `j` in a batched tensor of `k · batch` rows (`k` > 1 when CFG concatenates inputs)."""
    if t.ndim == 0 or t.shape[0] == 1:
        return t
    if t.shape[0] % batch:
        raise RuntimeError(f"a batched transformer call has {t.shape[0]} rows for a batch of {batch} videos")
    return t[j::batch] if t.shape[0] > batch else t[j : j + 1]


@torch.no_grad()
def run_batch(
    model: LoadedModel,
    items: Sequence[SampleItem],
    kwargs: dict[str, Any],
    video_paths: Sequence[Path],
    fps: int,
) -> list[Run]:
    """Generate `items` in one pipeline call (one CPU generator per item, seeded by `item.seed`, so each
    video's initial noise is what it would be alone), record each item's transformer calls, write the mp4s."""
    if len(items) == 1:
        return [run_item(model, items[0], kwargs, video_paths[0], fps)]
    final: dict[str, torch.Tensor] = {}

    def keep_latents(
        pipe: Any, step: int, t: Any, tensors: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        final["latents"] = tensors["latents"]
        return {}

    with metrics.record_transformer_calls(model.components.transformer) as calls:
        out = model.pipeline(
            prompt=[i.prompt for i in items],
            generator=[torch.Generator("cpu").manual_seed(i.seed) for i in items],
            output_type="np",
            callback_on_step_end=keep_latents,
            callback_on_step_end_tensor_inputs=["latents"],
            **kwargs,
        )
    if "latents" not in final:
        raise RuntimeError("the pipeline ran no denoising step; check num_inference_steps")
    latents = final["latents"].detach().to("cpu", torch.float32)
    runs = []
    for j, path in enumerate(video_paths):
        gen = Generated(frames=np.asarray(out.frames[j], dtype=np.float32), latents=latents[j : j + 1])
        own = [
            metrics.TransformerCall(
                _item_rows(c.timestep, j, len(items)), _item_rows(c.output, j, len(items))
            )
            for c in calls
        ]
        write_video(gen.frames, path, fps)
        runs.append(Run(gen, own, path))
    return runs


def _run_chunk(
    model: LoadedModel,
    chunk: list[tuple[int, SampleItem]],
    kwargs: dict[str, Any],
    folder: Path,
    fps: int,
    sidecar: Callable[[SampleItem], Provenance],
) -> list[Run]:
    """`run_batch` on `chunk` into `folder`, each mp4 followed by its sidecar (the old one removed first)."""
    paths = [folder / item.filename for _, item in chunk]
    for p in paths:
        sidecar_path(p).unlink(missing_ok=True)
    runs = run_batch(model, [i for _, i in chunk], kwargs, paths, fps)
    for (_, item), run in zip(chunk, runs, strict=True):
        write_provenance(sidecar_path(run.video_path), sidecar(item))
    return runs


def _chunks(items: Sequence[SampleItem], size: int) -> list[list[tuple[int, SampleItem]]]:
    indexed = list(enumerate(items))
    return [indexed[i : i + size] for i in range(0, len(indexed), size)]


def save_trajectory(run: Run, path: Path) -> None:
    """Frames, final latents and transformer calls of `run` as one safetensors file (atomic)."""
    tensors = {"frames": torch.from_numpy(run.generated.frames), "latents": run.generated.latents}
    for i, c in enumerate(run.calls):
        tensors[f"call.{i}.timestep"] = c.timestep
        tensors[f"call.{i}.output"] = c.output
    atomic_write(path, lambda tmp: save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp)))


def load_trajectory(path: Path) -> tuple[Generated, list[metrics.TransformerCall]]:
    """Inverse of `save_trajectory`."""
    t = load_file(str(path))
    n = sum(1 for k in t if k.endswith(".output"))
    calls = [metrics.TransformerCall(t[f"call.{i}.timestep"], t[f"call.{i}.output"]) for i in range(n)]
    return Generated(t["frames"].numpy(), t["latents"]), calls


def video_metrics(path: Path, report_dir: Path) -> VideoMetrics:
    """Per-video metrics from the mp4 as written (VBench scores decoded files too)."""
    frames = read_video(path)
    return VideoMetrics(
        path=path.relative_to(report_dir).as_posix(),
        temporal_flickering=metrics.temporal_flickering(frames),
        motion_energy=metrics.motion_energy(frames),
    )


def fidelity(
    student: Generated,
    student_calls: list[metrics.TransformerCall],
    teacher: Generated,
    teacher_calls: list[metrics.TransformerCall],
) -> FidelityMetrics:
    """A variant's video against the teacher's at the same seed."""
    steps = metrics.step_errors(student_calls, teacher_calls)
    return FidelityMetrics(
        latent_mse=metrics.latent_mse(student.latents, teacher.latents),
        psnr_db=metrics.psnr(student.frames, teacher.frames),
        ssim=metrics.ssim(student.frames, teacher.frames),
        motion_energy_ratio=metrics.motion_energy_ratio(student.frames, teacher.frames),
        step_errors=tuple(
            StepErrorRecord(step=e.step, timestep=e.timestep, mse=e.mse, relative_mse=e.relative_mse)
            for e in steps
        ),
    )


def resolve_device(requested: str) -> torch.device:
    """ "auto": cuda when available, else cpu."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


@dataclass(frozen=True, slots=True)
class Contender:
    """A model to compare: its report name, kind, where it came from, and how to load it (lazily)."""

    name: str
    kind: Literal["full_precision", "fake_quant", "deploy"]
    source: str
    load: Callable[[], LoadedModel]


@dataclass(frozen=True, slots=True)
class GeneratedVideo:
    """One video as `compare_models` produced it: the model, the item, the exact frames and its record."""

    model: str
    item: SampleItem
    frames: np.ndarray
    """[F, H, W, 3] float32 in [0, 1], as the pipeline returned them (before mp4 encoding)."""
    record: SampleRecord


def _scores(scorers: Sequence[VideoScorer], frames: np.ndarray, prompt: str) -> dict[str, Any]:
    return {s.name: s.score(frames, prompt) for s in scorers}


def compare_models(
    family: Literal["wan", "cogvideox"],
    teacher: Contender,
    variants: Sequence[Contender],
    items: Sequence[SampleItem],
    settings: SamplingSettings,
    out_dir: Path,
    *,
    scorers: Sequence[VideoScorer] = (),
    on_video: Callable[[GeneratedVideo], None] | None = None,
    batch_size: int = 1,
    embed_videos: bool = True,
) -> EvalReport:
    """Sample `teacher` then each variant on `items`, score them, write report.json and report.html.

    Every scorer runs on every video's exact frames; its results land in each `SampleRecord.scores` and
    in each model's `summary.scores` under the scorer's name (names must be unique). `on_video` (if set)
    receives every `GeneratedVideo` as it is produced, teacher first. `batch_size` > 1 samples that many
    items per pipeline call (each with its own seeded generator; every model is batched the same way, so
    the fidelity metrics compare like with like).
    """
    if batch_size < 1:
        raise ValueError(f"compare_models: batch_size must be >= 1, got {batch_size}")
    names = [s.name for s in scorers]
    if len(set(names)) != len(names):
        raise ValueError(f"compare_models: scorer names must be unique, got {names}")
    out_dir.mkdir(parents=True, exist_ok=True)
    fps = settings.fps or DEFAULT_FPS[family]

    def sidecars(facts: dict[str, str]) -> Callable[[SampleItem], Provenance]:
        return lambda item: video_provenance(COMPARE_TOOL, family, facts, item, settings, fps)

    model = teacher.load()
    facts = model.identity()
    kwargs = pipeline_kwargs(model, settings)
    traj_dir = out_dir / teacher.name / "trajectories"
    teacher_samples = []
    for chunk in _chunks(items, batch_size):
        for (k, item), run in zip(
            chunk, _run_chunk(model, chunk, kwargs, out_dir / teacher.name, fps, sidecars(facts)), strict=True
        ):
            save_trajectory(run, traj_dir / f"{k:05d}.safetensors")
            record = SampleRecord(
                prompt=item.prompt,
                index=item.index,
                seed=item.seed,
                video=video_metrics(run.video_path, out_dir),
                scores=_scores(scorers, run.generated.frames, item.prompt),
            )
            teacher_samples.append(record)
            if on_video is not None:
                on_video(GeneratedVideo(teacher.name, item, run.generated.frames, record))
    del model
    teacher_report = VariantReport(
        name=teacher.name,
        kind=teacher.kind,
        source=teacher.source,
        samples=tuple(teacher_samples),
        summary=summarize(teacher_samples),
        model_digest=facts.get("model.digest"),
    )

    reports = []
    for variant in variants:
        model = variant.load()
        facts = model.identity()
        samples = []
        for chunk in _chunks(items, batch_size):
            for (k, item), run in zip(
                chunk,
                _run_chunk(model, chunk, kwargs, out_dir / variant.name, fps, sidecars(facts)),
                strict=True,
            ):
                ref, ref_calls = load_trajectory(traj_dir / f"{k:05d}.safetensors")
                record = SampleRecord(
                    prompt=item.prompt,
                    index=item.index,
                    seed=item.seed,
                    video=video_metrics(run.video_path, out_dir),
                    fidelity=fidelity(run.generated, run.calls, ref, ref_calls),
                    scores=_scores(scorers, run.generated.frames, item.prompt),
                )
                samples.append(record)
                if on_video is not None:
                    on_video(GeneratedVideo(variant.name, item, run.generated.frames, record))
        del model
        reports.append(
            VariantReport(
                name=variant.name,
                kind=variant.kind,
                source=variant.source,
                samples=tuple(samples),
                summary=summarize(samples, teacher_samples),
                model_digest=facts.get("model.digest"),
            )
        )
        logger.info("%s: %s", variant.name, reports[-1].summary.scalars())

    report = EvalReport(
        family=family,
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        pipeline_kwargs={k: v for k, v in kwargs.items() if isinstance(v, int | float | str | bool | None)},
        teacher=teacher_report,
        variants=tuple(reports),
    )
    write_report(report, out_dir, embed_videos=embed_videos)
    return report


def compare(cfg: CompareConfig) -> EvalReport:
    """`qvgen-eval compare`: the models of `cfg` at the same prompts and seeds.

    Once the config is checked, `out_dir` is claimed (`claim_output_dir`): empty or already this tool's,
    and neither equal to, inside nor around a model folder or the prompt file."""
    device = resolve_device(cfg.device)

    def contender(name: str, source: ModelSource) -> Contender:
        return Contender(
            name, source.kind, str(source.path), lambda: load_model(cfg.family, source, cfg.dtype, device)
        )

    cache_dir = None
    if cfg.vbench is not None:  # fail on missing weights before sampling anything
        cache_dir = (cfg.vbench.cache_dir or default_cache_dir()).expanduser().resolve()
        check_weights(cfg.vbench.dimensions, cache_dir)
    prompts = resolve_prompts(cfg.prompts)
    if cfg.adherence:  # file prompts: the config could not check them; refuse before any model loads
        for prompt in prompts:
            try:
                parse_caption(prompt)
            except ValueError as err:
                raise ValueError(
                    f"{cfg.prompts.file}: adherence: true needs procedural-world captions; prompt {prompt!r}: {err}"
                ) from err
    items = plan_items(prompts, cfg.prompts.videos_per_prompt, cfg.seed)
    models = (cfg.teacher, *(v.model for v in cfg.variants))
    inputs = [p for m in models for p in (m.path, base_folder(m))] + [cfg.prompts.file]
    out_dir = claim_output_dir(cfg.out_dir, COMPARE_TOOL, inputs=inputs, what="compare out_dir")
    report = compare_models(
        cfg.family,
        contender("teacher", cfg.teacher),
        [contender(v.name, v.model) for v in cfg.variants],
        items,
        cfg.sampling,
        out_dir,
        embed_videos=cfg.embed_videos,
        scorers=(AdherenceScorer(),) if cfg.adherence else (),
    )
    if cfg.vbench is None:
        return report
    scores = {}
    for m in (report.teacher, *report.variants):
        vb = VBenchConfig(
            videos_dir=out_dir / m.name,
            dimensions=cfg.vbench.dimensions,
            output_dir=out_dir / "vbench" / m.name,
            cache_dir=cache_dir,
            python=cfg.vbench.python,
            device=cfg.vbench.device,
            name=m.name,
        )
        scores[m.name] = run_vbench(vb)
    report = report.model_copy(update={"vbench": scores})
    write_report(report, out_dir, embed_videos=cfg.embed_videos)
    return report
