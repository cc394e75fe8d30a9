"""Real Redis and PostgreSQL for the queue tests: a key prefix and a database of each test's own.

Absent services skip the test with the reason, except under CI=true, where they fail it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "submissions" / "examples"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def skip_or_fail(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the service must be running)")
    pytest.skip(reason)


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def redis_namespace(db: int = 3) -> Iterator[tuple[str, str]]:
    """(redis URL, key prefix) on the shared Redis; every key under the prefix is deleted afterwards."""
    import redis

    if not port_open(REDIS_HOST, REDIS_PORT):
        skip_or_fail(f"no Redis on {REDIS_HOST}:{REDIS_PORT}")
    url = f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"
    namespace = f"grader-test-{uuid.uuid4().hex[:12]}"
    try:
        yield url, namespace
    finally:
        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for one test (SQLAlchemy URL), dropped afterwards."""
    import psycopg

    if not port_open("127.0.0.1", 5432):
        skip_or_fail("no PostgreSQL on 127.0.0.1:5432")
    name = f"grader_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True)
    except psycopg.OperationalError as error:
        skip_or_fail(f"cannot connect to PostgreSQL as postgres: {error}")
        raise
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def expected_scores() -> dict[str, float]:
    data = json.loads((EXAMPLES / "expected.json").read_text())
    return {name: float(entry["score"]) for name, entry in data.items()}


def build_class_zip(path: Path, copies: int, *, skip: tuple[str, ...] = ()) -> dict[str, float]:
    """A zip of `<student>/layers.py` folders: every sample submission `copies` times; returns student -> score."""
    expected = {}
    scores = expected_scores()
    with zipfile.ZipFile(path, "w") as archive:
        for copy in range(copies):
            for name, score in sorted(scores.items()):
                if name in skip:
                    continue
                student = f"s{copy:02d}_{Path(name).stem}"
                archive.writestr(f"{student}/layers.py", (EXAMPLES / name).read_bytes())
                expected[student] = score
    return expected


def grader_env(**values: str) -> dict[str, str]:
    """The environment of a `grader` subprocess running this checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADER_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(values)
    return env


def start_grader(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`python -m grader.cli ARGS` in its own process group, output to `log`."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "grader.cli", *args],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_process(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM the process (its group, should it leave anything behind, gets SIGKILL)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    try:
        os.killpg(process.pid, 9)
    except (ProcessLookupError, PermissionError):
        pass


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def redis_server_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        skip_or_fail("redis-server is not installed (apt-get install redis-server)")
    assert binary is not None
    return binary
