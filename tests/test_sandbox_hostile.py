"""Every hostile sample, graded by the command line with secrets in its environment and listeners up:
exact scores, nothing leaked, nothing arrived, nothing written outside, nothing left behind."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from grader.engine.grading import Grader
from tests.conftest import ROOT
from tests.queue_support import grader_env
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


def test_zygotes_of_a_killed_grader_leave_without_a_traceback(tmp_path: Path, correct_source: bytes) -> None:
    """kill -9 of the grader (the service) while a run is in progress: its zygote finds the pipe to it
    closed and ends, without a traceback in the log it shares with the grader."""
    once = b"def relu_forward(x):\n    if not SLEPT:\n        SLEPT.append(time.sleep(0.5))\n"
    slow = correct_source.replace(b"def relu_forward(x):\n", once, 1)
    slow = slow.replace(b"import numpy as np", b"import time\nimport numpy as np\nSLEPT = []", 1)
    (tmp_path / "slow.py").write_bytes(slow)
    script = (
        "import sys\nfrom pathlib import Path\nfrom grader.engine.grading import Grader\n"
        "grader = Grader(workers=1)\nprint(*grader.pool.zygote_pids(), flush=True)\n"
        f"grader.grade(Path({str(tmp_path / 'slow.py')!r}).read_bytes())\n"
    )
    with open(tmp_path / "stderr", "wb") as stderr:
        process = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=grader_env(),
                                   stdout=subprocess.PIPE, stderr=stderr)
    assert process.stdout is not None
    zygote = int(process.stdout.readline())
    time.sleep(0.3)  # into relu_forward's sleep: the run's later results are still to be relayed
    process.kill()
    process.wait(10)
    deadline = time.monotonic() + 20
    while not _ended(zygote) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _ended(zygote), "the zygote outlived its grader"
    assert "Traceback" not in (tmp_path / "stderr").read_text()


def _ended(pid: int) -> bool:
    """Gone, or a zombie: orphans go to the nearest subreaper, which this test process is once the
    hostile samples' checks have run (`become_subreaper`), so a zombie of ours is reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    if state != "Z":
        return False
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return True


def _forker_of(zygote: int) -> int:
    (forker,) = [int(line) for line in os.popen(f"ps -o pid= --ppid {zygote}")]
    return forker


def test_canary_is_where_the_samples_aim() -> None:
    """Guards the fixtures: if these paths drift, the containment checks above prove nothing."""
    for name, text in [(n, (HOSTILE / n).read_text()) for n in ("file_writer.py", "network.py")]:
        assert str(CANARY) in text, name
    assert "47391" in (HOSTILE / "network.py").read_text()
