"""Every bundled example scores exactly what the rubric says, with feedback that names the mistake."""

from __future__ import annotations

from typing import cast

import pytest

from grader.engine.grading import Grader
from tests.conftest import EXAMPLES

CASES = sorted(p.name for p in EXAMPLES.glob("*.py"))


def test_every_example_has_an_expected_score(expected_examples: dict[str, dict[str, object]]) -> None:
    assert sorted(expected_examples) == CASES


@pytest.mark.parametrize("name", CASES)
def test_example_scores(name: str, grader: Grader, expected_examples: dict[str, dict[str, object]]) -> None:
    expected = expected_examples[name]
    report = grader.grade((EXAMPLES / name).read_bytes(), student=name)
    assert [p.score for p in report.problems] == expected["problems"]
    assert report.score == expected["score"]
    assert report.max_score == 10
    messages = " | ".join(c.message for p in report.problems for c in p.checks)
    if "message" in expected:
        assert cast(str, expected["message"]) in messages
    if "error" in expected:
        assert any(str(expected["error"]) in e for e in report.errors), report.errors
    else:
        assert report.errors == []
    if "warning" in expected:
        assert any(str(expected["warning"]) in w for w in report.warnings)
