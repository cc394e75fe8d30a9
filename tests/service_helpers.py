"""Helpers shared by the service tests: a TestClient on a fresh data folder, waiting for batches, and a live
`grader serve` subprocess. Upload zips come from tests/intake_fixtures.py."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import anyio
import httpx
from fastapi.testclient import TestClient

from grader.engine.grading import Grader
from grader.service import create_app
from grader.settings import Settings
from tests.conftest import ROOT
from tests.queue_support import free_port, grader_env


def settings_for(data_dir: Path, **overrides: Any) -> Settings:
    """Settings for a test service; what the tests do not set is not read from GRADER_* variables either."""
    values: dict[str, Any] = {"data_dir": data_dir, "api_tokens": "", "callback_secret": "", "database_url": None,
                              "queue_url": None}
    values.update(overrides)
    return Settings(**values)


class ResponseLike(Protocol):
    """What the tests read from a response: `httpx.Response`, and `httpx2.Response` (what TestClient returns)."""

    @property
    def status_code(self) -> int: ...

    @property
    def text(self) -> str: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    def json(self, **kwargs: Any) -> Any: ...


@contextmanager
def service_client(grader: Grader, data_dir: Path, **overrides: Any) -> Iterator[TestClient]:
    dispatcher_options = overrides.pop("dispatcher_options", None)
    raise_server_exceptions = overrides.pop("raise_server_exceptions", True)
    app = create_app(settings_for(data_dir, **overrides), grader_instance=grader,
                     dispatcher_options=dispatcher_options)
    with TestClient(app, raise_server_exceptions=raise_server_exceptions) as client:
        yield client


async def post_asgi(
    app: Any, path: str, headers: list[tuple[bytes, bytes]], chunks: list[bytes] | None = None, root_path: str = ""
) -> tuple[int, bytes]:
    """POST to an ASGI app as a server would, below TestClient: (status, body). The request body comes
    in `chunks`, one message each; with None, reading it at all fails the test."""
    parts = chunks or []
    messages = [{"type": "http.request", "body": chunk, "more_body": i < len(parts) - 1}
                for i, chunk in enumerate(parts)]
    statuses: list[int] = []
    body = b""

    async def receive() -> dict[str, Any]:
        if chunks is None:
            raise AssertionError(f"the body of POST {path} was read")
        if messages:
            return messages.pop(0)
        await anyio.sleep_forever()
        raise AssertionError  # unreachable

    async def send(message: dict[str, Any]) -> None:
        nonlocal body
        if message["type"] == "http.response.start":
            statuses.append(int(message["status"]))
        else:
            body += message.get("body", b"")

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "root_path": root_path, "query_string": b"",
             "headers": headers, "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}
    with anyio.fail_after(30):
        await app(scope, receive, send)
    return statuses[0], body


def wait_for_batch(
    client: httpx.Client | TestClient, location: str, timeout: float = 60.0, **kwargs: Any
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(location, **kwargs)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["status"] in ("done", "failed"):
            return body
        assert time.monotonic() < deadline, f"batch still {body['status']} after {timeout} s: {body['progress']}"
        time.sleep(0.05)


class LiveServer:
    """`grader serve` in a subprocess on a free loopback port, in its own session so it can be killed whole.

    None of the caller's GRADER_* variables reach it: it gets the data folder, no tokens, and `env`."""

    def __init__(self, data_dir: Path, log_path: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = grader_env(**{"GRADER_DATA_DIR": str(data_dir), "GRADER_API_TOKENS": "", "OPENBLAS_NUM_THREADS": "1",
                                 **env})
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
        self.kill()  # not left running behind a failed start
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
