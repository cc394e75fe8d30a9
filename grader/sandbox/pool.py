"""The trusted side of the sandbox: a pool of zygotes, one per core, and the results they relay."""

from __future__ import annotations

import itertools
import logging
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import grader
from grader.sandbox import cgroups
from grader.sandbox.isolation import MINIMUM, IsolationConfig, Limits, SandboxUnavailable, remove_tree
from grader.sandbox.protocol import MessageReader, ProtocolError, expected_values, write_message

logger = logging.getLogger(__name__)

# What a zygote inherits of the environment: nothing of the service's, only what numpy needs.
_PASSED_THROUGH = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "LD_LIBRARY_PATH")
# Only numpy: every module preloaded makes each fork slower (scipy doubles it); submissions that
# import scipy, cv2 or matplotlib load them inside their own run.
DEFAULT_PRELOAD = ("numpy", "numpy.linalg")


@dataclass
class Value:
    """One returned value: an array, or why there is none."""

    kind: str  # "array", "none" or "invalid"
    array: np.ndarray | None = None
    message: str = ""
    precision: str = ""  # "float32" or "float16" when the student's value had less than float64's


@dataclass
class CallResult:
    ok: bool
    values: list[Value] = field(default_factory=list)
    error: dict[str, Any] | None = None
    mutated: list[int] = field(default_factory=list)
    fallback: bool = False


@dataclass
class RunResult:
    calls: list[CallResult]
    import_error: dict[str, Any] | None
    seconds: float
    processes: int = 1  # sandboxed processes the submission took (a crash or hang ends one; the rest run in another)


@dataclass
class Job:
    """One submission to run: its module compiled by the trusted side (marshalled), the calls to
    make, and the input arrays they refer to.

    A zygote keeps the last calls and arrays it was given and is sent them again only when a job
    brings other lists (by identity): a plan must not change once a job has used it.
    """

    code: bytes
    calls: list[dict[str, Any]]
    arrays: list[np.ndarray]
    limits: Limits
    module: str = "submission"
    filename: str = "submission.py"
    forbidden: list[str] = field(default_factory=list)
    source: bytes = b""  # the file as submitted: the run puts it in its scratch, where __file__ names it


class ZygoteDied(Exception):
    """The zygote itself stopped answering; the job can be retried on a fresh one."""


def _zygote_env() -> dict[str, str]:
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(grader.__file__)))
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": "/tmp",  # noqa: S108 - the zygote points it at its runs' scratch once it has started
        "LANG": "C.UTF-8",
        "PYTHONPATH": package_parent,
        "PYTHONDONTWRITEBYTECODE": "1",
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": "/tmp",  # noqa: S108 - as HOME
    }
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        env[name] = "1"
    for name in _PASSED_THROUGH:
        if name in os.environ:
            env[name] = os.environ[name]
    return env


