"""`grader grade` on a class as a TA runs it: the layout, a table and summary, JSON, exports, clear errors."""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

import grader.cli as cli
from tests.intake_fixtures import blackboard_entries, example, write_zip, zip_bytes

pytestmark = pytest.mark.usefixtures("shared_pool")  # commands grade on the session's sandbox pool


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli.main, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def bb_zip(tmp_path: Path) -> Path:
    return write_zip(tmp_path / "gradebook.zip", blackboard_entries("Homework 5", [
        ("jdoe", "Jane Doe", "2023-04-01-10-00-00", {"layers.py": example("starter")}),
        ("jdoe", "Jane Doe", "2023-04-02-23-58-01", {"layers.py": example("correct")}),
        ("asmith", "Adam Smith", "2023-04-02-12-00-00",
         {"hw5.zip": zip_bytes({"hw5/neuralnet/layers.py": example("l2_missing_half")})}),
        ("bnone", "Bea None", "2023-04-02-13-00-00", {}),
    ]))


def test_a_class_gets_a_table_and_a_summary(bb_zip: Path) -> None:
    code, out, err = run("grade", str(bb_zip))
    assert code == 0, err
    assert "layout: blackboard (3 students)" in err
    assert re.search(r"^graded in \d+\.\d\d s by \d+ sandbox processes \(starting them took \d+\.\d\d s\)$", err, re.M)
    table = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("jdoe", "asmith", "bnone"))}
    assert table["jdoe"][1:6] == ["10", "3", "2", "3", "2"]
    assert table["asmith"][1:6] == ["8.5", "3", "2", "3", "0.5"]
    assert "no_files" in " ".join(table["bnone"])
    assert "2 of 3 students graded" in out
    assert "P4 L2 regularization" in out and "1.25 / 2" in out  # mean of 2 and 0.5
    assert "score distribution:" in out and "nothing to grade:" in out


def test_json_for_a_class_has_the_layout_and_every_student(bb_zip: Path) -> None:
    code, out, _ = run("grade", str(bb_zip), "--format", "json")
    assert code == 0
    payload = json.loads(out)
    assert payload["layout"] == "blackboard"
    students = {s["student"]: s for s in payload["submissions"]}
    assert sorted(students) == ["asmith", "bnone", "jdoe"]
    assert students["jdoe"]["score"] == 10 and students["jdoe"]["status"] == "graded"
    assert students["jdoe"]["name"] == "Jane Doe" and len(students["jdoe"]["problems"]) == 4
    assert students["bnone"]["score"] is None and students["bnone"]["status"] == "no_files"


def test_json_for_one_file_is_still_the_report(tmp_path: Path) -> None:
    path = tmp_path / "layers.py"
    path.write_bytes(example("correct"))
    code, out, err = run("grade", str(path), "--format", "json")
    assert code == 0
    payload = json.loads(out)
    assert payload["score"] == 10 and "layout" not in payload
    assert "layout:" not in err and "graded in" not in err


def test_exports_parse_back(bb_zip: Path, tmp_path: Path) -> None:
    csv_path, bb_path, canvas_path = tmp_path / "grades.csv", tmp_path / "bb.csv", tmp_path / "canvas.csv"
    feedback = tmp_path / "feedback.zip"
    code, _, err = run("grade", str(bb_zip), "--csv", str(csv_path), "--export", "blackboard", "--output",
                       str(bb_path), "--column-id", "4242", "--feedback", str(feedback))
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert {r["student"]: r["total"] for r in rows} == {"asmith": "8.5", "bnone": "", "jdoe": "10"}
    bb = list(csv.reader(io.StringIO(bb_path.read_text())))
    assert bb[0] == ["Last Name", "First Name", "Username", "Homework 5 [Total Pts: 10 Score] |4242"]
    assert {r[2]: r[3] for r in bb[1:]} == {"asmith": "8.5", "bnone": "", "jdoe": "10"}
    with zipfile.ZipFile(feedback) as archive:
        assert sorted(archive.namelist()) == ["asmith.md", "bnone.md", "jdoe.md"]
        assert "8.5 / 10" in archive.read("asmith.md").decode()

    code, _, err = run("grade", str(bb_zip), "--export", "canvas", "--output", str(canvas_path), "--column-id", "77",
                       "--assignment-name", "HW5", "--missing-as-zero")
    assert code == 0, err
    canvas = list(csv.reader(io.StringIO(canvas_path.read_text())))
    assert canvas[0][-1] == "HW5 (77)"
    assert {r[1]: r[5] for r in canvas[2:]} == {"asmith": "8.5", "bnone": "0", "jdoe": "10"}


def test_exporting_a_blackboard_class_for_canvas_warns(bb_zip: Path, tmp_path: Path) -> None:
    """Canvas would not recognise Blackboard usernames as its ids: the command says so."""
    code, _, err = run("grade", str(bb_zip), "--export", "canvas", "--output", str(tmp_path / "canvas.csv"))
    assert code == 0
    assert "this is a Blackboard download, but the export is for Canvas" in err


def test_progress_is_shown_on_a_terminal(bb_zip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "_interactive", lambda: True)
    code, _, err = run("grade", str(bb_zip), "--format", "json")
    assert code == 0
    assert "grading" in err
    assert "2 of 3 students graded" in err  # the summary goes to the terminal, the JSON stays clean


@pytest.mark.parametrize("content", [b"PK\x03\x04 this is not really a zip", b"", b"garbage"])
def test_a_corrupt_class_zip_is_one_sentence_and_exit_2(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "class.zip"
    path.write_bytes(content)
    code, out, err = run("grade", str(path))
    assert code == 2
    assert out == ""
    assert "is not a readable zip archive" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_forced_layout(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_bytes(example("correct"))
    (tmp_path / "b.py").write_bytes(example("l2_missing_half"))
    code, out, err = run("grade", str(tmp_path), "--layout", "students", "--format", "json")
    assert code == 0, err
    assert {s["student"]: s["score"] for s in json.loads(out)["submissions"]} == {"a": 10, "b": 8.5}


def test_similarity_command(tmp_path: Path) -> None:
    (tmp_path / "alice.py").write_bytes(example("correct"))
    (tmp_path / "bob.py").write_bytes(example("grad_b_keepdims"))  # one line changed
    (tmp_path / "carol.py").write_bytes(example("loops_scalar_losses"))
    code, out, err = run("similarity", str(tmp_path), "--format", "json")
    assert code == 0, err
    payload = json.loads(out)
    assert [(p["a"], p["b"]) for p in payload["pairs"]] == [("alice", "bob")]
    assert payload["starter"] and payload["starter"].endswith("starter.py")
    code, out, _ = run("similarity", str(tmp_path), "--threshold", "0.1", "--min-tokens", "10")
    assert code == 0 and "carol" in out


def test_gradescope_commands(tmp_path: Path) -> None:
    (tmp_path / "submission").mkdir()
    (tmp_path / "submission" / "layers.py").write_bytes(example("correct"))
    results = tmp_path / "results" / "results.json"
    code, out, err = run("gradescope", "--submission-dir", str(tmp_path / "submission"), "--results", str(results),
                         "--test-visibility", "after_published")
    assert code == 0, err
    assert json.loads(results.read_text())["score"] == 10
    assert "Score: 10 / 10" in out
    code, out, err = run("gradescope-build", str(tmp_path / "ag.zip"), "--allow-unsandboxed")
    assert code == 0, err
    with zipfile.ZipFile(tmp_path / "ag.zip") as archive:
        assert "--insecure-no-sandbox" in archive.read("run_autograder").decode()
