"""Charts drawn as SVG on the server: no script, no chart library, nothing the CSP must allow.

Every text (a model name, an error code) is escaped here, and every bar carries its label and
value as text (a <title>, and printed beside it in the horizontal chart), so a chart reads without
colour; the table beside it has the exact numbers.
"""
from __future__ import annotations

from html import escape

WIDTH, HEIGHT, PAD = 640, 180, 28


def _fmt(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.6f}".rstrip("0").rstrip(".") if abs(value) < 1 else f"{value:,.2f}"


def columns(points: list[tuple[str, float]], title: str) -> str:
    """A vertical bar per point (a day), labelled with its first and last label and the maximum."""
    top = max((v for _, v in points), default=0) or 1
    n = max(len(points), 1)
    inner = WIDTH - 2 * PAD
    step = inner / n
    bars = []
    for i, (label, value) in enumerate(points):
        h = (HEIGHT - 2 * PAD) * value / top
        x = PAD + i * step
        bars.append(f'<rect class="bar" x="{x + step * 0.1:.1f}" y="{HEIGHT - PAD - h:.1f}" '
                    f'width="{max(step * 0.8, 1):.1f}" height="{h:.1f}"><title>{escape(label)}: {_fmt(value)}</title>'
                    f'</rect>')
    first = escape(points[0][0]) if points else ""
    last = escape(points[-1][0]) if points else ""
    return (f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
            f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
            f'<line class="axis" x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}"/>'
            f'<text class="label" x="{PAD}" y="{PAD - 10}">max {_fmt(max((v for _, v in points), default=0))}</text>'
            f'{"".join(bars)}'
            f'<text class="label" x="{PAD}" y="{HEIGHT - 8}">{first}</text>'
            f'<text class="label" x="{WIDTH - PAD}" y="{HEIGHT - 8}" text-anchor="end">{last}</text></svg>')


def rows(points: list[tuple[str, float]], title: str, limit: int = 12) -> str:
    """A horizontal bar per group, its name and value printed beside it (the largest `limit`)."""
    shown = points[:limit]
    top = max((v for _, v in shown), default=0) or 1
    line = 22
    height = line * max(len(shown), 1) + 10
    label_w, value_w = 180, 110
    inner = WIDTH - label_w - value_w
    out = []
    for i, (label, value) in enumerate(shown):
        y = 5 + i * line
        w = inner * value / top
        name = label if len(label) <= 28 else label[:27] + "…"
        out.append(f'<text class="label" x="{label_w - 6}" y="{y + 15}" text-anchor="end">{escape(name)}</text>'
                   f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{line - 8}">'
                   f'<title>{escape(label)}: {_fmt(value)}</title></rect>'
                   f'<text class="label" x="{label_w + w + 6:.1f}" y="{y + 15}">{_fmt(value)}</text>')
    return (f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{escape(title)}" '
            f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>{"".join(out)}</svg>')
