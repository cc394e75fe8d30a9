"""The command line as a TA uses it: reports, JSON shapes, exit statuses and one-sentence errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
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


def cli_process(*args: str, **options: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "grader.cli", *args], env=env, cwd=ROOT, text=True,
                            **options)  # type: ignore[call-overload]


def test_outputs_are_written_even_when_standard_output_closes_early(tmp_path: Path) -> None:
    """`grader grade ... --csv F | head`: the gradebook is written before the table is printed (once,
    a closed pipe lost every file the TA asked for, silently)."""
    process = cli_process("grade", str(EXAMPLES / "correct.py"), str(EXAMPLES / "grad_b_keepdims.py"),
                          "--csv", str(tmp_path / "grades.csv"), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert process.stdout is not None
    process.stdout.close()  # the reader went away before anything was printed
    process.wait(120)
    assert "grad_b_keepdims" in (tmp_path / "grades.csv").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_outputs_are_written_when_both_streams_go_to_a_pipe_closed_early(tmp_path: Path) -> None:
    """`grader grade ... 2>&1 | head -1`: the notes on standard error (the layout, "wrote ...") hit the
    closed pipe before the files were written, and lost every one of them, silently."""
    out = tmp_path / "out"
    process = cli_process("grade", str(EXAMPLES / "correct.py"), str(EXAMPLES / "grad_b_keepdims.py"),
                          "--csv", str(out / "grades.csv"), "--export", "blackboard", "--output", str(out / "bb.csv"),
                          "--feedback", str(out / "feedback"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout is not None
    assert process.stdout.readline().startswith("layout:")
    process.stdout.close()  # head -1 has its line
    assert process.wait(120) == 0
    assert "grad_b_keepdims" in (out / "grades.csv").read_text() and "grad_b_keepdims" in (out / "bb.csv").read_text()
    assert sorted(p.name for p in (out / "feedback").iterdir()) == ["correct.md", "grad_b_keepdims.md"]


def test_ctrl_c_stops_with_one_line_and_writes_nothing(tmp_path: Path) -> None:
    """Ctrl-C reaches the whole process group, the sandbox processes too: one sentence and status 130,
    no traceback from them, and no half-written gradebook."""
    slow = tmp_path / "slow.py"
    slow.write_text("import time\ntime.sleep(8)\n" + (EXAMPLES / "correct.py").read_text())
    process = cli_process("grade", str(slow), str(EXAMPLES / "correct.py"), "--csv", str(tmp_path / "grades.csv"),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    time.sleep(3)  # grading: the slow file is importing
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted while grading: nothing was written" in stderr
    assert "Traceback" not in stderr and "replacing it" not in stderr, stderr
    assert not (tmp_path / "grades.csv").exists()


@pytest.mark.parametrize("options, says", [
    (["--csv", "{tmp}/same.csv", "--export", "canvas", "--output", "{tmp}/same.csv"], "both name"),
    (["--export", "blackboard", "--output", "/proc/grades.csv"], "is not a folder this user can write in"),
    (["--feedback", "{tmp}/a-file"], "is a file; name a folder"),
])
def test_outputs_that_cannot_be_written_are_refused_before_grading(tmp_path: Path, options: list[str],
                                                                    says: str) -> None:
    """Once, a class was graded first (minutes, with a hang in it) and the outputs refused after."""
    (tmp_path / "a-file").write_text("not a folder")
    args = [o.replace("{tmp}", str(tmp_path)) for o in options]
    result = CliRunner().invoke(main, ["grade", str(EXAMPLES / "correct.py"), *args])
    assert result.exit_code == 2 and says in result.output, result.output
    assert "P1" not in result.output  # nothing was graded


def test_feedback_files_left_by_an_earlier_run_are_named(tmp_path: Path) -> None:
    """A TA zipping the feedback folder for the students would send them too: the command says so."""
    folder = tmp_path / "feedback"
    folder.mkdir()
    (folder / "someone_else.md").write_text("an earlier class")
    result = CliRunner().invoke(main, ["grade", str(EXAMPLES / "correct.py"), "--feedback", str(folder)])
    assert result.exit_code == 0, result.output
    assert "also holds 1 feedback file(s) this run did not write" in result.output
    assert "someone_else.md" in result.output
