"""The page's inline SVG charts: right counts, accessible names, nothing external."""

from __future__ import annotations

import re

from grader.service.charts import problem_means, score_histogram


def bar_tooltips(svg: str) -> list[str]:
    return re.findall(r"<rect [^>]*><title>([^<]*)</title>", svg)


def test_histogram_counts_each_range_and_full_marks_apart() -> None:
    svg = score_histogram([0, 0.5, 7, 9.5, 10, 10], 10)
    tooltips = bar_tooltips(svg)
    assert len(tooltips) == 11
    assert tooltips[0] == "2 scored 0 to under 1"
    assert tooltips[7] == "1 scored 7 to under 8"
    assert tooltips[9] == "1 scored 9 to under 10"
    assert tooltips[10] == "2 scored full marks (10)"  # a bar of their own, as the command line counts them
    assert re.findall(r'class="tick" text-anchor="middle">([^<]*)<', svg)[-2:] == ["9", "10"]
    assert 'role="img"' in svg and "Score distribution of 6 graded submissions" in svg
    assert "http" not in svg.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_problem_means_are_fractions_of_each_problems_points() -> None:
    svg = problem_means([("P1", 1.5, 3), ("P2", 2, 2)])
    assert bar_tooltips(svg) == ["P1: mean 1.50 of 3", "P2: mean 2.00 of 2"]
    assert ">50%<" in svg and ">100%<" in svg


def test_labels_are_escaped() -> None:
    assert "<script>" not in problem_means([("<script>", 1, 2)])
