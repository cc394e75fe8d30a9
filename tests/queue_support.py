"""Real Redis and PostgreSQL for the queue tests: a key prefix and a database of each test's own; also the
helpers any test with a real process or tool needs (a free port, a clean `grader` environment, waiting).

Absent services and tools skip the test with the reason, except under CI=true, where they fail it.
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
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EXAMPLES, ROOT

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
# the PostgreSQL server the tests make their databases on (as a user allowed to CREATE DATABASE)
POSTGRES_ADMIN_URL = os.environ.get("GRADER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def skip_or_fail(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true requires it)")
    pytest.skip(reason)


def installed(name: str, install: str) -> str:
    """The path of the command `name`; the test is skipped (failed under CI=true) saying how to `install` it."""
    path = shutil.which(name)
    if path is None:
        skip_or_fail(f"{name} is not installed ({install})")
    assert path is not None
    return path


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
    """A fresh database for one test on the POSTGRES_ADMIN_URL server (a psycopg SQLAlchemy URL), dropped afterwards."""
    import psycopg
    from sqlalchemy.engine import make_url

    server = make_url(POSTGRES_ADMIN_URL)
    where = f"{server.host or '127.0.0.1'}:{server.port or 5432}"
    if not port_open(server.host or "127.0.0.1", server.port or 5432):
        skip_or_fail(f"no PostgreSQL on {where}")
    name = f"grader_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as error:
        skip_or_fail(f"cannot connect to PostgreSQL at {where} as {server.username}: {error}")
        raise
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def expected_scores() -> dict[str, float]:
    data = json.loads((EXAMPLES / "expected.json").read_text())
    return {name: float(entry["score"]) for name, entry in data.items()}


def sample_students(copies: int, *, skip: Collection[str] = ()) -> dict[str, tuple[str, float]]:
    """Every sample submission but `skip`, `copies` times: student (`s00_correct`, ...) -> (sample file, score)."""
    samples = sorted(expected_scores().items())
    return {
        f"s{copy:02d}_{Path(name).stem}": (name, score)
        for copy in range(copies)
        for name, score in samples
        if name not in skip
    }


def build_class_zip(path: Path, copies: int, *, skip: tuple[str, ...] = ()) -> dict[str, float]:
    """A zip of `<student>/layers.py` folders: every sample submission `copies` times; returns student -> score."""
    students = sample_students(copies, skip=skip)
    with zipfile.ZipFile(path, "w") as archive:
        for student, (name, _) in students.items():
            archive.writestr(f"{student}/layers.py", (EXAMPLES / name).read_bytes())
    return {student: score for student, (_, score) in students.items()}


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


def wait_for(probe: Callable[[], Any], timeout: float, what: str, interval: float = 0.1, *,
             until: Callable[[Any], object] | None = None) -> Any:
    """Call `probe` every `interval` s until its value passes `until` (without one: until it is truthy), and
    return that value; past `timeout` s, fail saying `what` was awaited (with `until`: and the last value)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if until(value) if until is not None else value:
            return value
        if time.monotonic() >= deadline:
            last = f"; last: {value!r:.2000}" if until is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{last}")
        time.sleep(interval)


def redis_server_binary() -> str:
    return installed("redis-server", "apt-get install redis-server")


class RedisServer:
    """A private redis-server on a free loopback port that a test may kill and restart (empty, like a
    Redis without persistence), leaving the machine's shared Redis alone."""

    def __init__(self, folder: Path) -> None:
        self.binary = redis_server_binary()
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: port_open("127.0.0.1", self.port), 10, "redis-server to listen")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None


class TcpProxy:
    """A loopback TCP relay in front of a real server; `cut()` drops every connection and refuses new
    ones until `restore()`, which is what clients see while a database restarts."""

    def __init__(self, target: tuple[str, int]) -> None:
        import threading

        self.target = target
        self.port = free_port()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._threading = threading

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        self._threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                self._threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def restore(self) -> None:
        self.start()
