"""`grader serve` as a real process on loopback: binding rules, tokens, streaming uploads, no token in logs."""

from __future__ import annotations

import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from grader.service.auth import session_value
from tests.conftest import EXAMPLES, ROOT
from tests.queue_support import grader_env
from tests.service_helpers import LiveServer

TOKEN = "live-test-token-5f1c9e"


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10"])
def test_serve_refuses_a_public_address_without_tokens(host: str, tmp_path: Path) -> None:
    env = grader_env(GRADER_API_TOKENS="", GRADER_DATA_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-m", "grader.cli", "serve", "--host", host, "--port", "1"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "GRADER_API_TOKENS" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "grader.db").exists()  # refused before anything started


def test_serve_refuses_a_short_token_beyond_loopback(tmp_path: Path) -> None:
    env = grader_env(GRADER_API_TOKENS=f"qZ9x,{TOKEN}-and-long", GRADER_DATA_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-m", "grader.cli", "serve", "--host", "0.0.0.0", "--port", "1"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "shorter than 16 characters" in result.stderr and "Traceback" not in result.stderr
    assert "qZ9x" not in result.stderr and TOKEN not in result.stderr


@pytest.mark.parametrize("command", [["serve", "--port", "1"], ["grade", str(EXAMPLES / "correct.py")]])
def test_a_bad_setting_is_one_sentence_naming_it(command: list[str], tmp_path: Path) -> None:
    env = grader_env(GRADER_DATA_DIR=str(tmp_path), GRADER_MAX_UPLOAD_MB="lots-of-megabytes", GRADER_WORKERS="-1")
    result = subprocess.run([sys.executable, "-m", "grader.cli", *command],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: invalid configuration:")
    assert "GRADER_MAX_UPLOAD_MB" in line and "GRADER_WORKERS" in line and "lots-of-megabytes" not in line


def test_an_open_server_answers_only_this_machine(tmp_path: Path) -> None:
    """Without tokens, on loopback: requests addressed to another name (DNS rebinding) or sent by a
    page of another site get 403; the TA's own requests pass."""
    live = LiveServer(tmp_path / "data", tmp_path / "server.log").start()
    try:
        assert httpx.get(f"{live.url}/api/v1/batches").status_code == 200
        assert httpx.head(f"{live.url}/healthz").status_code == 200
        rebound = httpx.get(f"{live.url}/api/v1/batches", headers={"Host": f"rebind.example:{live.port}"})
        assert rebound.status_code == 403 and rebound.json()["type"] == "urn:hw-grader:problem:not-local"
        files = {"file": ("layers.py", (EXAMPLES / "correct.py").read_bytes())}
        foreign = httpx.post(f"{live.url}/api/v1/grade", files=files, headers={"Origin": "https://evil.example"})
        assert foreign.status_code == 403
        own = httpx.post(f"{live.url}/api/v1/grade", files=files, headers={"Origin": live.url})
        assert own.status_code == 200 and own.json()["score"] == 10
    finally:
        live.stop()


def test_serve_explains_an_unreachable_database_in_one_line(tmp_path: Path) -> None:
    env = grader_env(GRADER_DATA_DIR=str(tmp_path), GRADER_DATABASE_URL="postgresql://grader:s3cret@127.0.0.1:1/grades")
    result = subprocess.run([sys.executable, "-m", "grader.cli", "serve", "--port", "1"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert "cannot open the database" in line and "127.0.0.1:1" in line
    assert "s3cret" not in result.stderr and "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    folder = tmp_path_factory.mktemp("live")
    live = LiveServer(folder / "data", folder / "server.log", GRADER_API_TOKENS=f"other-token,{TOKEN}",
                      GRADER_MAX_UPLOAD_MB="1")
    live.start()
    yield live
    live.stop()


def test_live_grade_with_and_without_token(server: LiveServer) -> None:
    files = {"file": ("layers.py", (EXAMPLES / "softmax_unstable.py").read_bytes())}
    refused = httpx.post(f"{server.url}/api/v1/grade", files=files)
    assert refused.status_code == 401 and refused.headers["content-type"] == "application/problem+json"
    graded = httpx.post(f"{server.url}/api/v1/grade", files=files, headers={"Authorization": f"Bearer {TOKEN}"})
    assert graded.status_code == 200 and graded.json()["score"] == 9.5
    health = httpx.get(f"{server.url}/healthz").json()
    assert health["layers"]["no_network"] is True


def _read_response(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_live_oversized_declared_length_is_refused_before_the_body(server: LiveServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            b"POST /api/v1/batches HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 104857600\r\n\r\n"
        )
        head = _read_response(sock)  # answered with no body byte sent
    assert head.startswith(b"HTTP/1.1 413") and b"application/problem+json" in head


def test_live_chunked_upload_is_cut_off_while_streaming(server: LiveServer) -> None:
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            b"POST /api/v1/grade HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        part = (b'--b\r\nContent-Disposition: form-data; name="file"; filename="layers.py"\r\n'
                b"Content-Type: text/x-python\r\n\r\n")
        sock.sendall(f"{len(part):x}\r\n".encode() + part + b"\r\n")
        chunk = b"#" * 65536
        framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        answered = False
        while sent < 50 * 1024 * 1024:
            try:
                sock.sendall(framed)
            except OSError:
                break  # the server closed the connection: it stopped reading
            sent += len(chunk)
            if select.select([sock], [], [], 0)[0]:
                answered = True
                break
        head = _read_response(sock) if answered or sent < 50 * 1024 * 1024 else b""
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    assert sent < 10 * 1024 * 1024  # refused after about the 1 MB limit, not after reading all 50 MB


def test_live_metrics_and_docs(server: LiveServer) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert "grader_http_requests_total" in httpx.get(f"{server.url}/metrics", headers=auth).text
    assert httpx.get(f"{server.url}/docs").status_code == 200


def test_tokens_never_reach_the_log(server: LiveServer) -> None:
    httpx.get(f"{server.url}/api/v1/batches", headers={"Authorization": f"Bearer {TOKEN}"})
    httpx.get(f"{server.url}/api/v1/batches", headers={"Authorization": "Bearer wrong-token-value"})
    httpx.get(f"{server.url}/api/v1/batches", cookies={"grader_token": session_value(TOKEN)})
    time.sleep(0.2)
    log = server.log()
    assert "GET /api/v1/batches" in log  # the access log is on ...
    assert TOKEN not in log and "wrong-token-value" not in log  # ... and shows no token


SNOOP = b'''
import os, glob

def _leaked():
    if any("GRADER" in key for key in os.environ):
        return True
    for path in glob.glob("/proc/*/environ") + glob.glob("/proc/*/cmdline"):
        try:
            with open(path, "rb") as handle:
                data = handle.read()
            if b"GRADER_API_TOKENS" in data or b"''' + TOKEN.encode() + b'''" in data:
                return True
        except OSError:
            pass
    return False

LEAKED = _leaked()
'''


def test_a_submission_cannot_read_the_tokens(server: LiveServer) -> None:
    # the correct solution, made wrong only if it could see a token: the score says which happened
    correct = (EXAMPLES / "correct.py").read_text()
    spy = SNOOP.decode() + correct.replace("def relu_forward(x):", "def relu_forward(x):\n    x = x + LEAKED", 1)
    assert spy != SNOOP.decode() + correct
    graded = httpx.post(f"{server.url}/api/v1/grade", files={"file": ("layers.py", spy.encode())},
                        headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    assert graded.status_code == 200, graded.text
    assert graded.json()["errors"] == [] and graded.json()["score"] == 10
    control = spy.replace("LEAKED = _leaked()", "LEAKED = True")  # had it seen one, it would lose points
    assert httpx.post(f"{server.url}/api/v1/grade", files={"file": ("layers.py", control.encode())},
                      headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60).json()["score"] < 10
