"""Every hostile sample, graded by the command line with secrets in its environment and listeners up:
exact scores, nothing leaked, nothing arrived, nothing written outside, nothing left behind."""

from __future__ import annotations

import os
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
        assert not [line for line in os.popen(f"ps -o pid= --ppid {pid}")], "a zygote still has children"


def test_canary_is_where_the_samples_aim() -> None:
    """Guards the fixtures: if these paths drift, the containment checks above prove nothing."""
    for name, text in [(n, (HOSTILE / n).read_text()) for n in ("file_writer.py", "network.py")]:
        assert str(CANARY) in text, name
    assert "47391" in (HOSTILE / "network.py").read_text()
