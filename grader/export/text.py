"""Plain-text reports for people: one submission in detail, or a class as a table."""

from __future__ import annotations

from grader.engine.report import SubmissionReport


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


def class_table(reports: list[SubmissionReport]) -> str:
    if not reports:
        return "no submissions"
    numbers = [p.number for p in reports[0].problems]
    key_width = max(7, *(len(r.student or "") for r in reports))
    header = "student".ljust(key_width) + "  total " + "".join(f"   P{n}" for n in numbers) + "  notes"
    lines = [header, "-" * len(header)]
    for report in reports:
        scores = report.problem_scores()
        notes = report.errors[0] if report.errors else ", ".join(f"{x} limit" for x in report.limits_hit)
        lines.append(
            (report.student or "").ljust(key_width)
            + f"  {report.score:5g} "
            + "".join(f" {scores.get(n, 0):4g}" for n in numbers)
            + (f"  {notes[:80]}" if notes else "")
        )
    return "\n".join(lines)
