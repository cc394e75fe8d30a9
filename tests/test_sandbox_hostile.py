"""Every hostile sample, graded by the command line with secrets in its environment and listeners up:
exact scores, nothing leaked, nothing arrived, nothing written outside, nothing left behind."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from grader.engine.grading import Grader
from tests.sandbox_support import (
    CANARY,
    EXPECTED,
    HOSTILE,
    SAMPLES,
    Listeners,
    assert_contained,
    assignment_copy,
    check_scores,
    grade_command,
    reports_by_file,
    run_grader,
    watching,
)


def test_every_hostile_sample_has_an_expected_score() -> None:
    assert sorted(EXPECTED) == SAMPLES
    for name, expected in EXPECTED.items():
        problems = expected["problems"]
        assert isinstance(problems, list)
        assert sum(problems) == expected["score"], name


@pytest.fixture(scope="module")
def short_assignment() -> Iterator[Path]:
    """Homework 5 with a 2 s call limit, so the samples that hang cost less (the memory bomb needs ~1 s)."""
    with assignment_copy(time_limit=2.0, import_time_limit=4.0) as path:
        yield path


@pytest.fixture()
def watched() -> Iterator[tuple[Listeners, dict[str, object]]]:
    with watching() as state:
        yield state


def test_hostile_samples_through_the_command_line(
    short_assignment: Path, watched: tuple[Listeners, dict[str, object]]
) -> None:
    listeners, before = watched
    result = run_grader(grade_command(short_assignment, sorted(HOSTILE.glob("*.py"))))
    assert result.returncode == 0, result.stderr[-2000:]
    check_scores(reports_by_file(result.stdout), messages=True)
    assert "stopped answering" not in result.stderr, "a zygote died"
    assert "Traceback" not in result.stderr
    assert_contained(result, listeners, before)
    assert not list(Path("/tmp").glob("hw-hostile*"))


def test_zygotes_survive_and_keep_grading(grader: Grader, correct_source: bytes) -> None:
    """The process killer and the combination run on the same zygotes as a correct submission."""
    zygotes = sorted(grader.pool.zygote_pids())
    names = ("process_killer.py", "combination.py", "fork_bomb.py")
    sources = [(name, (HOSTILE / name).read_bytes()) for name in names]
    reports = grader.grade_many([*sources, ("correct", correct_source)])
    assert [r.score for r in reports] == [10, 7, 8.5, 10]
    assert sorted(grader.pool.zygote_pids()) == zygotes
    for pid in zygotes:
        os.kill(pid, 0)  # still there
        # its one child is the forker the runs come from (it would be replaced, and the zygote with it,
        # had a run killed it), and no run outlived its grading
        forkers = [int(line) for line in os.popen(f"ps -o pid= --ppid {pid}")]
        assert len(forkers) == 1, "a zygote has children besides its forker"
        assert not [line for line in os.popen(f"ps -o pid= --ppid {forkers[0]}")], "a run outlived its grading"


def test_a_forker_that_dies_costs_no_grade(correct_source: bytes) -> None:
    """Runs are forked by a process of the zygote's own; should it die, between runs or during one,
    the submission is graded all the same (on a fresh zygote)."""
    once = b"def relu_forward(x):\n    if not SLEPT:\n        SLEPT.append(time.sleep(0.5))\n"
    slow = correct_source.replace(b"def relu_forward(x):\n", once, 1)
    slow = slow.replace(b"import numpy as np", b"import time\nimport numpy as np\nSLEPT = []", 1)
    with Grader(workers=1) as grader:
        assert grader.grade(correct_source).score == 10
        os.kill(_forker_of(grader.pool.zygote_pids()[0]), signal.SIGKILL)
        assert grader.grade(correct_source).score == 10
        forker = _forker_of(grader.pool.zygote_pids()[0])
        threading.Timer(0.2, os.kill, (forker, signal.SIGKILL)).start()  # while relu_forward first sleeps
        report = grader.grade(slow)
        assert report.score == 10, report.problems


def _forker_of(zygote: int) -> int:
    (forker,) = [int(line) for line in os.popen(f"ps -o pid= --ppid {zygote}")]
    return forker


def test_canary_is_where_the_samples_aim() -> None:
    """Guards the fixtures: if these paths drift, the containment checks above prove nothing."""
    for name, text in [(n, (HOSTILE / n).read_text()) for n in ("file_writer.py", "network.py")]:
        assert str(CANARY) in text, name
    assert "47391" in (HOSTILE / "network.py").read_text()
