"""Teacher and students on held-out prompts through `qvgen.eval.compare_models`, and the demo's table.

Prompt adherence is one of the scorers `compare_models` runs on each video's exact frames (h264's 4:2:0
chroma subsampling would smear the colours of 64×64 shapes); every number in a `Row` is read from the
typed `EvalReport`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from tqdm.auto import tqdm

if TYPE_CHECKING:
    from qvgen.eval import AdherenceReport, EvalReport, GeneratedVideo, MeanCI, VariantReport, VariantSummary


@dataclass(frozen=True, slots=True)
class Row:
    """One model's line of the table: its adherence over the held-out videos and its summary metrics."""

    name: str
    scores: AdherenceReport
    summary: VariantSummary

    @classmethod
    def from_report(cls, model: VariantReport) -> Row:
        from qvgen.eval import summarize_adherence

        records = [s.adherence for s in model.samples]
        missing = [s.prompt for s, a in zip(model.samples, records, strict=True) if a is None]
        if missing:
            raise ValueError(f"{model.name}: no adherence score for {missing[:3]} (run with AdherenceScorer)")
        return cls(model.name, summarize_adherence([a for a in records if a is not None]), model.summary)

    @property
    def colour(self) -> float:
        return self.scores.colour

    @property
    def shape(self) -> float:
        return self.scores.shape

    @property
    def motion(self) -> float:
        return self.scores.motion

    @property
    def adherence(self) -> float:
        """Mean of colour, shape and motion (unscorable videos count 0)."""
        return self.scores.overall

    @property
    def unscorable(self) -> int:
        return self.scores.num_unscorable

    @property
    def adherence_vs_teacher(self) -> MeanCI | None:
        """This model's adherence − the teacher's, paired over the same videos (None for the teacher)."""
        return self.summary.vs_teacher.get("adherence.overall")

    @property
    def flickering(self) -> float:
        return self.summary.temporal_flickering

    @property
    def psnr_db(self) -> float | None:
        return self.summary.psnr_db

    @property
    def latent_mse(self) -> float | None:
        return self.summary.latent_mse

    @property
    def step_relative_mse(self) -> float | None:
        return self.summary.step_relative_mse


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What `evaluate` produced: the typed report, one row per model, and the report files."""

    report: EvalReport
    rows: tuple[Row, ...]
    report_html: Path
    report_json: Path


def evaluate(
    teacher: Path,
    variants: Sequence[tuple[str, Path]],
    prompts: Sequence[str],
    out_dir: Path,
    *,
    seed: int,
    sampling_steps: int,
    guidance_scale: float,
    clip_shape: tuple[int, int, int],
    videos_per_prompt: int = 1,
    batch_size: int = 8,
    progress: bool = True,
    lora: Path | None = None,
) -> Evaluation:
    """Teacher + deploy students on `prompts` (video k of the plan seeded `seed + k`) → report.json/html in
    `out_dir`, adherence scored on the exact frames → one `Row` per model (teacher first).

    `lora`: a diffusers-format LoRA folder (e.g. `qvgen train-lora`'s); each model then also runs with it
    loaded (``pipe.load_lora_weights``), as a row named ``<model>+lora`` right after the model's own.

    `batch_size` videos share one pipeline call (each keeps its own seeded noise); on a small CPU this is
    several times faster than one video per call."""
    import torch

    from qvgen.core import file_sha256
    from qvgen.eval import (
        AdherenceScorer,
        Contender,
        DeployModel,
        FullPrecisionModel,
        LoadedModel,
        SamplingSettings,
        compare_models,
        load_model,
        plan_items,
    )

    frames, height, width = clip_shape
    settings = SamplingSettings(
        height=height, width=width, num_frames=frames, num_inference_steps=sampling_steps,
        guidance_scale=guidance_scale, fps=8,
    )  # fmt: skip
    cpu = torch.device("cpu")
    items = plan_items(list(prompts), videos_per_prompt, seed)
    runs = (1 + len(variants)) * (1 if lora is None else 2)
    bar = tqdm(total=runs * len(items), desc="sample", unit="video", disable=not progress)

    def contender(
        name: str, source: FullPrecisionModel | DeployModel, adapter: Path | None = None
    ) -> Contender:
        def load() -> LoadedModel:
            model = load_model("wan", source, "float32", cpu)
            if adapter is None:
                return model
            from dataclasses import replace

            from qvgen.demo.lora_training import LORA_WEIGHTS_NAME
            from qvgen.models import enable_lora_

            enable_lora_(model.components.transformer)  # the deploy layers need it; the teacher's don't
            model.pipeline.load_lora_weights(str(adapter), adapter_name="lora")
            digest = file_sha256(adapter / LORA_WEIGHTS_NAME)
            return replace(model, facts={**model.identity(), "lora.sha256": digest})

        kind: Literal["full_precision", "deploy"] = source.kind
        return Contender(name if adapter is None else f"{name}+lora", kind, str(source.path), load)

    models = [(n, DeployModel(path=p, base=teacher)) for n, p in variants]
    others = [contender(n, s) for n, s in models]
    if lora is not None:
        others = [contender("teacher", FullPrecisionModel(path=teacher), lora)]
        for n, s in models:
            others += [contender(n, s), contender(n, s, lora)]

    def tick(_: GeneratedVideo) -> None:
        bar.update()

    report = compare_models(
        "wan",
        contender("teacher", FullPrecisionModel(path=teacher)),
        others,
        items,
        settings,
        out_dir,
        scorers=(AdherenceScorer(),),
        on_video=tick,
        batch_size=batch_size,
        embed_videos=True,
    )
    bar.close()
    rows = tuple(Row.from_report(m) for m in (report.teacher, *report.variants))
    return Evaluation(report, rows, out_dir / "report.html", out_dir / "report.json")


def _signed(diff: MeanCI | None) -> str:
    if diff is None:
        return "—"
    return f"{diff.mean:+.3f}" if diff.ci95 is None else f"{diff.mean:+.3f} ± {diff.ci95:.3f}"


def format_table(rows: Sequence[Row]) -> str:
    """A plain-text table: adherence colour/shape/motion, flickering, PSNR and latent MSE vs the teacher."""
    head = (
        "model",
        "colour",
        "shape",
        "motion",
        "unscorable",
        "Δ adherence (paired, 95 % CI)",
        "flicker",
        "PSNR dB",
        "latent MSE",
        "step relMSE",
    )
    lines = [head]
    for r in rows:
        lines.append(
            (
                r.name,
                f"{r.colour:.3f}",
                f"{r.shape:.3f}",
                f"{r.motion:.3f}",
                f"{r.unscorable}/{r.scores.num_videos}",
                _signed(r.adherence_vs_teacher),
                f"{r.flickering:.5f}",
                "—" if r.psnr_db is None else f"{r.psnr_db:.3f}",
                "—" if r.latent_mse is None else f"{r.latent_mse:.5f}",
                "—" if r.step_relative_mse is None else f"{r.step_relative_mse:.5f}",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join(" | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines)
