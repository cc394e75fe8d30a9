"""Helpers shared by the service tests: a TestClient on a fresh data folder, and waiting for batches."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
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
    raise_server_exceptions = overrides.pop("raise_server_exceptions", True)
    app = create_app(settings_for(data_dir, **overrides), grader_instance=grader,
                     dispatcher_options=dispatcher_options)
    with TestClient(app, raise_server_exceptions=raise_server_exceptions) as client:
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


ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LiveServer:
    """`grader serve` in a subprocess on a free loopback port, in its own session so it can be killed whole."""

    def __init__(self, data_dir: Path, log_path: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "GRADER_DATA_DIR": str(data_dir), "GRADER_API_TOKENS": "",
                    "OPENBLAS_NUM_THREADS": "1", **env}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> LiveServer:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "grader.cli", "serve", "--port", str(self.port)],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"grader serve exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"grader serve did not answer /healthz within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the server and everything it started (zygotes, their children): a crash, not a shutdown."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
