"""The command line as a TA uses it: reports, JSON shapes, exit statuses and one-sentence errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from grader.cli import main
from tests.conftest import EXAMPLES, ROOT

# In-process `grade` commands use the session's sandbox pool instead of starting one each: none of
# them passes --assignment, --workers or --insecure-no-sandbox (which the shared pool ignores), and
# `doctor` and the subprocess tests do not go through it.
pytestmark = pytest.mark.usefixtures("shared_pool")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "grader.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120, cwd=ROOT)


def test_one_file_as_json_is_one_object() -> None:
    result = CliRunner().invoke(main, ["grade", str(EXAMPLES / "grad_b_keepdims.py"), "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["score"] == 9 and report["max_score"] == 10
    assert [p["number"] for p in report["problems"]] == [1, 2, 3, 4]
    check = report["problems"][0]["checks"][3]
    assert set(check) >= {"name", "score", "max_score", "passed", "message"}
    assert check["name"] == "grad_b" and check["passed"] is False
    assert report["errors"] == []
    assert report["grader_version"] and report["rubric_version"] and report["seed"] == 4391


def test_several_files_as_json_list_each_student() -> None:
    files = [str(EXAMPLES / n) for n in ("correct.py", "starter.py", "typo_arange.py")]
    result = CliRunner().invoke(main, ["grade", *files, "--format", "json"])
    assert result.exit_code == 0, result.output
    submissions = json.loads(result.stdout)["submissions"]
    assert [(s["student"], s["score"]) for s in submissions] == [("correct", 10), ("starter", 0), ("typo_arange", 7)]


def test_table_report_for_a_person() -> None:
    result = CliRunner().invoke(main, ["grade", str(EXAMPLES / "softmax_unstable.py")])
    assert result.exit_code == 0
    assert "softmax_unstable: 9.5 / 10" in result.output
    assert "[FAIL] numerically stable" in result.output
    assert "hint: Subtract each row's maximum" in result.output


def test_a_zero_score_still_exits_zero() -> None:
    result = CliRunner().invoke(main, ["grade", str(EXAMPLES / "syntax_error.py")])
    assert result.exit_code == 0
    assert "syntax error (line 18)" in result.output


def test_unreadable_input_is_one_sentence_and_exit_two(tmp_path: Path) -> None:
    completed = run("grade", str(tmp_path / "missing.py"))
    assert completed.returncode == 2
    assert "missing.py does not exist" in completed.stderr
    assert "Traceback" not in completed.stderr + completed.stdout


def test_a_bad_assignment_folder_is_one_sentence(tmp_path: Path) -> None:
    completed = run("grade", "--assignment", str(tmp_path), str(EXAMPLES / "correct.py"))
    assert completed.returncode == 2
    assert "is not an assignment folder" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_binary_file_scores_zero_with_a_reason(tmp_path: Path) -> None:
    binary = tmp_path / "layers.py"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    result = CliRunner().invoke(main, ["grade", str(binary), "--format", "json"])
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["score"] == 0
    assert "not UTF-8" in report["errors"][0] or "NUL" in report["errors"][0]


def test_doctor_lists_the_layers() -> None:
    result = CliRunner().invoke(main, ["doctor"])
    assert "no_network" in result.output
    assert result.exit_code == 0
