"""Gradescope mode: results.json from a submission folder, and an autograder zip that runs as shipped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from grader.engine.grading import Grader
from grader.export.gradescope import build_autograder_zip, run_gradescope
from tests.intake_fixtures import example, zip_bytes


def check_count(grader: Grader) -> int:
    return sum(len(p.checks) for p in grader.assignment.rubric.problems)


def test_results_json_has_one_test_per_rubric_check(grader: Grader, tmp_path: Path) -> None:
    submission = tmp_path / "submission" / "hw5" / "neuralnet"
    submission.mkdir(parents=True)
    (submission / "layers.py").write_bytes(example("grad_b_keepdims"))
    (submission / "utils.py").write_text("pass\n")
    results_path = tmp_path / "results" / "results.json"
    run_gradescope(grader, tmp_path / "submission", results_path, visibility="after_published",
                   test_visibility="after_due_date")
    results = json.loads(results_path.read_text())
    assert results["score"] == 9
    assert results["visibility"] == "after_published"
    assert results["output"].startswith("Score: 9 / 10")
    tests = results["tests"]
    assert len(tests) == check_count(grader)
    assert sum(t["max_score"] for t in tests) == 10
    assert sum(t["score"] for t in tests) == 9
    assert {t["visibility"] for t in tests} == {"after_due_date"}
    grad_b = next(t for t in tests if t["name"] == "Problem 1 (Fully-connected layer): grad_b")
    assert (grad_b["status"], grad_b["score"], grad_b["max_score"], grad_b["number"]) == ("failed", 0, 0.5, "1.4")
    assert "grad_b has shape (1, 5); expected (5,)" in grad_b["output"] and "Hint:" in grad_b["output"]
    assert all(set(t) >= {"name", "score", "max_score", "status", "output", "visibility"} for t in tests)


def test_a_zip_left_in_the_submission_folder_is_opened(grader: Grader, tmp_path: Path) -> None:
    (tmp_path / "submission").mkdir()
    (tmp_path / "submission" / "hw5.zip").write_bytes(zip_bytes({"hw5/neuralnet/layers.py": example("correct")}))
    results = run_gradescope(grader, tmp_path / "submission", tmp_path / "results.json")
    assert results["score"] == 10
    assert all(t["status"] == "passed" for t in results["tests"])


def test_nothing_to_grade_scores_zero_and_says_why(grader: Grader, tmp_path: Path) -> None:
    (tmp_path / "submission").mkdir()
    (tmp_path / "submission" / "report.pdf").write_bytes(b"%PDF-1.4")
    results = run_gradescope(grader, tmp_path / "submission", tmp_path / "results.json")
    assert results["score"] == 0
    assert "no layers.py found among: report.pdf" in results["output"]
    assert len(results["tests"]) == check_count(grader)
    assert all(t["status"] == "failed" and t["score"] == 0 for t in results["tests"])


def test_the_autograder_zip_runs_as_gradescope_would_run_it(tmp_path: Path) -> None:
    out = tmp_path / "autograder.zip"
    names = build_autograder_zip(out, visibility="visible", test_visibility="hidden")
    with zipfile.ZipFile(out) as archive:
        infos = {i.filename: i for i in archive.infolist()}
        assert {"setup.sh", "run_autograder", "hw-grader/requirements.txt", "hw-grader/grader/cli.py",
                "hw-grader/reference/hw5/rubric.toml", "hw-grader/reference/hw5/solution.py"} <= set(infos)
        assert set(names) == set(infos)
        assert not [n for n in infos if "__pycache__" in n or n.endswith(".pyc")]
        for script in ("setup.sh", "run_autograder"):
            assert (infos[script].external_attr >> 16) & 0o111 == 0o111
        requirements = archive.read("hw-grader/requirements.txt").decode().split()
        assert any(r.startswith("numpy") for r in requirements) and not any("pytest" in r for r in requirements)
        assert "--test-visibility hidden" in archive.read("run_autograder").decode()
        root = tmp_path / "autograder"
        archive.extractall(root / "source")
    (root / "submission").mkdir()
    (root / "submission" / "layers.py").write_bytes(example("relu_backward_no_mask"))
    os.chmod(root / "source" / "run_autograder", 0o755)
    env = {**os.environ, "AUTOGRADER_ROOT": str(root), "GRADER_PYTHON": sys.executable}
    done = subprocess.run([str(root / "source" / "run_autograder")], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    results = json.loads((root / "results" / "results.json").read_text())
    assert results["score"] == 9
    assert {t["visibility"] for t in results["tests"]} == {"hidden"}


def test_bad_visibility_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="visibility must be one of"):
        build_autograder_zip(tmp_path / "a.zip", visibility="sometimes")