class ZygoteProcess:
    def __init__(self, index: int, config: dict[str, Any]) -> None:
        self.index = index
        self.isolation = config["isolation"]
        self.process = subprocess.Popen(
            [sys.executable, "-I", "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
             "from grader.sandbox.zygote import main; main()", _zygote_env()["PYTHONPATH"]],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=_zygote_env(),
            close_fds=True,
            cwd="/",
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.write_fd = self.process.stdin.fileno()
        self.reader = MessageReader(self.process.stdout.fileno(), max_array_bytes=1 << 30)
        write_message(self.write_fd, config)
        self.layers: dict[str, bool] = {}
        self.notes: dict[str, str] = {}
        self.plan: tuple[list[dict[str, Any]], list[np.ndarray]] | None = None  # the one the zygote has
        self.graded = False  # whether it has run a job
        self.log_capacity = Limits().max_output_bytes  # the output its results log holds (it grows)

    def wait_ready(self, timeout: float = 60.0) -> dict[str, bool]:
        try:
            message = self.reader.read(time.monotonic() + timeout)
        except (TimeoutError, ProtocolError):
            message = None
        if message is None or message.header.get("op") != "ready":
            raise SandboxUnavailable("the sandbox process failed to start; run `grader doctor` for details")
        layers = message.header["layers"]
        self.layers = {str(k): bool(v) for k, v in layers["held"].items()}
        self.notes = {str(k): str(v) for k, v in layers["notes"].items()}
        return self.layers

    def suits(self, job: Job) -> bool:
        """Whether this zygote can run the job with the forker it has, or make one without having
        graded anything: a new forker inherits the zygote's heap, which holds traces of what it
        graded. It can if it has no plan yet, or one equal to the job's (the job's is then kept, and
        not sent again), and its results log is large enough for the job's output limit or it has
        graded nothing yet."""
        if self.graded and job.limits.max_output_bytes > self.log_capacity:
            return False
        if self.plan is None or self.holds_plan_of(job):
            return True
        calls, arrays = self.plan
        if calls == job.calls and len(arrays) == len(job.arrays) and all(
            a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()  # -0.0 and NaN too
            for a, b in zip(arrays, job.arrays, strict=True)
        ):
            self.plan = (job.calls, job.arrays)
            return True
        return False

    def holds_plan_of(self, job: Job) -> bool:
        """Whether the zygote has the job's plan already (these very lists: a plan never changes once
        a job has used it)."""
        return self.plan is not None and self.plan[0] is job.calls and self.plan[1] is job.arrays

    def run(self, job: Job, timeout: float) -> RunResult:
        header = {
            "op": "run",
            "limits": job.limits.to_dict(),
            "module": job.module,
            "filename": job.filename,
            "forbidden": job.forbidden,
        }
        code = np.frombuffer(job.code, dtype=np.uint8)
        source = np.frombuffer(job.source, dtype=np.uint8)
        try:
            if not self.holds_plan_of(job):
                write_message(self.write_fd, {"op": "plan", "calls": job.calls}, job.arrays)
                self.plan = (job.calls, job.arrays)  # held, so their identity cannot be reused
            write_message(self.write_fd, header, [code, source])
        except (BrokenPipeError, OSError) as error:
            raise ZygoteDied(str(error)) from error
        self.graded = True
        self.log_capacity = max(self.log_capacity, job.limits.max_output_bytes)
        results: list[CallResult | None] = [None] * len(job.calls)
        import_error = None
        deadline = time.monotonic() + timeout
        while True:
            try:
                message = self.reader.read(deadline)
            except (TimeoutError, ProtocolError) as error:
                raise ZygoteDied(f"zygote stopped answering ({type(error).__name__})") from error
            if message is None:
                raise ZygoteDied("zygote exited")
            op = message.header.get("op")
            if op == "done":
                break
            if op == "sandbox_failed":
                raise ZygoteDied(f"the sandbox could not be applied: {message.header.get('message', '')}")
            if op == "import_error":
                import_error = message.header["error"]
            elif op == "results":
                remaining = iter(message.arrays)
                for header in message.header["results"]:
                    results[header["call"]] = _call_result(header, remaining, job.calls[header["call"]])
        missing = CallResult(ok=False, error={"type": "lost", "message": "no result came back"})
        return RunResult([r or missing for r in results], import_error, float(message.header.get("seconds", 0.0)),
                         int(message.header.get("processes", 1)))

    def close(self) -> None:
        try:
            write_message(self.write_fd, {"op": "exit"})
        except OSError:
            pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._close_streams()
        self.clean_up()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self._close_streams()
        self.clean_up()

    def clean_up(self) -> None:
        """Remove what the zygote made, in case it could not (it was killed): cgroups, scratch."""
        name = self.isolation.get("cgroup_name")
        if name:
            cgroups.remove_named(name)
        scratch = self.isolation.get("scratch_base")
        if scratch and os.path.lexists(scratch):
            remove_tree(scratch)

    def _close_streams(self) -> None:
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


def _call_result(header: dict[str, Any], remaining: Iterator[np.ndarray], call: dict[str, Any]) -> CallResult:
    if header.get("status") != "ok":
        return CallResult(ok=False, error=header.get("error"))
    if len(header["values"]) != expected_values(call):  # the zygote checks this too; a scorer must never see it
        return CallResult(ok=False, error={"type": "protocol", "message": "sent a malformed result"})
    values = []
    for value in header["values"]:
        if value["kind"] == "array":
            values.append(Value("array", next(remaining), precision=str(value.get("precision", ""))))
        else:
            values.append(Value(value["kind"], None, value.get("message", "")))
    return CallResult(ok=True, values=values, mutated=header.get("mutated", []), fallback=header.get("fallback", False))


class SandboxPool:
    """A fixed set of zygotes shared by threads; `run` blocks until a zygote is free."""

    _serial = itertools.count()

    def __init__(
        self,
        size: int | None = None,
        *,
        hidden_paths: list[str] | None = None,
        preload: tuple[str, ...] = DEFAULT_PRELOAD,
        allow_insecure: bool = False,
        base_uid: int = 61000,
    ) -> None:
        self.size = size or os.cpu_count() or 1
        self.preload = list(preload)
        self.hidden_paths = list(hidden_paths or [])
        self.base_uid = base_uid
        # names of this pool's cgroups and scratch folders: the grader's pid first, for sweeping
        self.name = f"{cgroups.PREFIX}{os.getpid()}.{next(self._serial)}"
        self.idle: queue.Queue[ZygoteProcess] = queue.Queue()
        self.lock = threading.Lock()
        self.closed = False
        _sweep_stale()
        zygotes = [self._spawn(i) for i in range(self.size)]
        try:
            layer_sets = [z.wait_ready() for z in zygotes]
        except Exception:
            for zygote in zygotes:
                zygote.kill()
            raise
        self.layers: dict[str, bool] = {k: all(s.get(k, False) for s in layer_sets) for k in layer_sets[0]}
        self.layer_notes: dict[str, str] = dict(zygotes[0].notes)
        missing = [layer for layer in MINIMUM if not self.layers.get(layer)]
        if missing:
            if not allow_insecure:
                for zygote in zygotes:
                    zygote.close()
                raise SandboxUnavailable(
                    "this host cannot give student code even the minimum isolation (missing: "
                    f"{', '.join(missing)}); run `grader doctor` to see why, or pass --insecure-no-sandbox "
                    "to grade anyway"
                )
            logger.warning("GRADING WITHOUT A SANDBOX: student code is not isolated (missing: %s)", ", ".join(missing))
        for zygote in zygotes:
            self.idle.put(zygote)

    def _pin(self, zygote: ZygoteProcess) -> None:
        """One core per zygote (and its runs), when there are as many cores as zygotes: a run then
        never migrates, which saves a tenth of the grading time on two cores."""
        cores = sorted(os.sched_getaffinity(0))
        if self.size <= len(cores):
            try:
                os.sched_setaffinity(zygote.process.pid, {cores[zygote.index]})
            except OSError:
                pass

    def _spawn(self, index: int) -> ZygoteProcess:
        name = f"{self.name}.{index}"
        isolation = IsolationConfig(
            uid=self.base_uid + index,
            hidden_paths=self.hidden_paths,
            cgroup_name=name,
            scratch_base=os.path.join(tempfile.gettempdir(), name),
        )
        zygote = ZygoteProcess(index, {"isolation": isolation.__dict__, "preload": self.preload})
        self._pin(zygote)
        return zygote

    def _respawn(self, index: int) -> ZygoteProcess:
        zygote = self._spawn(index)
        try:
            zygote.wait_ready()
        except SandboxUnavailable:
            logger.exception("a replacement sandbox process failed to start")
        return zygote

    def run(self, job: Job) -> RunResult:
        functions = len({c["fn"] for c in job.calls}) + 1
        limits = job.limits
        timeout = (limits.import_time_limit + limits.time_limit * (functions + 2)) * (functions + 1) + 10
        zygote = self.idle.get()
        try:
            if not zygote.suits(job):
                # what it graded left traces in its heap, which the forker it would make for this job
                # would hand to every run: a fresh zygote makes that forker
                zygote.close()
                zygote = self._respawn(zygote.index)
            return zygote.run(job, timeout)
        except ZygoteDied:
            logger.warning("sandbox process %d stopped answering; replacing it", zygote.process.pid)
            zygote.kill()
            zygote = self._respawn(zygote.index)
            raise
        finally:
            self.idle.put(zygote)

    def zygote_pids(self) -> list[int]:
        """The zygotes' process ids (for measuring them); only idle zygotes are listed while grading."""
        return [z.process.pid for z in list(self.idle.queue)]

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        for _ in range(self.size):
            self.idle.get().close()

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _sweep_stale() -> None:
    """Remove cgroups and scratch folders left by grader processes that were killed."""
    for path in cgroups.sweep_stale():
        logger.info("removed a stale sandbox cgroup %s", path)
    base = tempfile.gettempdir()
    try:
        entries = os.listdir(base)
    except OSError:
        return
    for entry in entries:
        if cgroups.stale(entry):
            remove_tree(os.path.join(base, entry))
