"""What the sandbox tests watch while hostile code runs: listeners, a canary folder, leftovers."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from grader.sandbox import cgroups, kernel
from tests.conftest import ROOT

HOSTILE = ROOT / "submissions" / "hostile"
EXPECTED: dict[str, dict[str, object]] = json.loads((HOSTILE / "expected.json").read_text())
SAMPLES = sorted(p.name for p in HOSTILE.glob("*.py"))
DEPLOYMENT = ROOT / "tests" / "sandbox_deployment.py"
SECRET = "secret-xyz-4391"
CANARY = Path("/tmp/hw-grader-canary")  # the hostile samples aim at it
PORT = 47391  # and at this port
# The service's environment, as a deployment would have it: none of it may reach a report.
SECRET_ENV = {
    "GRADER_API_TOKENS": SECRET,
    "GRADER_DATABASE_URL": f"postgresql://grader:{SECRET}@127.0.0.1:5432/grader",
    "GRADER_CALLBACK_SECRET": SECRET,
    "AWS_SECRET_ACCESS_KEY": SECRET,
}


@dataclass
class Listeners:
    """TCP, UDP and unix listeners on what the hostile samples try to reach; records all that arrives."""

    received: list[str] = field(default_factory=list)
    sockets: list[socket.socket] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self._stream(socket.AF_INET, ("127.0.0.1", PORT), "tcp")
        self._stream(socket.AF_INET6, ("::1", PORT), "tcp6")
        self._datagram(socket.AF_INET, ("127.0.0.1", PORT), "udp")
        self._datagram(socket.AF_INET6, ("::1", PORT), "udp6")
        self._stream(socket.AF_UNIX, str(CANARY / "listener.sock"), "unix")
        self._stream(socket.AF_UNIX, "\0hw-grader-canary", "abstract")
        self._datagram(socket.AF_UNIX, "\0hw-grader-canary-dgram", "abstract dgram")
        os.chmod(CANARY / "listener.sock", 0o777)

    def _stream(self, family: int, address: tuple[str, int] | str, name: str) -> None:
        server = socket.socket(family, socket.SOCK_STREAM)
        if family != socket.AF_UNIX:
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(address)
        server.listen(16)
        server.settimeout(0.2)
        self.sockets.append(server)

        def serve() -> None:
            while server.fileno() >= 0:
                try:
                    connection, _ = server.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                self.received.append(f"{name} connection")
                connection.close()

        self._thread(serve)

    def _datagram(self, family: int, address: tuple[str, int] | str, name: str) -> None:
        server = socket.socket(family, socket.SOCK_DGRAM)
        server.bind(address)
        server.settimeout(0.2)
        self.sockets.append(server)

        def serve() -> None:
            while server.fileno() >= 0:
                try:
                    data = server.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                self.received.append(f"{name}: {data[:40]!r}")

        self._thread(serve)

    def _thread(self, target: object) -> None:
        thread = threading.Thread(target=target, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self.threads.append(thread)

    def stop(self) -> None:
        for server in self.sockets:
            server.close()
        for thread in self.threads:
            thread.join(timeout=2)


@contextlib.contextmanager
def exclusive() -> Iterator[None]:
    """The canary folder and the port are fixed (the samples aim at them): test runs of other
    checkouts on the same machine take turns with them."""
    with open("/tmp/hw-grader-canary.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            shutil.rmtree(CANARY, ignore_errors=True)
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def listening() -> Iterator[Listeners]:
    listeners = Listeners()
    listeners.start()
    try:
        yield listeners
    finally:
        listeners.stop()


@contextlib.contextmanager
def watching() -> Iterator[tuple[Listeners, dict[str, object]]]:
    """Everything a hostile run is checked against: this process a subreaper, the canary folder and
    port held, the listeners up, and the state before (canary and leftovers) for assert_contained."""
    become_subreaper()
    with exclusive():
        make_canary()
        with listening() as listeners:
            before: dict[str, object] = {"canary": canary_state(), **leftovers()}
            yield listeners, before


def make_canary() -> None:
    """A world-writable folder with one file: only the sandbox, not file modes, keeps runs out."""
    if CANARY.exists():
        shutil.rmtree(CANARY)
    CANARY.mkdir()
    os.chmod(CANARY, 0o777)
    keep = CANARY / "keep.txt"
    keep.write_text("the canary\n")
    os.chmod(keep, 0o666)


def canary_state() -> dict[str, tuple[int, int, str]]:
    state = {}
    for path in sorted(CANARY.rglob("*")):
        info = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        state[str(path)] = (info.st_mode, info.st_mtime_ns, digest)
    return state


def leftovers(graders: tuple[int, ...] = ()) -> dict[str, set[str]]:
    """Everything a run or a grader could leave behind, to compare before and after: files the
    hostile samples name, cgroups and scratch folders of the given grader processes (and of this
    one), and this process's children (it is a subreaper: orphans come to it)."""
    owners = tuple(f"{cgroups.PREFIX}{pid}." for pid in (os.getpid(), *graders))
    found: dict[str, set[str]] = {"files": set(), "cgroups": set(), "children": set()}
    for folder in ("/tmp", "/var/tmp", "/dev/shm", "/", "/root", "/work"):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        found["files"].update(f"{folder}/{n}" for n in names if n.startswith(("hw-hostile", *owners)))
    for controller in ("memory", "pids"):
        hierarchy = cgroups.find_hierarchy(controller)
        if hierarchy is not None:
            found["cgroups"].update(
                f"{hierarchy.parent}/{n}" for n in os.listdir(hierarchy.parent) if n.startswith(owners)
            )
    found["children"] = children_of(os.getpid())
    return found


