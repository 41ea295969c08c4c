"""The bias benchmark's plot: a forest plot of paired deltas, one row per (group, trait), controls beside.

Self-contained SVG text from a ``run_benchmark`` summary (no plotting library): each condition is a dot at its
mean paired delta with its 95% bootstrap interval as a whisker, on a shared axis through zero.
"""

from __future__ import annotations

import math
from html import escape

__all__ = ["COLOURS", "bias_plot_svg"]

COLOURS = {"adversarial": "#1f4e9c", "random": "#8c8c8c", "identity": "#d9822b", "rerender": "#2e8b57"}
_ROW, _LEFT, _RIGHT, _TOP, _WIDTH = 22, 220, 40, 56, 760


def _rows(summary: dict, reading: str) -> list[tuple[str, list[tuple[str, dict]]]]:
    rows = []
    for group, entry in summary["groups"].items():
        for trait, figures in entry.get("traits", {}).items():
            conditions = [(c, f[reading]) for c, f in figures.items() if c != "clean"]
            rows.append((f"{group} · {trait}", conditions))
    return rows


def _extent(rows) -> tuple[float, float]:
    values = [0.0] + [v for _, cs in rows for _, f in cs for v in (f["delta"], *f["ci95"])
                      if v is not None and math.isfinite(v)]
    low, high = min(values), max(values)
    pad = 0.08 * (high - low or 1.0)
    return low - pad, high + pad


def _legend(conditions: list[str]) -> list[str]:
    parts, x = [], _LEFT
    for condition in conditions:
        colour = COLOURS.get(condition, "#444444")
        parts.append(f'<circle cx="{x}" cy="34" r="4" fill="{colour}"/>'
                     f'<text x="{x + 8}" y="38" font-size="11">{escape(condition)}</text>')
        x += 16 + 7 * len(condition) + 14
    return parts


def bias_plot_svg(summary: dict, *, reading: str = "expected", title: str | None = None) -> str:
    """SVG text: paired delta (``reading`` = "expected" or "parsed") per (group, trait), controls beside."""
    rows = _rows(summary, reading)
    conditions = list(dict.fromkeys(c for _, cs in rows for c, _ in cs))
    low, high = _extent(rows)
    slot = max(1, len(conditions)) * 8 + 8  # vertical room per row: one line per condition
    height = _TOP + len(rows) * (slot + _ROW) + 48

    def x(value: float) -> float:
        return _LEFT + (value - low) / (high - low) * (_WIDTH - _LEFT - _RIGHT)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{height}" '
             f'font-family="sans-serif" viewBox="0 0 {_WIDTH} {height}">',
             f'<rect width="{_WIDTH}" height="{height}" fill="white"/>',
             f'<text x="10" y="18" font-size="13" font-weight="bold">'
             f'{escape(title or f"paired delta of the {reading} 1-10 score (95% bootstrap CI)")}</text>',
             *_legend(conditions),
             f'<line x1="{x(0):.1f}" y1="{_TOP - 6}" x2="{x(0):.1f}" y2="{height - 40}" stroke="black" '
             'stroke-dasharray="3,3"/>']
    for index, (label, figures) in enumerate(rows):
        top = _TOP + index * (slot + _ROW)
        parts.append(f'<text x="10" y="{top + slot / 2 + 4:.1f}" font-size="12">{escape(label)}</text>')
        for k, (condition, figure) in enumerate(figures):
            y, colour = top + 8 + k * 8, COLOURS.get(condition, "#444444")
            lo, hi = figure["ci95"]
            if _drawn(lo) and _drawn(hi):
                parts.append(f'<line x1="{x(lo):.1f}" y1="{y}" x2="{x(hi):.1f}" y2="{y}" stroke="{colour}" '
                             'stroke-width="2"/>')
            if _drawn(figure["delta"]):
                parts.append(f'<circle cx="{x(figure["delta"]):.1f}" cy="{y}" r="3.5" fill="{colour}">'
                             f'<title>{escape(condition)}: {_signed(figure["delta"])} [{_signed(lo)}, '
                             f'{_signed(hi)}], n={escape(str(figure["n"]))}</title></circle>')
    axis = height - 40
    parts.append(f'<line x1="{_LEFT}" y1="{axis}" x2="{_WIDTH - _RIGHT}" y2="{axis}" stroke="black"/>')
    for tick in _ticks(low, high):
        parts.append(f'<line x1="{x(tick):.1f}" y1="{axis}" x2="{x(tick):.1f}" y2="{axis + 4}" stroke="black"/>'
                     f'<text x="{x(tick):.1f}" y="{axis + 16}" font-size="10" text-anchor="middle">{tick:g}</text>')
    parts.append(f'<text x="{(_LEFT + _WIDTH - _RIGHT) / 2:.0f}" y="{height - 4}" font-size="11" '
                 'text-anchor="middle">score after perturbation − score on the clean E (same image)</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _drawn(value) -> bool:
    return value is not None and math.isfinite(value)


def _signed(value) -> str:
    """A figure in a tooltip; a bound without pairs (None or NaN) reads "n/a" rather than failing the plot."""
    return f"{value:+.3f}" if _drawn(value) else "n/a"


def _ticks(low: float, high: float, count: int = 6) -> list[float]:
    """Round tick values inside [low, high]."""
    raw = (high - low) / count
    step = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    step *= next(m for m in (1, 2, 5, 10) if raw <= m * step)
    start = math.ceil(low / step) * step
    return [round(start + i * step, 10) for i in range(int((high - start) / step) + 1)]
