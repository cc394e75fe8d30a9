"""Inline SVG charts for the TA's page: drawn on the server, so no chart library or CDN is needed."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from grader.export.text import score_histogram as text_histogram

WIDTH = 420
HEIGHT = 180
MARGIN_LEFT = 36
MARGIN_TOP = 16
MARGIN_BOTTOM = 28
BAR_GAP = 4


def score_histogram(scores: Sequence[float], max_score: float, *, bins: int = 10) -> str:
    """Counts of totals in `bins` equal ranges from 0 up to max_score, and full marks in a bar of their
    own (the most common score), counted as the command line's summary counts them."""
    counts = list(text_histogram(scores, max_score, bins).values())
    width = max_score / bins if max_score > 0 else 1.0
    starts = [width * i for i in range(bins)]
    tooltips = [f"{counts[i]} scored {start:g} to under {start + width:g}" for i, start in enumerate(starts)]
    tooltips.append(f"{counts[-1]} scored full marks ({max_score:g})")
    tops = max(counts) or 1
    return _bar_chart(
        [c / tops for c in counts],
        [f"{start:g}" for start in starts] + [f"{max_score:g}"],
        shown=[str(c) if c else "" for c in counts],
        tooltips=tooltips,
        title=f"Score distribution of {len(scores)} graded submissions",
        axis_label=str(tops),
    )


def problem_means(means: Sequence[tuple[str, float, float]]) -> str:
    """Per-problem mean scores as a fraction of each problem's points: (label, mean, max points)."""
    fractions = [mean / top if top else 0.0 for _, mean, top in means]
    return _bar_chart(
        fractions,
        [label for label, _, _ in means],
        shown=[f"{f:.0%}" for f in fractions],
        tooltips=[f"{label}: mean {mean:.2f} of {top:g}" for label, mean, top in means],
        title="Mean score per problem",
        axis_label="100%",
    )


def _bar_chart(
    heights: Sequence[float],
    labels: Sequence[str],
    *,
    shown: Sequence[str],
    tooltips: Sequence[str],
    title: str,
    axis_label: str,
) -> str:
    """Bars of heights in [0, 1], each with a label below, a value above and a tooltip."""
    plot_width = WIDTH - MARGIN_LEFT - 8
    plot_height = HEIGHT - MARGIN_BOTTOM - MARGIN_TOP
    baseline = MARGIN_TOP + plot_height
    slot = plot_width / max(len(heights), 1)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f'<line x1="{MARGIN_LEFT}" y1="{baseline}" x2="{WIDTH - 8}" y2="{baseline}" class="axis"/>',
        f'<text x="{MARGIN_LEFT - 6}" y="{MARGIN_TOP + 4}" class="tick" text-anchor="end">{escape(axis_label)}</text>',
    ]
    for i, fraction in enumerate(heights):
        height = plot_height * min(max(fraction, 0.0), 1.0)
        x = MARGIN_LEFT + i * slot + BAR_GAP / 2
        middle = x + (slot - BAR_GAP) / 2
        parts.append(
            f'<rect x="{x:.1f}" y="{baseline - height:.1f}" width="{max(slot - BAR_GAP, 1):.1f}" '
            f'height="{height:.1f}" class="bar"><title>{escape(tooltips[i])}</title></rect>'
        )
        if shown[i]:
            parts.append(
                f'<text x="{middle:.1f}" y="{max(baseline - height - 3, 12):.1f}" class="value" '
                f'text-anchor="middle">{escape(shown[i])}</text>'
            )
        parts.append(
            f'<text x="{middle:.1f}" y="{HEIGHT - 10}" class="tick" text-anchor="middle">{escape(labels[i])}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
