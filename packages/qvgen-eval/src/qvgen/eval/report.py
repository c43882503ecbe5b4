"""`EvalReport` (pydantic, JSON on disk) and its self-contained HTML page with videos and SVG plots."""

from __future__ import annotations

import base64
import html
import math
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import imageio.v3 as iio
from pydantic import Field

from qvgen.core import Frozen, atomic_write_text
from qvgen.eval.adherence import VideoAdherence
from qvgen.eval.plots import bar_plot, fmt, line_plot
from qvgen.eval.scorer import ScoreSummary, VideoScore, score_columns, summarize_scores
from qvgen.eval.sidecar import check_video_sidecar
from qvgen.eval.stats import MeanCI, mean_ci, paired_diff_ci
from qvgen.eval.vbench import VBenchReport
from qvgen.eval.video import read_video


class StepErrorRecord(Frozen):
    step: int
    timestep: float
    mse: float
    relative_mse: float
    """Σ(student − teacher)² / Σ teacher² over the step's transformer outputs."""


class VideoMetrics(Frozen):
    """Metrics of one video on its own, from the written mp4."""

    path: str
    """Relative to the report folder."""
    temporal_flickering: float
    """VBench's definition: (255 − mean |frame_{t+1} − frame_t|) / 255; 1.0 is perfectly steady."""
    motion_energy: float
    """Mean |frame_{t+1} − frame_t| on the [0, 1] scale."""


class FidelityMetrics(Frozen):
    """One variant's video against the teacher's at the same seed."""

    latent_mse: float
    psnr_db: float
    ssim: float
    motion_energy_ratio: float
    """Variant / teacher motion energy: ≈1 faithful, →0 frozen frames, ≫1 added jitter or noise."""
    step_errors: tuple[StepErrorRecord, ...]


class SampleRecord(Frozen):
    prompt: str
    index: int
    seed: int
    video: VideoMetrics
    fidelity: FidelityMetrics | None = None
    """None for the teacher."""
    scores: dict[str, VideoScore] = Field(default_factory=dict)
    """Per scorer name (`VideoScorer.name`), its verdict on the exact generated frames."""

    @property
    def adherence(self) -> VideoAdherence | None:
        """The prompt-adherence record, when an adherence scorer ran."""
        return next((s for s in self.scores.values() if isinstance(s, VideoAdherence)), None)


class VariantSummary(Frozen):
    """Means over one model's samples; fidelity fields are None for the teacher."""

    temporal_flickering: float
    motion_energy: float
    latent_mse: float | None = None
    psnr_db: float | None = None
    ssim: float | None = None
    motion_energy_ratio: float | None = None
    step_relative_mse: float | None = None
    """Mean over sampling steps and videos of the denoiser output's relative MSE against the teacher."""
    scores: dict[str, ScoreSummary] = Field(default_factory=dict)
    """Per scorer: mean and 95 % CI of each value, and the unscorable count."""
    intervals: dict[str, MeanCI] = Field(default_factory=dict)
    """Mean and 95 % CI over videos of the per-video fidelity metrics (psnr_db, latent_mse, ssim,
    step_relative_mse: each video's mean over sampling steps); empty for the teacher."""
    vs_teacher: dict[str, MeanCI] = Field(default_factory=dict)
    """`scorer.value` → this model − the teacher, paired over the same (prompt, index, seed), mean and
    95 % CI; empty for the teacher."""

    def scalars(self) -> dict[str, float]:
        """Every mean as `name` (metrics) or `scorer.value` (scores), for printing."""
        out = {
            k: v
            for k, v in self.model_dump(exclude={"scores", "intervals", "vs_teacher"}).items()
            if v is not None
        }
        for scorer, summary in self.scores.items():
            out |= {f"{scorer}.{k}": m.mean for k, m in summary.values.items()}
        return out


class VariantReport(Frozen):
    name: str
    kind: Literal["full_precision", "fake_quant", "deploy"]
    source: str
    samples: tuple[SampleRecord, ...]
    summary: VariantSummary
    model_digest: str | None = None
    """The `model.digest` fact of the model that made the videos (`qvgen.eval.model_facts`); every video's
    sidecar must name it (`write_report` checks). None in reports written before sidecars existed."""


class EvalReport(Frozen):
    """`qvgen-eval compare` output: teacher and variants at the same prompts and seeds."""

    schema_version: Literal[2] = 2
    family: Literal["wan", "cogvideox"]
    created: str
    pipeline_kwargs: dict[str, Any]
    """The resolved sampling settings every model ran with."""
    teacher: VariantReport
    variants: tuple[VariantReport, ...]
    vbench: dict[str, VBenchReport] = Field(default_factory=dict)
    """Per model name, where VBench was run."""
    training_curves: dict[str, tuple[tuple[int, float], ...]] = Field(default_factory=dict)
    """Per run name, (step, training loss) points that the caller attached (shown as a plot)."""


