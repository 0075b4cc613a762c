"""The latency-against-offered-rate chart, written as SVG by hand (no plotting library): offered requests per
second across, p50 and p99 latency up a logarithmic scale, one line per series."""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 860, 440
LEFT, RIGHT, TOP, BOTTOM = 70, 290, 40, 60  # margins; the legend sits in the right one
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f")


@dataclass(frozen=True)
class Series:
    label: str
    points: list[tuple[float, float]]  # (offered requests per second, latency in ms)
    dashed: bool = False  # dashed, with hollow markers: a p99 beside its p50
    color_index: int = 0


def latency_chart(title: str, series: list[Series]) -> str:
    drawn = [(s, [(x, y) for x, y in s.points if y > 0 and math.isfinite(y)]) for s in series]
    values = [point for _, points in drawn for point in points]
    if not values:
        values = [(0.0, 1.0)]
    x_max = _nice_ceiling(max(x for x, _ in values) * 1.1)
    y_low = 10 ** math.floor(math.log10(min(y for _, y in values)))
    y_high = 10 ** math.ceil(math.log10(max(y for _, y in values) * 1.01))
    if y_high <= y_low:
        y_high = y_low * 10
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + x / x_max * plot_width

    def py(y: float) -> float:
        return TOP + plot_height * (1 - (math.log10(y) - math.log10(y_low)) / (math.log10(y_high)
                                                                                 - math.log10(y_low)))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
             f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
             f'<text x="{LEFT}" y="22" font-size="14" font-weight="bold">{escape(title)}</text>']
    for step in range(6):  # vertical grid lines and x labels
        x = x_max * step / 5
        parts.append(f'<line x1="{px(x):.1f}" y1="{TOP}" x2="{px(x):.1f}" y2="{TOP + plot_height}" stroke="#ddd"/>')
        parts.append(f'<text x="{px(x):.1f}" y="{TOP + plot_height + 18}" text-anchor="middle">{x:g}</text>')
    decade = y_low
    while decade <= y_high * 1.0001:  # horizontal grid lines at each power of ten
        parts.append(f'<line x1="{LEFT}" y1="{py(decade):.1f}" x2="{LEFT + plot_width}" y2="{py(decade):.1f}" '
                     'stroke="#ddd"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{py(decade) + 4:.1f}" text-anchor="end">{decade:g}</text>')
        decade *= 10
    parts.append(f'<rect x="{LEFT}" y="{TOP}" width="{plot_width}" height="{plot_height}" fill="none" '
                 'stroke="#333"/>')
    parts.append(f'<text x="{LEFT + plot_width / 2}" y="{HEIGHT - 18}" text-anchor="middle">'
                 'offered rate (requests per second)</text>')
    parts.append(f'<text transform="translate(18,{TOP + plot_height / 2}) rotate(-90)" text-anchor="middle">'
                 'latency (ms, log scale)</text>')
    for index, (line, points) in enumerate(drawn):
        color = PALETTE[line.color_index % len(PALETTE)]
        dash = ' stroke-dasharray="6,4"' if line.dashed else ""
        ordered = sorted(points)
        if len(ordered) > 1:
            path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in ordered)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
        fill = "white" if line.dashed else color
        for x, y in ordered:
            parts.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="{fill}" stroke="{color}" '
                         'stroke-width="1.5"/>')
        legend_y = TOP + 10 + index * 20
        legend_x = WIDTH - RIGHT + 15
        parts.append(f'<line x1="{legend_x}" y1="{legend_y}" x2="{legend_x + 24}" y2="{legend_y}" stroke="{color}" '
                     f'stroke-width="2"{dash}/>')
        parts.append(f'<circle cx="{legend_x + 12}" cy="{legend_y}" r="3.5" fill="{fill}" stroke="{color}" '
                     'stroke-width="1.5"/>')
        parts.append(f'<text x="{legend_x + 30}" y="{legend_y + 4}">{escape(line.label)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^n at or above `value` (axis ends on a round number)."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude
