"""Gradebook files: the plain class CSV, Blackboard's Grade Center upload and Canvas's gradebook import.

Every cell goes through `safe_cell`: spreadsheet programs run a cell that starts with `=`, `+`, `-`
or `@` (or a tab or carriage return) as a formula, so such text gets a leading apostrophe. Numbers
are written as numbers: a score is data, never a formula, and Blackboard and Canvas need it numeric.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence

from grader.engine.rubric import Rubric
from grader.intake.results import StudentResult

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"^[+-]?\d+(\.\d+)?$")


def other_lms_warning(layout: str | None, export: str) -> str | None:
    """The warning for a Blackboard download exported for Canvas, or the other way round: the rows are
    keyed by one LMS's identifiers, which the other does not know. None when they match (or the
    upload came from neither)."""
    if layout not in ("blackboard", "canvas") or layout == export:
        return None
    return (f"this is a {layout.capitalize()} download, but the export is for {export.capitalize()}: its rows "
            f"are keyed by {layout.capitalize()}'s identifiers, which {export.capitalize()} will not recognise")


def safe_cell(value: object) -> str | int | float:
    """A cell a spreadsheet shows as text: formula-like text is prefixed with `'`; numbers stay numbers.

    Text that is only a plain decimal number (like "-1" or "+2.5") is left alone: it cannot run anything.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return points(value)
    text = str(value).replace("\r\n", " ").replace("\n", " ")
    if text.startswith(FORMULA_START) and not _PLAIN_NUMBER.match(text):
        return "'" + text
    return text


def points(value: float) -> int | float:
    """A score as the spreadsheet should see it: 7 rather than 7.0, rounded to 4 places."""
    rounded = round(float(value), 4)
    return int(rounded) if rounded.is_integer() else rounded


def write_rows(rows: Iterable[Sequence[object]], *, quote_all: bool = False) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n", quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL)
    for row in rows:
        writer.writerow([safe_cell(cell) for cell in row])
    return buffer.getvalue()


def class_csv(results: Sequence[StudentResult], rubric: Rubric) -> str:
    """One row per student: key, name, total, each problem's score, status, late, a one-line summary."""
    header: list[object] = ["student", "name", "total"]
    header += [f"P{p.number} {p.title}" for p in rubric.problems]
    header += ["status", "late", "summary"]
    rows: list[list[object]] = [header]
    for result in results:
        scores = result.report.problem_scores() if result.report is not None else {}
        row: list[object] = [result.key, result.name or "", result.score]
        row += [scores.get(p.number) for p in rubric.problems]
        row += [result.status, result.late, result.summary()]
        rows.append(row)
    return write_rows(rows)


def _grade(result: StudentResult, missing_as_zero: bool) -> float | None:
    if result.score is not None:
        return result.score
    return 0.0 if missing_as_zero else None


def _first_last(name: str | None) -> tuple[str, str]:
    if not name:
        return "", ""
    first, _, last = name.strip().rpartition(" ")
    return (first, last) if first else ("", last)


def blackboard_csv(
    results: Sequence[StudentResult],
    *,
    assignment: str,
    max_score: float,
    column_id: str | None = None,
    missing_as_zero: bool = False,
) -> str:
    """Grade Center "Upload": keyed by Username; with the column id the grades land in that column.

    Without a column id Blackboard creates a new column named after the assignment. A blank grade
    leaves the student's cell unchanged.
    """
    column = f"{assignment} [Total Pts: {points(max_score)} Score]"
    if column_id:
        column += f" |{column_id}"
    rows: list[list[object]] = [["Last Name", "First Name", "Username", column]]
    for result in results:
        first, last = _first_last(result.name)
        rows.append([last, first, result.key, _grade(result, missing_as_zero)])
    # Blackboard's own words: data in each column of a comma-delimited file "must be contained within
    # a quote character"
    return write_rows(rows, quote_all=True)


def canvas_csv(
    results: Sequence[StudentResult],
    *,
    assignment: str,
    max_score: float,
    assignment_id: str | None = None,
    missing_as_zero: bool = False,
) -> str:
    """Canvas gradebook import: Student, ID, SIS User ID, SIS Login ID, Section, then the assignment.

    The assignment column is `<name> (<id>)`: with the id Canvas updates that assignment, without it
    Canvas offers to create one. The second row is the "Points Possible" row Canvas itself exports.
    """
    column = f"{assignment} ({assignment_id})" if assignment_id else assignment
    rows: list[list[object]] = [["Student", "ID", "SIS User ID", "SIS Login ID", "Section", column]]
    rows.append(["Points Possible", "", "", "", "", max_score])
    for result in results:
        rows.append([result.name or result.key, result.key, "", "", "", _grade(result, missing_as_zero)])
    return write_rows(rows)