def children_of(pid: int) -> set[str]:
    """This process's children, zombies included: with it a subreaper, every orphan ends up here."""
    children = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            children.add(f"{entry} {fields[0]} {stat.split('(', 1)[1].rsplit(')', 1)[0]}")
    return children


def become_subreaper() -> None:
    kernel.prctl(kernel.PR_SET_CHILD_SUBREAPER, 1)


@contextlib.contextmanager
def assignment_copy(time_limit: float, import_time_limit: float) -> Iterator[Path]:
    """Homework 5 with shorter time limits, readable by any uid (for the unprivileged profile),
    in a temporary folder removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="hw-grader-test-"))
    try:
        os.chmod(folder, 0o755)
        target = folder / "hw5"
        shutil.copytree(ROOT / "reference" / "hw5", target)
        rubric = (target / "rubric.toml").read_text()
        rubric = rubric.replace("time_limit = 3.0 ", f"time_limit = {time_limit} ", 1)
        rubric = rubric.replace("import_time_limit = 10.0", f"import_time_limit = {import_time_limit}", 1)
        (target / "rubric.toml").write_text(rubric)
        for path in [target, *target.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        yield target
    finally:
        shutil.rmtree(folder)


def deployment_command(profile: str, *args: str, keep: tuple[Path, ...] = ()) -> list[str]:
    """`python -m grader.cli ARGS...` confined as the given deployment would confine it (see
    tests/sandbox_deployment.py), with the `keep` paths under /tmp still visible."""
    flags = [flag for path in keep for flag in ("--keep", str(path))]
    return [sys.executable, str(DEPLOYMENT), *flags, profile, "--", "-m", "grader.cli", *args]


def grade_command(assignment: Path, files: list[Path], profile: str | None = None) -> list[str]:
    args = ["grade", "--format", "json", "--assignment", str(assignment), *map(str, files)]
    if profile is None:
        return [sys.executable, "-m", "grader.cli", *args]
    return deployment_command(profile, *args, keep=(CANARY, assignment.parent))


@dataclass
class Finished:
    """A grader command that ran: its output, and its pid (the name of its cgroups and folders)."""

    returncode: int
    stdout: str
    stderr: str
    pid: int


def run_grader(command: list[str], timeout: float = 240) -> Finished:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADER_")}
    env.update(SECRET_ENV)
    env["PYTHONPATH"] = str(ROOT)
    with subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
    return Finished(process.returncode, stdout, stderr, process.pid)


def reports_by_file(stdout: str) -> dict[str, dict[str, object]]:
    payload = json.loads(stdout)
    reports = payload["submissions"] if "submissions" in payload else [payload]
    return {str(r["student"]).split("/")[-1].removesuffix(".py") + ".py": r for r in reports}


def failure_messages(report: dict[str, object]) -> str:
    problems = report["problems"]
    assert isinstance(problems, list)
    return " | ".join(c["message"] for p in problems for c in p["checks"] if not c["passed"])


def assert_contained(result: Finished, listeners: Listeners, before: dict[str, object]) -> None:
    """The shared postcondition of every hostile run."""
    assert SECRET not in result.stdout + result.stderr, "a secret of the grader's environment reached a report"
    assert listeners.received == [], f"something reached the listeners: {listeners.received}"
    assert canary_state() == before["canary"], "a run changed the canary folder"
    after = leftovers((result.pid,))
    for kind in ("files", "cgroups", "children"):
        assert after[kind] == before[kind], (
            f"left behind ({kind}): {set(after[kind]) ^ set(cast(set[str], before[kind]))}"
        )


def check_scores(reports: dict[str, dict[str, object]], *, messages: bool) -> None:
    """Every hostile sample graded, each exactly as submissions/hostile/expected.json says."""
    assert sorted(reports) == SAMPLES
    for name, expected in EXPECTED.items():
        report = reports[name]
        scores = [p["score"] for p in report["problems"]]  # type: ignore[attr-defined]
        assert scores == expected["problems"], f"{name}: {scores}: {failure_messages(report)}"
        assert report["score"] == expected["score"], name
        assert report["errors"] == [], f"{name}: {report['errors']}"
        if messages and "message" in expected:
            assert str(expected["message"]) in failure_messages(report), f"{name}: {failure_messages(report)}"


def skip_if_python_under_tmp(profile: str = "compose") -> None:
    """The compose simulation mounts a tmpfs over /tmp, as a read-only container root would have one:
    a Python install living under /tmp (a virtualenv there) would vanish from under the grader."""
    import pytest

    prefix = os.path.realpath(sys.prefix)
    if profile == "compose" and (prefix == "/tmp" or prefix.startswith("/tmp/")):
        pytest.skip(f"the compose simulation hides /tmp, where this Python lives ({prefix})")
