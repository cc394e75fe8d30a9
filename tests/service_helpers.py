"""Helpers shared by the service tests: a TestClient on a fresh data folder, and waiting for batches."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from grader.engine.grading import Grader
from grader.service import create_app
from grader.settings import Settings


def settings_for(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"data_dir": data_dir, "api_tokens": "", "callback_secret": "", "database_url": None}
    values.update(overrides)
    return Settings(**values)


@contextmanager
def service_client(grader: Grader, data_dir: Path, **overrides: Any) -> Iterator[TestClient]:
    dispatcher_options = overrides.pop("dispatcher_options", None)
    app = create_app(settings_for(data_dir, **overrides), grader_instance=grader,
                     dispatcher_options=dispatcher_options)
    with TestClient(app) as client:
        yield client


def wait_for_batch(client: TestClient, location: str, timeout: float = 60.0, **kwargs: Any) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(location, **kwargs)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["status"] in ("done", "failed"):
            return body
        assert time.monotonic() < deadline, f"batch still {body['status']} after {timeout} s: {body['progress']}"
        time.sleep(0.05)
