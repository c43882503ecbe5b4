"""`EvalReport` (pydantic, JSON on disk) and its self-contained HTML page with videos and SVG plots."""

from __future__ import annotations

import base64
import html
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from qvgen.eval.vbench import VBenchReport


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class StepErrorRecord(_Frozen):
    step: int
    timestep: float
    mse: float
    relative_mse: float
    """Σ(student − teacher)² / Σ teacher² over the step's transformer outputs."""


class VideoMetrics(_Frozen):
    """Metrics of one video on its own, from the written mp4."""

    path: str
    """Relative to the report folder."""
    temporal_flickering: float
    """VBench's definition: (255 − mean |frame_{t+1} − frame_t|) / 255; 1.0 is perfectly steady."""
    motion_energy: float
    """Mean |frame_{t+1} − frame_t| on the [0, 1] scale."""


class FidelityMetrics(_Frozen):
    """One variant's video against the teacher's at the same seed."""

    latent_mse: float
    psnr_db: float
    ssim: float
    motion_energy_ratio: float
    """Variant / teacher motion energy: ≈1 faithful, →0 frozen frames, ≫1 added jitter or noise."""
    step_errors: tuple[StepErrorRecord, ...]


class SampleRecord(_Frozen):
    prompt: str
    index: int
    seed: int
    video: VideoMetrics
    fidelity: FidelityMetrics | None = None
    """None for the teacher."""


class VariantReport(_Frozen):
    name: str
    kind: Literal["full_precision", "fake_quant", "deploy"]
    source: str
    samples: tuple[SampleRecord, ...]
    summary: dict[str, float]
    """Means over the samples of every scalar metric."""


class EvalReport(_Frozen):
    """`qvgen-eval compare` output: teacher and variants at the same prompts and seeds."""

    schema_version: Literal[1] = 1
    family: Literal["wan", "cogvideox"]
    created: str
    pipeline_kwargs: dict[str, Any]
    """The resolved sampling settings every model ran with."""
    teacher: VariantReport
    variants: tuple[VariantReport, ...]
    vbench: dict[str, VBenchReport] = {}
    """Per model name, where VBench was run."""


def summarize(samples: Sequence[SampleRecord]) -> dict[str, float]:
    """Means of the scalar metrics over `samples`."""
    if not samples:
        return {}
    n = len(samples)
    out = {
        "temporal_flickering": sum(s.video.temporal_flickering for s in samples) / n,
        "motion_energy": sum(s.video.motion_energy for s in samples) / n,
    }
    fid = [s.fidelity for s in samples if s.fidelity is not None]
    if fid:
        m = len(fid)
        out["latent_mse"] = sum(f.latent_mse for f in fid) / m
        out["psnr_db"] = sum(f.psnr_db for f in fid) / m
        out["ssim"] = sum(f.ssim for f in fid) / m
        out["motion_energy_ratio"] = sum(f.motion_energy_ratio for f in fid) / m
        steps = [e.relative_mse for f in fid for e in f.step_errors]
        out["step_relative_mse"] = sum(steps) / len(steps) if steps else 0.0
    return out


