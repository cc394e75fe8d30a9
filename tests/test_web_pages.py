"""The page routes without a browser: what a missing batch or submission shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from grader.engine.grading import Grader
from tests.service_helpers import service_client


@pytest.mark.parametrize(
    ("path", "what"),
    [("/batches/99", "batch 99"), ("/batches/99/results", "batch 99"), ("/batches/99/similarity", "batch 99"),
     ("/submissions/5", "submission 5")],
)
def test_a_missing_page_is_a_404_that_says_what_is_missing(tmp_path: Path, grader: Grader, path: str,
                                                           what: str) -> None:
    with service_client(grader, tmp_path) as client:
        response = client.get(path)
    assert response.status_code == 404
    assert f"There is no {what} here." in response.text
