"""Schemathesis against the OpenAPI schema: generated requests never get a 5xx or an undocumented response."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from grader.engine.grading import Grader
from grader.service import create_app
from tests.conftest import EXAMPLES
from tests.service_helpers import settings_for, wait_for_batch

# Not `positive_data_acceptance`: a schema can say "a file", not "a UTF-8 Python file", so a
# schema-valid upload of random bytes is rightly refused with a 4xx that says why.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
# Form fields are strings on the wire: an "object" sent as a form field arrives as valid text, so
# `negative_data_rejection` only means something for paths, queries and JSON.
FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")


@pytest.fixture(scope="module")
def api_schema(grader: Grader, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    app = create_app(settings_for(tmp_path_factory.mktemp("schema"), callback_secret="k"), grader_instance=grader)
    with TestClient(app) as client:
        # rows to find, so that generated ids sometimes hit a real batch and submission
        batch = client.post("/api/v1/batches", files={"file": ("layers.py", (EXAMPLES / "correct.py").read_bytes())})
        wait_for_batch(client, batch.headers["location"])
    # schemathesis runs the app's lifespan again in its own event loop, for the rest of the session
    yield schemathesis.openapi.from_asgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_responses_match_the_schema(case: Any) -> None:
    form = (case.media_type or "").startswith(FORMS)
    case.call_and_validate(checks=CHECKS if form else [*CHECKS, negative_data_rejection])


def test_schema_lists_every_route(grader: Grader, tmp_path: Path) -> None:
    app = create_app(settings_for(tmp_path), grader_instance=grader)
    paths = set(app.openapi()["paths"])
    assert {"/healthz", "/metrics", "/login", "/logout", "/api/v1/grade", "/api/v1/batches",
            "/api/v1/batches/{batch_id}", "/api/v1/batches/{batch_id}/grades.csv",
            "/api/v1/batches/{batch_id}/regrade", "/api/v1/submissions/{submission_id}",
            "/api/v1/submissions/{submission_id}/regrade"} <= paths
