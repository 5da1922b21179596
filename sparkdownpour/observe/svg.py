"""Tiny server-side SVG charts for the dashboard: no JavaScript chart library, no CDN.

Every label goes through ``html.escape`` (replica ids and device names come from executors).
Presentation attributes only, no ``style=`` attributes, so the page's Content-Security-Policy
can forbid inline styles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

__all__ = ["bar_chart", "line_chart", "fmt"]

WIDTH, HEIGHT = 440, 170
LEFT, RIGHT, TOP, BOTTOM = 58, 12, 22, 24


def fmt(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.3e}"
    return f"{value:.4g}"


def _frame(title: str, body: str, kind: str, n: int) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" data-kind="{kind}" '
            f'data-points="{n}" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" '
            f'height="{HEIGHT}" role="img" aria-label="{escape(title)}">'
            f'<text x="{LEFT}" y="14" class="title">{escape(title)}</text>{body}</svg>')


def _empty(title: str, kind: str) -> str:
    return _frame(title, f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" '
                         'class="empty">waiting for data…</text>', kind, 0)


def line_chart(points: Sequence[tuple[float, float]], title: str, *, log: bool = False,
               x_label: str = "") -> str:
    """A polyline of ``(x, y)`` points with min/max ticks and the last value written out."""
    pts = [(float(x), float(y)) for x, y in points
           if y is not None and math.isfinite(y) and (not log or y > 0)]
    if not pts:
        return _empty(title, "line")
    ys = [math.log10(y) if log else y for _, y in pts]
    xs = [x for x, _ in pts]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        pad = abs(y0) * 0.05 or 1.0
        y0, y1 = y0 - pad, y1 + pad
    w, h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def sx(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * w

    def sy(y: float) -> float:
        return TOP + (1 - (y - y0) / (y1 - y0)) * h

    line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(xs, ys))
    top = 10 ** y1 if log else y1
    bottom = 10 ** y0 if log else y0
    body = (f'<line x1="{LEFT}" y1="{TOP + h}" x2="{LEFT + w}" y2="{TOP + h}" class="axis"/>'
            f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + h}" class="axis"/>'
            f'<text x="{LEFT - 4}" y="{TOP + 8}" text-anchor="end" class="tick">{fmt(top)}</text>'
            f'<text x="{LEFT - 4}" y="{TOP + h}" text-anchor="end" class="tick">{fmt(bottom)}'
            f'</text><text x="{LEFT}" y="{HEIGHT - 6}" class="tick">{fmt(x0)}</text>'
            f'<text x="{LEFT + w}" y="{HEIGHT - 6}" text-anchor="end" class="tick">{fmt(x1)} '
            f'{escape(x_label)}</text>'
            f'<polyline points="{line}" fill="none" stroke="#1f77b4" stroke-width="2"/>'
            f'<text x="{WIDTH - RIGHT}" y="14" text-anchor="end" class="last">last '
            f'{fmt(pts[-1][1])}</text>')
    return _frame(title, body, "line", len(pts))


def bar_chart(bars: Sequence[tuple[str, float]], title: str) -> str:
    """Vertical bars with their labels under them and their values over them."""
    bars = [(str(label), float(value)) for label, value in bars]
    if not bars or not any(v > 0 for _, v in bars):
        return _empty(title, "bar")
    w, h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = max(v for _, v in bars)
    slot = w / len(bars)
    parts = [f'<line x1="{LEFT}" y1="{TOP + h}" x2="{LEFT + w}" y2="{TOP + h}" class="axis"/>',
             f'<text x="{LEFT - 4}" y="{TOP + 8}" text-anchor="end" class="tick">{fmt(top)}'
             '</text>']
    for i, (label, value) in enumerate(bars):
        height = value / top * h if top > 0 else 0
        x = LEFT + i * slot + slot * 0.1
        parts.append(f'<rect x="{x:.1f}" y="{TOP + h - height:.1f}" width="{slot * 0.8:.1f}" '
                     f'height="{height:.1f}" fill="#ff7f0e"><title>{escape(label)}: '
                     f'{fmt(value)}</title></rect>')
        if len(bars) <= 24 or i % max(1, len(bars) // 12) == 0:
            parts.append(f'<text x="{x + slot * 0.4:.1f}" y="{HEIGHT - 6}" text-anchor="middle" '
                         f'class="tick">{escape(label)}</text>')
    return _frame(title, "".join(parts), "bar", len(bars))
