"""Shared fixtures: one sandboxed grader for the whole session (starting zygotes costs ~0.2 s)."""

from __future__ import annotations

import json
import os
from collections.abc import Generator, Iterator
from pathlib import Path

import pluggy
import pytest

from grader.engine.assignment import Assignment, load_assignment
from grader.engine.grading import Grader

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "submissions" / "examples"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pluggy.Result[pytest.TestReport], None]:
    """Expose each phase's report on the test item, so fixtures can act on failure (screenshots)."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def assignment() -> Assignment:
    return load_assignment()


@pytest.fixture(scope="session")
def grader(assignment: Assignment) -> Iterator[Grader]:
    with Grader(assignment) as session_grader:
        yield session_grader


@pytest.fixture()
def shared_pool(grader: Grader, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """In-process CLI commands grade on the session's sandbox pool instead of starting their own.

    The commands' --assignment, --workers and --insecure-no-sandbox are ignored: use it only for
    commands that grade the default assignment with the default sandbox."""
    import grader.cli as cli

    monkeypatch.setattr(cli, "_make_grader", lambda *_args: Grader(grader.assignment, pool=grader.pool))
    yield


@pytest.fixture(scope="session")
def expected_examples() -> dict[str, dict[str, object]]:
    return json.loads((EXAMPLES / "expected.json").read_text())


@pytest.fixture(scope="session")
def correct_source() -> bytes:
    return (EXAMPLES / "correct.py").read_bytes()
