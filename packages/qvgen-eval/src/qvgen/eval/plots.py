"""Inline SVG charts for the HTML report (no plotting library): line charts and horizontal bars."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

_PALETTE = ("#222222", "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2")


def fmt(x: float) -> str:
    """Numbers in the report: five significant digits, so close values still differ."""
    return f"{x:.5g}"


def color(name: str, order: Sequence[str]) -> str:
    """One colour per model across all plots, in report order (teacher first)."""
    return _PALETTE[order.index(name) % len(_PALETTE)] if name in order else _PALETTE[-1]


def line_plot(
    title: str, series: dict[str, list[tuple[float, float]]], x_label: str, log_y: bool, order: Sequence[str]
) -> str:
    """An inline SVG line chart of `series` (name -> points)."""
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
        f'<text x="{pad - 4}" y="{pad}" text-anchor="end" font-size="10">{fmt(10**y1 if log_y else y1)}</text>',
        f'<text x="{pad - 4}" y="{h - pad}" text-anchor="end" font-size="10">{fmt(10**y0 if log_y else y0)}</text>',
    ]
    for k, (name, points) in enumerate(series.items()):
        stroke = color(name, order)
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
        parts.append(f'<polyline fill="none" stroke="{stroke}" stroke-width="2" points="{path}"/>')
        parts.append(
            f'<text x="{w - legend}" y="{pad + 14 * k}" font-size="11" fill="{stroke}">'
            f"{html.escape(name)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def bar_plot(title: str, values: dict[str, float], order: Sequence[str]) -> str:
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
            f'<rect x="{pad}" y="{y}" width="{bw:.1f}" height="{row - 6}" fill="{color(name, order)}"/>'
        )
        parts.append(f'<text x="{pad + bw + 4:.1f}" y="{y + 14}" font-size="11">{fmt(v)}</text>')
    parts.append("</svg>")
    return "".join(parts)