def write_text_atomic(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_report(path: str | Path) -> EvalReport:
    """Read an `EvalReport` JSON; errors name the file."""
    p = Path(path)
    try:
        return EvalReport.model_validate_json(p.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read eval report {p}: {e}") from e


def write_report(report: EvalReport, out_dir: str | Path, *, embed_videos: bool = True) -> tuple[Path, Path]:
    """Write `report.json` and `report.html` into `out_dir` (video paths are relative to it)."""
    out = Path(out_dir)
    json_path = write_text_atomic(out / "report.json", report.model_dump_json(indent=2))
    html_path = write_text_atomic(out / "report.html", render_html(report, out, embed_videos=embed_videos))
    return json_path, html_path


# --- HTML --------------------------------------------------------------------------------------------

_PALETTE = ("#222222", "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2")

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


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _video_src(report_dir: Path, rel: str, embed: bool) -> str:
    if not embed:
        return html.escape(rel, quote=True)
    data = (report_dir / rel).read_bytes()
    return "data:video/mp4;base64," + base64.b64encode(data).decode("ascii")


def _color(name: str, order: Sequence[str]) -> str:
    """One colour per model across all plots, in report order (teacher first)."""
    return _PALETTE[order.index(name) % len(_PALETTE)] if name in order else _PALETTE[-1]


def _line_plot(
    title: str, series: dict[str, list[tuple[float, float]]], x_label: str, log_y: bool, order: Sequence[str]
) -> str:
    """An inline SVG line chart of `series` (name -> points)."""
    import math

    w, h, pad, legend = 540, 260, 60, 100
    pts = [p for s in series.values() for p in s]
    if not pts:
        return ""

    positive = [p[1] for p in pts if p[1] > 0]
    floor = min(positive) / 10 if positive else 1e-12  # zeros (a bit-exact variant) sit one decade below

    def ty(v: float) -> float:
        return math.log10(max(v, floor)) if log_y else v

    xs = [p[0] for p in pts]
    ys = [ty(p[1]) for p in pts]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    x1 = x1 if x1 > x0 else x0 + 1
    y1 = y1 if y1 > y0 else y0 + 1

    def sx(v: float) -> float:
        return pad + (v - x0) / (x1 - x0) * (w - 2 * pad - legend)

    def sy(v: float) -> float:
        return h - pad - (ty(v) - y0) / (y1 - y0) * (h - 2 * pad)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="{html.escape(title)}">',
        f'<text x="{w / 2}" y="16" text-anchor="middle" font-size="13">{html.escape(title)}</text>',
        f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad - legend}" y2="{h - pad}" stroke="#888"/>',
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="#888"/>',
        f'<text x="{w / 2}" y="{h - 10}" text-anchor="middle" font-size="11">{html.escape(x_label)}</text>',
        f'<text x="{pad - 4}" y="{pad}" text-anchor="end" font-size="10">{_fmt(10**y1 if log_y else y1)}</text>',
        f'<text x="{pad - 4}" y="{h - pad}" text-anchor="end" font-size="10">{_fmt(10**y0 if log_y else y0)}</text>',
    ]
    for k, (name, points) in enumerate(series.items()):
        color = _color(name, order)
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{path}"/>')
        parts.append(
            f'<text x="{w - legend}" y="{pad + 14 * k}" font-size="11" fill="{color}">'
            f"{html.escape(name)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _bar_plot(title: str, values: dict[str, float], order: Sequence[str]) -> str:
    """An inline SVG horizontal bar chart (one bar per model)."""
    if not values:
        return ""
    w, row, pad = 420, 24, 120
    h = 30 + row * len(values)
    hi = max(max(values.values()), 1e-12)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="{html.escape(title)}">',
        f'<text x="{w / 2}" y="16" text-anchor="middle" font-size="13">{html.escape(title)}</text>',
    ]
    for k, (name, v) in enumerate(values.items()):
        y = 26 + row * k
        bw = max(v, 0.0) / hi * (w - pad - 70)
        parts.append(
            f'<text x="{pad - 6}" y="{y + 14}" text-anchor="end" font-size="11">{html.escape(name)}</text>'
        )
        parts.append(
            f'<rect x="{pad}" y="{y}" width="{bw:.1f}" height="{row - 6}" fill="{_color(name, order)}"/>'
        )
        parts.append(f'<text x="{pad + bw + 4:.1f}" y="{y + 14}" font-size="11">{_fmt(v)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_html(report: EvalReport, report_dir: Path, *, embed_videos: bool = True) -> str:
    """The report as one HTML page: summary table, SVG plots, videos side by side per prompt and seed."""
    models = [report.teacher, *report.variants]
    esc = html.escape
    out = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>qvgen eval: {esc(report.family)}</title><style>{_CSS}</style></head><body>",
        f"<h1>qvgen eval — {esc(report.family)}</h1>",
        f"<p>{esc(report.created)} · settings: <code>{esc(str(report.pipeline_kwargs))}</code></p>",
        "<p id='video-status'>videos loading…</p>",
        "<h2>Summary</h2><table><tr><th>model</th><th>kind</th>",
    ]
    keys = sorted({k for m in models for k in m.summary})
    out += [f"<th>{esc(k)}</th>" for k in keys] + ["</tr>"]
    for m in models:
        cells = "".join(
            f"<td class='num'>{_fmt(m.summary[k])}</td>" if k in m.summary else "<td>—</td>" for k in keys
        )
        out.append(f"<tr><td>{esc(m.name)}</td><td>{esc(m.kind)}</td>{cells}</tr>")
    out.append("</table>")

    out.append("<h2>Plots</h2><div class='plots'>")
    series: dict[str, list[tuple[float, float]]] = {}
    for v in report.variants:
        per_step: dict[int, list[float]] = {}
        for s in v.samples:
            for e in s.fidelity.step_errors if s.fidelity else ():
                per_step.setdefault(e.step, []).append(e.relative_mse)
        series[v.name] = [(k, sum(x) / len(x)) for k, x in sorted(per_step.items())]
    order = [m.name for m in models]
    out.append(_line_plot("denoiser output relative MSE vs teacher", series, "sampling step", True, order))
    for key in ("psnr_db", "ssim", "motion_energy_ratio"):
        out.append(
            _bar_plot(key, {v.name: v.summary[key] for v in report.variants if key in v.summary}, order)
        )
    out.append(
        _bar_plot("temporal_flickering", {m.name: m.summary["temporal_flickering"] for m in models}, order)
    )
    out.append("</div>")

    for name, vb in report.vbench.items():
        out.append(
            f"<h2>VBench — {esc(name)}</h2><table><tr><th>dimension</th><th>score</th><th>normalised</th></tr>"
        )
        for dim, r in vb.dimensions.items():
            out.append(
                f"<tr><td>{esc(dim)}</td><td class='num'>{_fmt(r.score)}</td><td class='num'>{_fmt(r.normalized)}</td></tr>"
            )
        for label, val in (("quality", vb.quality), ("semantic", vb.semantic), ("total", vb.total)):
            out.append(f"<tr><th>{label}</th><td colspan='2'>{'—' if val is None else _fmt(val)}</td></tr>")
        out.append("</table>")

    out.append("<h2>Videos</h2><table><tr><th>prompt</th>")
    out += [f"<th>{esc(m.name)}</th>" for m in models] + ["</tr>"]
    for i, t in enumerate(report.teacher.samples):
        out.append(f"<tr><td>{esc(t.prompt)}<small> #{t.index}, seed {t.seed}</small></td>")
        for m in models:
            s = m.samples[i]
            src = _video_src(report_dir, s.video.path, embed_videos)
            notes = f"flicker {_fmt(s.video.temporal_flickering)}"
            if s.fidelity:
                notes += f" · PSNR {_fmt(s.fidelity.psnr_db)} dB · SSIM {_fmt(s.fidelity.ssim)}"
            out.append(
                f"<td class='cell'><video src=\"{src}\" controls muted loop autoplay playsinline "
                f"preload='auto'></video><small>{esc(notes)}</small></td>"
            )
        out.append("</tr>")
    out.append(f"</table><script>{_STATUS_JS}</script></body></html>")
    return "\n".join(out)