def _sample_key(s: SampleRecord) -> tuple[str, int, int]:
    return (s.prompt, s.index, s.seed)


def paired_vs_teacher(samples: Sequence[SampleRecord], teacher: Sequence[SampleRecord]) -> dict[str, MeanCI]:
    """`scorer.value` → samples − teacher, paired on (prompt, index, seed), for every scorer both carry."""
    mine = {_sample_key(s): s for s in samples}
    theirs = {_sample_key(s): s for s in teacher}
    if mine.keys() != theirs.keys():
        odd = sorted(mine.keys() ^ theirs.keys())[:3]
        raise ValueError(f"paired_vs_teacher: the models sampled different videos, e.g. {odd}")
    keys = sorted(mine)
    out: dict[str, MeanCI] = {}
    scorers = dict.fromkeys(k for s in samples for k in s.scores)
    for scorer in scorers:
        if not all(scorer in mine[k].scores and scorer in theirs[k].scores for k in keys):
            continue
        a = score_columns([mine[k].scores[scorer] for k in keys])
        b = score_columns([theirs[k].scores[scorer] for k in keys])
        for value in a.keys() & b.keys():
            if len(a[value]) == len(b[value]) == len(keys):
                out[f"{scorer}.{value}"] = paired_diff_ci(a[value], b[value])
    return dict(sorted(out.items()))


def summarize(
    samples: Sequence[SampleRecord], teacher: Sequence[SampleRecord] | None = None
) -> VariantSummary:
    """Means of the metrics over `samples`, a `ScoreSummary` per scorer, and with `teacher` (its samples
    at the same prompts and seeds) the paired differences of every score value."""
    if not samples:
        raise ValueError("summarize got no samples")
    n = len(samples)
    out: dict[str, Any] = {
        "temporal_flickering": math.fsum(s.video.temporal_flickering for s in samples) / n,
        "motion_energy": math.fsum(s.video.motion_energy for s in samples) / n,
    }
    fid = [s.fidelity for s in samples if s.fidelity is not None]
    if fid:
        m = len(fid)
        out["latent_mse"] = math.fsum(f.latent_mse for f in fid) / m
        out["psnr_db"] = math.fsum(f.psnr_db for f in fid) / m
        out["ssim"] = math.fsum(f.ssim for f in fid) / m
        out["motion_energy_ratio"] = math.fsum(f.motion_energy_ratio for f in fid) / m
        steps = [e.relative_mse for f in fid for e in f.step_errors]
        out["step_relative_mse"] = math.fsum(steps) / len(steps) if steps else None
        intervals = {
            "psnr_db": mean_ci([f.psnr_db for f in fid]),
            "latent_mse": mean_ci([f.latent_mse for f in fid]),
            "ssim": mean_ci([f.ssim for f in fid]),
        }
        if all(f.step_errors for f in fid):
            per_video = [math.fsum(e.relative_mse for e in f.step_errors) / len(f.step_errors) for f in fid]
            intervals["step_relative_mse"] = mean_ci(per_video)
        out["intervals"] = intervals
    names = dict.fromkeys(k for s in samples for k in s.scores)
    out["scores"] = {k: summarize_scores([s.scores[k] for s in samples if k in s.scores]) for k in names}
    if teacher is not None:
        out["vs_teacher"] = paired_vs_teacher(samples, teacher)
    return VariantSummary(**out)


