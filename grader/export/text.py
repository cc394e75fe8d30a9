"""Plain-text reports for people: one submission in detail, or a class as a table."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING

from grader.engine.report import SubmissionReport

if TYPE_CHECKING:
    from grader.intake.results import StudentResult


def fmt_points(value: float) -> str:
    return f"{value:g}"


def submission_text(report: SubmissionReport, *, title: str | None = None) -> str:
    lines = []
    heading = title or report.student or "submission"
    lines.append(f"{heading}: {fmt_points(report.score)} / {fmt_points(report.max_score)}")
    for error in report.errors:
        lines.append(f"  error: {error}")
    for problem in report.problems:
        lines.append("")
        lines.append(
            f"  Problem {problem.number}: {problem.title} ".ljust(52, ".")
            + f" {fmt_points(problem.score)} / {fmt_points(problem.max_score)}"
        )
        for check in problem.checks:
            mark = "PASS" if check.passed else "FAIL"
            points = f" {fmt_points(check.score)} / {fmt_points(check.max_score)}"
            lines.append(f"    [{mark}] {check.name} ".ljust(52, ".") + points)
            if check.message and not (report.errors and check.message.startswith("not graded")):
                lines.append(f"           {check.message}")
            if check.hint and not check.passed:
                lines.append(f"           hint: {check.hint}")
    if report.warnings:
        lines.append("")
        for warning in report.warnings:
            lines.append(f"  warning: {warning}")
    return "\n".join(lines)


def results_table(results: Sequence[StudentResult], problem_numbers: Sequence[int]) -> str:
    """The class table with every student, including those with nothing to grade (their reason instead)."""
    if not results:
        return "no submissions"
    key_width = max(7, *(len(r.key) for r in results))
    header = "student".ljust(key_width) + "  total " + "".join(f"   P{n}" for n in problem_numbers) + "  notes"
    lines = [header, "-" * len(header)]
    for result in results:
        report = result.report
        if report is None:
            lines.append(result.key.ljust(key_width) + "      - " + "    -" * len(problem_numbers)
                         + f"  {result.status}: {result.detail}"[:100])
            continue
        scores = report.problem_scores()
        notes = report.errors[0] if report.errors else ", ".join(f"{x} limit" for x in report.limits_hit)
        if result.late:
            notes = "late" + (f"; {notes}" if notes else "")
        lines.append(
            result.key.ljust(key_width)
            + f"  {report.score:5g} "
            + "".join(f" {scores.get(n, 0):4g}" for n in problem_numbers)
            + (f"  {notes[:80]}" if notes else "")
        )
    return "\n".join(lines)


def class_summary(results: Sequence[StudentResult], problems: Sequence[tuple[int, str, float]]) -> str:
    """Per-problem means, the score distribution, and who hit a limit or had nothing to grade."""
    graded = [r for r in results if r.report is not None]
    lines = [f"{len(graded)} of {len(results)} student{'' if len(results) == 1 else 's'} graded"]
    if graded:
        scores = [r.report.score for r in graded if r.report is not None]
        max_score = graded[0].max_score
        lines.append(f"mean {fmt_points(round(sum(scores) / len(scores), 2))} / {fmt_points(max_score)}, "
                     f"median {fmt_points(round(statistics.median(scores), 2))}")
        lines.append("")
        lines.append("per-problem means:")
        for number, title, possible in problems:
            values = [r.report.problem_scores().get(number, 0.0) for r in graded if r.report is not None]
            mean = sum(values) / len(values)
            lines.append(f"  P{number} {title} ".ljust(34, ".") + f" {mean:5.2f} / {fmt_points(possible)}")
        lines.append("")
        lines.append("score distribution:")
        counts = score_histogram(scores, max_score)
        widest = max(counts.values()) or 1
        for label, count in counts.items():
            bar = "#" * max(1 if count else 0, round(30 * count / widest))
            lines.append(f"  {label:>9}  {bar}{' ' if bar else ''}{count}")
    limited = [r for r in graded if r.report is not None and r.report.limits_hit]
    if limited:
        lines.append("")
        lines.append("hit a limit:")
        lines += [f"  {r.key}: {', '.join(r.report.limits_hit)}" for r in limited if r.report is not None]
    missing = [r for r in results if r.report is None]
    if missing:
        lines.append("")
        lines.append("nothing to grade:")
        lines += [f"  {r.key}: {r.status} ({r.detail})" for r in missing]
    return "\n".join(lines)


def score_histogram(scores: Sequence[float], max_score: float, bins: int = 10) -> dict[str, int]:
    """Counts per tenth of the maximum, with full marks in a bin of their own (the most common score)."""
    width = max_score / bins if max_score > 0 else 1.0
    counts = {f"[{fmt_points(round(i * width, 2))}, {fmt_points(round((i + 1) * width, 2))})": 0 for i in range(bins)}
    counts[fmt_points(max_score)] = 0
    labels = list(counts)
    for score in scores:
        index = bins if score >= max_score else min(bins - 1, max(0, int(score // width)))
        counts[labels[index]] += 1
    return counts
