"""Gradescope: results.json for one submission, and the autograder zip that runs this grader unchanged.

Gradescope unpacks the autograder zip into /autograder/source, runs `setup.sh` once to build the
image, then `run_autograder` for every submission (the student's files are in
/autograder/submission; the results go to /autograder/results/results.json).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import tomllib
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grader
from grader.engine.report import SubmissionReport
from grader.export.text import fmt_points
from grader.intake.collect import OK, read_inputs

if TYPE_CHECKING:
    from grader.engine.grading import Grader

VISIBILITIES = ("hidden", "after_due_date", "after_published", "visible")


def gradescope_results(
    report: SubmissionReport, *, visibility: str = "visible", test_visibility: str = "visible"
) -> dict[str, Any]:
    """results.json: the total, an overall message, and one test per rubric check."""
    tests = []
    for problem in report.problems:
        for number, check in enumerate(problem.checks, 1):
            output = check.message
            if check.hint and not check.passed:
                output = f"{output}\nHint: {check.hint}" if output else f"Hint: {check.hint}"
            tests.append({
                "name": f"Problem {problem.number} ({problem.title}): {check.name}",
                "number": f"{problem.number}.{number}",
                "score": check.score,
                "max_score": check.max_score,
                "status": "passed" if check.passed else "failed",
                "output": output,
                "visibility": test_visibility,
            })
    lines = [f"Score: {fmt_points(report.score)} / {fmt_points(report.max_score)}"]
    lines += [f"Error: {error}" for error in report.errors]
    lines += [f"Note: {warning}" for warning in report.warnings]
    return {
        "score": report.score,
        "output": "\n".join(lines),
        "visibility": visibility,
        "stdout_visibility": "hidden",
        "execution_time": report.seconds,
        "tests": tests,
    }


def run_gradescope(
    grader: Grader,
    submission_dir: Path,
    results_path: Path,
    *,
    visibility: str = "visible",
    test_visibility: str = "visible",
) -> dict[str, Any]:
    """Grade the one submission in `submission_dir` and write results.json; nothing to grade scores 0."""
    intake = read_inputs([submission_dir], filename=grader.assignment.rubric.filename, layout="student")
    submission = intake.submissions[0]
    if submission.status == OK and submission.source is not None:
        report = grader.grade(submission.source)
    else:
        report = grader.zero(submission.detail or f"nothing to grade ({submission.status})")
    report.warnings[:0] = [w for w in submission.warnings + intake.warnings if w not in report.warnings]
    results = gradescope_results(report, visibility=visibility, test_visibility=test_visibility)
    results_path.parent.mkdir(parents=True, exist_ok=True)
    partial = results_path.with_name(results_path.name + ".partial")
    partial.write_text(json.dumps(results, indent=2))
    partial.replace(results_path)  # Gradescope never reads a half-written file
    return results


SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image.
set -euo pipefail
PY=""
for candidate in python3.13 python3.12 python3.11; do
    if command -v "$candidate" >/dev/null 2>&1; then PY="$candidate"; break; fi
done
if [ -z "$PY" ]; then
    # Ubuntu 22.04 images ship Python 3.10; the grader needs 3.11 or newer.
    apt-get update && apt-get install -y python3.11 python3.11-venv
    PY=python3.11
fi
if ! "$PY" -m venv /autograder/venv; then
    apt-get update && apt-get install -y "$PY-venv"
    "$PY" -m venv /autograder/venv
fi
/autograder/venv/bin/pip install --upgrade pip
/autograder/venv/bin/pip install -r /autograder/source/hw-grader/requirements.txt
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for every submission. AUTOGRADER_ROOT and GRADER_PYTHON exist only for tests.
set -euo pipefail
ROOT="${{AUTOGRADER_ROOT:-/autograder}}"
PYTHON="${{GRADER_PYTHON:-$ROOT/venv/bin/python}}"
export PYTHONPATH="$ROOT/source/hw-grader${{PYTHONPATH:+:$PYTHONPATH}}"
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
exec "$PYTHON" -c "from grader.cli import main; main()" gradescope \\
    --submission-dir "$ROOT/submission" \\
    --results "$ROOT/results/results.json" \\
    --visibility {visibility} --test-visibility {test_visibility}{extra}
"""


def runtime_requirements() -> list[str]:
    """The grader's run-time dependencies: from pyproject.toml in a checkout, else the installed metadata."""
    pyproject = Path(grader.__file__).resolve().parent.parent / "pyproject.toml"
    if pyproject.is_file():
        project = tomllib.loads(pyproject.read_text()).get("project", {})
        if project.get("name") == "hw-grader":
            return list(project.get("dependencies", []))
    requires = importlib.metadata.requires("hw-grader") or []
    return [r for r in requires if "extra ==" not in r]


def _package_files(package_dir: Path, prefix: str) -> list[tuple[Path, str]]:
    files = []
    for path in sorted(package_dir.rglob("*")):
        relative = path.relative_to(package_dir)
        if path.is_file() and "__pycache__" not in relative.parts and path.suffix not in (".pyc", ".pyo"):
            files.append((path, f"{prefix}/{relative.as_posix()}"))
    return files


def build_autograder_zip(
    out: Path,
    *,
    assignment_dir: Path | None = None,
    visibility: str = "visible",
    test_visibility: str = "visible",
    allow_unsandboxed: bool = False,
) -> list[str]:
    """Write the autograder zip: setup.sh, run_autograder, this grader's code and the assignment.

    `allow_unsandboxed` adds --insecure-no-sandbox for images where namespaces are unavailable: the
    per-submission container is then the only isolation, and student code could read the reference.
    """
    import reference

    for value in (visibility, test_visibility):
        if value not in VISIBILITIES:
            raise ValueError(f"visibility must be one of {', '.join(VISIBILITIES)}, not {value!r}")
    extra = ""
    files = _package_files(Path(grader.__file__).resolve().parent, "hw-grader/grader")
    files += _package_files(Path(reference.__file__).resolve().parent, "hw-grader/reference")
    if assignment_dir is not None:
        files += _package_files(assignment_dir.resolve(), "assignment")
        extra += ' \\\n    --assignment "$ROOT/source/assignment"'
    if allow_unsandboxed:
        extra += " \\\n    --insecure-no-sandbox"
    scripts = {
        "setup.sh": SETUP_SH,
        "run_autograder": RUN_AUTOGRADER.format(visibility=visibility, test_visibility=test_visibility, extra=extra),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    names = []
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in scripts.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.external_attr = (0o100755 << 16)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, text)
            names.append(name)
        archive.writestr("hw-grader/requirements.txt", "\n".join(runtime_requirements()) + "\n")
        names.append("hw-grader/requirements.txt")
        for path, name in files:
            archive.write(path, name)
            names.append(name)
    os.chmod(out, 0o644)
    return names