def load_report(path: str | Path) -> EvalReport:
    """Read an `EvalReport` JSON; errors name the file."""
    p = Path(path)
    try:
        return EvalReport.model_validate_json(p.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read eval report {p}: {e}") from e


def write_report(report: EvalReport, out_dir: str | Path, *, embed_videos: bool = True) -> tuple[Path, Path]:
    """Write `report.json` and `report.html` into `out_dir` (video paths are relative to it), atomically.

    Refuses (`ValueError`) a video whose sidecar is missing or names another model than its row
    (`check_video_sidecar`): a report never scores one model's video as another's."""
    out = Path(out_dir)
    for m in (report.teacher, *report.variants):
        for s in m.samples:
            check_video_sidecar(out.resolve() / s.video.path, row=m.name, kind=m.kind, digest=m.model_digest)
    json_path = atomic_write_text(out / "report.json", report.model_dump_json(indent=2))
    html_path = atomic_write_text(out / "report.html", render_html(report, out, embed_videos=embed_videos))
    return json_path, html_path


# --- HTML --------------------------------------------------------------------------------------------


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.3rem .5rem;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
video{display:block;width:256px;image-rendering:pixelated;background:#000}
.cell small{display:block;color:#555}.plots{display:flex;flex-wrap:wrap;gap:1.5rem}
#video-status{color:#555}
"""

_STATUS_JS = """
(function(){
  var vids=document.querySelectorAll('video'),ok=0,bad=0,el=document.getElementById('video-status');
  function show(){el.dataset.total=vids.length;el.dataset.loaded=ok;el.dataset.failed=bad;
    el.textContent=ok+' of '+vids.length+' videos loaded'+(bad?', '+bad+' failed (codec not supported?)':'');}
  vids.forEach(function(v){
    if(v.readyState>=2){ok++;}else{
      v.addEventListener('loadeddata',function(){ok++;show();},{once:true});
      v.addEventListener('error',function(){bad++;show();},{once:true});}
  });
  show();
})();
"""


def _video_src(report_dir: Path, rel: str, embed: bool) -> str:
    if not embed:  # a prompt's "#", "?" or "%" in the file name must not end the path
        return html.escape(urllib.parse.quote(rel), quote=True)
    data = (report_dir / rel).read_bytes()
    return "data:video/mp4;base64," + base64.b64encode(data).decode("ascii")


def _poster(report_dir: Path, rel: str) -> str:
    """The video's middle frame as a PNG data URI (what shows before playback starts)."""
    frames = read_video(report_dir / rel)
    png = iio.imwrite("<bytes>", frames[len(frames) // 2], extension=".png")
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _summary_table(models: Sequence[VariantReport]) -> list[str]:
    esc = html.escape
    scalars = [m.summary.scalars() for m in models]
    keys = [k for k in VariantSummary.model_fields if k != "scores" and any(k in s for s in scalars)]
    out = ["<h2>Summary</h2><table><tr><th>model</th><th>kind</th>"]
    out += [f"<th>{esc(k)}</th>" for k in keys] + ["</tr>"]
    for m, sc in zip(models, scalars, strict=True):
        ci = m.summary.intervals
        cells = "".join(
            f"<td class='num'>{esc(str(ci[k]) if k in ci else fmt(sc[k]))}</td>" if k in sc else "<td>—</td>"
            for k in keys
        )
        out.append(f"<tr><td>{esc(m.name)}</td><td>{esc(m.kind)}</td>{cells}</tr>")
    out.append("</table><p>Fidelity columns: mean ± 95 % CI over videos, against the teacher's video at the "
               "same prompt and seed.</p>")  # fmt: skip
    diffs = list(dict.fromkeys(k for m in models for k in m.summary.vs_teacher))
    if diffs:
        out.append("<h2>Difference from the teacher</h2><p>model − teacher per video, paired over the same "
                   "prompts and seeds: mean ± 95 % CI (an interval that excludes 0 is a measured "
                   "difference).</p><table><tr><th>model</th>")  # fmt: skip
        out += [f"<th>{esc(k)}</th>" for k in diffs] + ["</tr>"]
        for m in models[1:]:
            vs = m.summary.vs_teacher
            cells = "".join(
                f"<td class='num'>{esc(str(vs[k]))}</td>" if k in vs else "<td>—</td>" for k in diffs
            )
            out.append(f"<tr><td>{esc(m.name)}</td>{cells}</tr>")
        out.append("</table>")
    for scorer in dict.fromkeys(k for m in models for k in m.summary.scores):
        values = list(dict.fromkeys(v for m in models if scorer in m.summary.scores
                                    for v in m.summary.scores[scorer].values))  # fmt: skip
        out.append(f"<h2>Scores: {esc(scorer)}</h2><p>mean ± 95 % CI over videos; unscorable videos count "
                   "as 0 and are counted.</p><table><tr><th>model</th>")  # fmt: skip
        out += [f"<th>{esc(v)}</th>" for v in values] + ["<th>unscorable</th></tr>"]
        for m in models:
            summary = m.summary.scores.get(scorer)
            if summary is None:
                continue
            cells = "".join(
                f"<td class='num' data-key='{esc(scorer)}.{esc(v)}'>{esc(str(summary.values[v]))}</td>"
                if v in summary.values else "<td>—</td>" for v in values
            )  # fmt: skip
            out.append(f"<tr><td>{esc(m.name)}</td>{cells}"
                       f"<td class='num'>{summary.num_unscorable} / {summary.num_videos}</td></tr>")  # fmt: skip
        out.append("</table>")
    return out


def _sample_notes(s: SampleRecord) -> str:
    notes = f"flicker {fmt(s.video.temporal_flickering)}"
    if s.fidelity:
        notes += f" · PSNR {fmt(s.fidelity.psnr_db)} dB · SSIM {fmt(s.fidelity.ssim)}"
    a = s.adherence
    if a is not None:
        if a.unscorable is not None:
            notes += f" · adherence: unscorable ({a.unscorable})"
        else:
            notes += f" · adherence {fmt(a.value('overall'))} (colour {fmt(a.value('colour'))}, shape " \
                     f"{fmt(a.value('shape'))}, motion {fmt(a.value('motion'))})"  # fmt: skip
            seen = "; ".join(
                f"{o.claim.phrase} → " + ("nothing" if o.matched is None else
                f"{o.matched.colour} {o.matched.shape} {o.matched.direction or 'static'}")
                for o in a.objects
            )  # fmt: skip
            notes += f" · seen: {seen}"
    return notes


def render_html(report: EvalReport, report_dir: Path, *, embed_videos: bool = True) -> str:
    """The report as one HTML page: summary tables, SVG plots, looping videos per prompt and seed."""
    models = [report.teacher, *report.variants]
    esc = html.escape
    out = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>qvgen eval: {esc(report.family)}</title><style>{_CSS}</style></head><body>",
        f"<h1>qvgen eval — {esc(report.family)}</h1>",
        f"<p>{esc(report.created)} · settings: <code>{esc(str(report.pipeline_kwargs))}</code></p>",
        "<p id='video-status'>videos loading…</p>",
        *_summary_table(models),
    ]
    out.append("<h2>Plots</h2><div class='plots'>")
    order = [m.name for m in models]
    if report.training_curves:
        curves = {k: [(float(x), y) for x, y in v] for k, v in report.training_curves.items()}
        out.append(line_plot("training loss", curves, "step", True, list(curves)))
    series: dict[str, list[tuple[float, float]]] = {}
    for v in report.variants:
        per_step: dict[int, list[float]] = {}
        for s in v.samples:
            for e in s.fidelity.step_errors if s.fidelity else ():
                per_step.setdefault(e.step, []).append(e.relative_mse)
        series[v.name] = [(k, sum(x) / len(x)) for k, x in sorted(per_step.items())]
    out.append(line_plot("denoiser output relative MSE vs teacher", series, "sampling step", True, order))
    for key in ("psnr_db", "ssim", "motion_energy_ratio"):
        values = {v.name: getattr(v.summary, key) for v in report.variants}
        out.append(bar_plot(key, {k: x for k, x in values.items() if x is not None}, order))
    if any("adherence" in m.summary.scores for m in models):
        adherence = {m.name: m.summary.scores["adherence"].values["overall"].mean for m in models
                     if "adherence" in m.summary.scores}  # fmt: skip
        out.append(bar_plot("prompt adherence (overall)", adherence, order))
    out.append(
        bar_plot("temporal_flickering", {m.name: m.summary.temporal_flickering for m in models}, order)
    )
    out.append("</div>")

    for name, vb in report.vbench.items():
        out.append(
            f"<h2>VBench — {esc(name)}</h2><table><tr><th>dimension</th><th>score</th><th>normalised</th></tr>"
        )
        for dim, r in vb.dimensions.items():
            out.append(
                f"<tr><td>{esc(dim)}</td><td class='num'>{fmt(r.score)}</td><td class='num'>{fmt(r.normalized)}</td></tr>"
            )
        for label, val in (("quality", vb.quality), ("semantic", vb.semantic), ("total", vb.total)):
            out.append(f"<tr><th>{label}</th><td colspan='2'>{'—' if val is None else fmt(val)}</td></tr>")
        out.append("</table>")

    out.append("<h2>Videos</h2><p>Each video loops; its poster is the middle frame.</p>")
    out.append("<table><tr><th>prompt</th>")
    out += [f"<th>{esc(m.name)}</th>" for m in models] + ["</tr>"]
    for i, t in enumerate(report.teacher.samples):
        out.append(f"<tr><td>{esc(t.prompt)}<small> #{t.index}, seed {t.seed}</small></td>")
        for m in models:
            s = m.samples[i]
            src = _video_src(report_dir, s.video.path, embed_videos)
            poster = _poster(report_dir, s.video.path)
            out.append(
                f'<td class=\'cell\'><video src="{src}" poster="{poster}" muted loop autoplay playsinline '
                f"preload='auto'></video><small>{esc(_sample_notes(s))}</small></td>"
            )
        out.append("</tr>")
    out.append(f"</table><script>{_STATUS_JS}</script></body></html>")
    return "\n".join(out)
