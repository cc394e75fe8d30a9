"""Helpers shared by the service tests: a TestClient on a fresh data folder, and waiting for batches."""

from __future__ import annotations

import io
import time
import zipfile
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


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def blackboard_zip(students: dict[str, tuple[str, bytes | None]], assignment: str = "Homework 5") -> bytes:
    """A Blackboard "Download Assignment" zip: per attempt, the file and a receipt (also with no file)."""
    files: dict[str, bytes] = {}
    for username, (name, source) in students.items():
        prefix = f"{assignment}_{username}_attempt_2024-10-01-12-00-00"
        listing = ("Files:\n\tOriginal filename: layers.py\n\tFilename: " + f"{prefix}_layers.py\n"
                   if source is not None else "Files:\n\tNo files were attached to this submission.\n")
        files[f"{prefix}.txt"] = (
            f"Name: {name} ({username})\nAssignment: {assignment}\nDate Submitted: Tuesday, October 1, 2024\n"
            f"Current Grade: Needs Grading\n\nSubmission Field:\nThere is no student submission text data.\n\n"
            f"Comments:\nThere are no student comments for this assignment.\n\n{listing}"
        ).encode()
        if source is not None:
            files[f"{prefix}_layers.py"] = source
    return zip_bytes(files)
