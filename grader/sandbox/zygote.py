"""A pre-warmed interpreter that has one sandboxed child forked per submission.

Started as a fresh `python -I` with a scrubbed environment, so it has never seen the reference, the
hidden cases or the service's secrets. It speaks the wire protocol on its stdin/stdout with the
trusted pool, relays each child's results after validating them, and turns a child that hangs,
crashes or exits into a failure of the one function it was running: the remaining calls go to a
fresh child. The children are forked by its forker (see `Forker`), a copy of it made before any
submission is handled, so that no child can find an earlier submission's traces in the memory it
inherits; a submission's compiled module and results pass through an arena no child inherits and a
log the zygote wipes after each run.
"""

from __future__ import annotations

import gc
import importlib
import math
import mmap
import os
import random
import re
import resource
import select
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np
import orjson

from grader.sandbox import kernel
from grader.sandbox.child import PROGRESS, Harness, mark_progress, warm_up
from grader.sandbox.isolation import Isolation, IsolationConfig, Limits, SandboxSetupFailed
from grader.sandbox.protocol import (
    LOG_RESERVE,
    MAX_HEADER_BYTES,
    RESULTS_LOG,
    ArraysTooLarge,
    MessageReader,
    ProtocolError,
    arena,
    expected_values,
    forward_message,
    parse_header,
    untrusted_loads,
    write_message,
)

SIGNAL_NAMES = {
    signal.SIGSEGV: "crashed with a segmentation fault (SIGSEGV)",
    signal.SIGBUS: "crashed with a bus error (SIGBUS)",
    signal.SIGFPE: "crashed with a floating-point exception (SIGFPE)",
    signal.SIGABRT: "aborted (SIGABRT)",
    signal.SIGILL: "crashed with an illegal instruction (SIGILL)",
    signal.SIGSYS: "made a forbidden system call (SIGSYS)",
}
# What a job message may hold: the compiled module and its source (at most 1 MB) and the plan's input arrays.
JOB_ARENA_BYTES = 256 * 1024 * 1024
MAX_VALUES_PER_CALL = 16
RUN_GC_THRESHOLD = 50_000  # allocations between a run's garbage collections (Python's default: 700)


@dataclass
class ChildOutcome:
    """How one child ended: cleanly, or with the function it was in and why."""

    failure: dict[str, Any] | None = None
    function: str | None = None
    import_failed: bool = False
    answered: int = 0  # calls this child answered before it ended


class Zygote:
    job_deadline = float("inf")
    job_time_budget = float("inf")  # seconds: the submission time budget of the job running now
    processes = 0  # processes the job running now has taken so far

    def __init__(self, control_in: int, control_out: int, config: dict[str, Any]) -> None:
        self.control_in = control_in
        self.control_out = control_out
        self.isolation = Isolation(IsolationConfig(**config.get("isolation", {})))
        # whatever a run leaves behind is reparented here, to be reaped, not to the host's init
        kernel.prctl(kernel.PR_SET_CHILD_SUBREAPER, 1)
        self.layers = self.isolation.prepare_zygote()
        self.progress = mmap.mmap(-1, mmap.PAGESIZE)  # shared with each child across fork
        self.results_log = results_log(Limits().max_output_bytes)  # shared too: a run's answers
        self.plan: tuple[list[dict[str, Any]], list[np.ndarray]] = ([], [])
        self._forker: Forker | None = None
        for name in config.get("preload", []):
            try:
                importlib.import_module(name)
            except Exception as error:  # noqa: BLE001 - a missing optional package is reported, not fatal
                print(f"zygote: could not preload {name}: {error}", file=sys.stderr)
        self.isolation.set_run_environment()

    def send(self, header: dict[str, Any], arrays: list[np.ndarray] | None = None) -> None:
        write_message(self.control_out, header, arrays or [])

    def send_error(self, index: int, error: dict[str, Any]) -> None:
        self.send({"op": "results", "results": [{"call": index, "status": "error", "error": error}]})

    def serve(self, reader: MessageReader) -> None:
        try:
            self.send({"op": "ready", "layers": self.layers.to_dict(), "pid": os.getpid()})
            while True:
                message = reader.read()
                if message is None or message.header.get("op") == "exit":
                    return
                if message.header.get("op") == "plan":
                    # the same for every submission: kept, so that a job carries only its compiled module
                    self.plan = (message.header["calls"], [np.array(a) for a in message.arrays])
                    reader.wipe()
                    warm_up(*self.plan)
                    gc.collect()
                    gc.freeze()  # a run's collections then never walk (and copy) the zygote's objects
                    self.restart_forker()
                elif message.header.get("op") == "run":
                    started = time.monotonic()
                    calls, inputs = self.plan
                    self.processes = 0
                    try:
                        self.run_job({**message.header, "calls": calls}, [*message.arrays[:2], *inputs])
                    except SandboxSetupFailed as error:
                        self.send({"op": "sandbox_failed", "message": str(error)})
                        return
                    finally:
                        reader.wipe()
                    self.send({"op": "done", "seconds": time.monotonic() - started, "processes": self.processes})
        finally:
            self.stop_forker()
            self.isolation.close()

    def wipe_log(self) -> None:
        """Free the whole log (a run may write anywhere in it, whatever its count says): its pages
        read as zeros to the next run. About 25 µs."""
        self.results_log.madvise(mmap.MADV_REMOVE)

    # -- one submission ---------------------------------------------------------------------------

    def run_job(self, job: dict[str, Any], arrays: list[np.ndarray]) -> None:
        limits = Limits(**job["limits"])
        if limits.max_output_bytes + LOG_RESERVE + RESULTS_LOG.size > len(self.results_log):
            self.results_log.close()
            self.results_log = results_log(limits.max_output_bytes)
            self.restart_forker()
        calls: list[dict[str, Any]] = job["calls"]
        pending = set(range(len(calls)))
        broken: dict[str, dict[str, Any]] = {}
        # One wall-clock budget for the whole submission, across every child it takes: without it, a
        # submission that stays just under each limit in every function holds a core for minutes. It is
        # also the hard ceiling of every child, so that a child faking progress forever still ends.
        self.job_time_budget = submission_time_budget(limits, calls)
        self.job_deadline = time.monotonic() + self.job_time_budget
        budget = OutputBudget(limits.max_output_bytes, len({c["fn"] for c in calls}))
        # A crash is charged to a call only when it was the first thing its process did (after one that
        # answered other calls first, the call runs again in a fresh process: what ran before it may
        # have caused it). A hang is charged at once: running it again would cost the submission
        # another call limit of its time. The first charged failure of a function costs that call
        # alone (a function may fail on one input only); a second one, every call of it still to run.
        failed: set[int] = set()
        struck: set[str] = set()
        attempts = 0
        while pending:
            for index in sorted(pending):
                function = calls[index]["fn"]
                if function in broken:
                    self.send_error(index, broken[function])
                    pending.discard(index)
            if not pending:
                return
            attempts += 1
            outcome = self.run_child(job, arrays, limits, pending, broken, failed, budget)
            if outcome.import_failed:
                return
            if outcome.failure is None:
                for index in sorted(pending):  # the child ended without answering these
                    self.send_error(index, _lost())
                return
            if outcome.failure.get("type") == "total_time":
                for index in sorted(pending):
                    self.send_error(index, outcome.failure)
                return
            if outcome.function is None or outcome.function in broken or attempts > 2 * len(calls) + 2:
                for index in sorted(pending):
                    self.send_error(index, outcome.failure)
                return
            index = self.current_call()
            if outcome.failure.get("type") in ("output", "protocol") or not 0 <= index < len(calls):
                broken[outcome.function] = outcome.failure  # a run's own words: its function is done
            elif calls[index]["fn"] == outcome.function and (
                outcome.answered == 0 or outcome.failure.get("type") == "timeout"
            ):
                failed.add(index)
                if index in pending:
                    pending.discard(index)
                    self.send_error(index, outcome.failure)
                if outcome.function in struck:
                    broken[outcome.function] = {**outcome.failure, "not_run": True}
                struck.add(outcome.function)

    def run_child(
        self,
        job: dict[str, Any],
        arrays: list[np.ndarray],
        limits: Limits,
        pending: set[int],
        broken: dict[str, dict[str, Any]],
        failed: set[int],
        budget: OutputBudget,
    ) -> ChildOutcome:
        start = min(pending)
        child_job = {
            "filename": job.get("filename", "submission.py"),
            "module": job.get("module", "submission"),
            "forbidden": job.get("forbidden", []),
            "limits": limits.to_dict(),
            "start": start,
            "skip": [i for i in range(start, len(job["calls"])) if i not in pending],
            "broken": sorted(broken),
            "failed": sorted(failed),  # a producer among them gives its consumers the documented fallback
            "own_file": bool(self.isolation.run_scratch),  # the source goes into the scratch, if there is one
        }
        # the whole page, not just the counters: a run can write all of it, and the next run reads it
        self.progress[:] = bytes(len(self.progress))
        mark_progress(self.progress, 0, -1)
        RESULTS_LOG.pack_into(self.results_log, 0, 0)
        self.isolation.before_run(limits)
        oom_before = self.isolation.oom_kills()
        job_fd = _job_file(child_job, arrays[:2])
        try:
            read_fd, write_fd = os.pipe()
            try:
                pid, pidfd = self.forker().fork_run(job_fd, write_fd)
            except BaseException:
                os.close(read_fd)
                raise
            finally:
                os.close(write_fd)
        finally:
            os.close(job_fd)
        self.processes += 1
        reaped = None
        try:
            try:
                outcome, reaped = self.relay(read_fd, pid, job, limits, pending, oom_before)
            finally:
                os.close(read_fd)
                if reaped is None:
                    self.forker().kill_and_wait(pid, pidfd)
                os.close(pidfd)
            if not outcome.import_failed:  # the run is gone: what it logged can be read whole
                outcome = self.settle(outcome, reaped is not None, job["calls"], pending, budget, limits)
        finally:
            self.wipe_log()
            self.isolation.after_run()
        return outcome

    def run_forked(self, job_fd: int, result_fd: int, forker: int) -> NoReturn:  # pragma: no cover - in the child
        """One run, in a process the forker (`forker`, a pidfd) has just made: read the job, enter the
        sandbox, import the submission and answer the calls from `start` on."""
        code = 0
        try:
            job, module_code, module_source = _read_job(job_fd)
            os.close(job_fd)
            limits = Limits(**job["limits"])
            self.isolation.enter_sandbox(limits, keep_fds=[result_fd], parent=forker)
            # sent before any student code runs, so a run cannot fake a broken sandbox
            write_message(result_fd, {"op": "sandboxed"})
            # a run is short and memory-capped: collecting cycles every 700 allocations costs it 7%
            gc.set_threshold(RUN_GC_THRESHOLD, 50, 100)
            calls, inputs = self.plan
            harness = Harness({**job, "calls": calls}, inputs, result_fd, self.results_log, self.progress)
            if harness.load(module_code, job["module"], job["forbidden"], module_source):
                harness.run(job["start"])
        except BaseException:  # noqa: BLE001
            code = 70
        os._exit(code)

    def forker(self) -> Forker:
        if self._forker is None:
            self._forker = Forker.start(self)
        return self._forker

    def restart_forker(self) -> None:
        """A new forker, for a new plan or results log: it must hold what the runs are to inherit."""
        self.stop_forker()
        self.forker()

    def stop_forker(self) -> None:
        if self._forker is not None:
            self._forker.stop()
            self._forker = None

    def serve_forks(self, sock: socket.socket, zygote: int) -> NoReturn:  # pragma: no cover - in the forker
        """The forker's loop (see Forker): fork a run per job, say which it is, reap it, say how it ended."""
        code = 0
        try:
            kernel.prctl(kernel.PR_SET_PDEATHSIG, signal.SIGKILL)  # if the zygote dies, so does the forker
            if os.getppid() != zygote:  # it died before that
                raise SystemExit
            os.close(self.control_in)
            os.close(self.control_out)
            self.isolation.measure_address_space()  # what its runs inherit (no job arena among it)
            self.isolation.count_threads()
            _seed_random()
            alive = os.pidfd_open(os.getpid())  # readable once the forker has ended: its runs check it
            while self.fork_one(sock, alive):
                pass
        except BaseException:  # noqa: BLE001
            code = 70
        os._exit(code)

    def fork_one(self, sock: socket.socket, alive: int) -> bool:  # pragma: no cover - runs in the forker
        """One job: fork its run, say which it is, reap it, say how it ended; False once the zygote has
        closed its end. In a frame of its own, which is gone before the next run is forked: no run
        finds another's pid or status among the forker's locals."""
        message, fds, _, _ = socket.recv_fds(sock, 1, 2)
        if not message or len(fds) != 2:
            for fd in fds:
                os.close(fd)
            return False
        job_fd, result_fd = fds
        pid = self.isolation.fork_run()
        if pid == 0:  # its parent-death signal, and whether the forker is still there, are enter_sandbox's
            sock.close()
            self.run_forked(job_fd, result_fd, alive)
        os.close(job_fd)
        os.close(result_fd)
        pidfd = os.pidfd_open(pid)
        socket.send_fds(sock, [FORKED.pack(pid)], [pidfd])
        os.close(pidfd)
        _, status, usage = os.wait4(pid, 0)
        sock.send(REAPED.pack(status, usage.ru_utime + usage.ru_stime))
        return True

    def settle(
        self, outcome: ChildOutcome, exited: bool, calls: list[dict[str, Any]], pending: set[int],
        budget: OutputBudget, limits: Limits,
    ) -> ChildOutcome:
        """Forward what the run logged, and say how it ended: a breach in the log decides when the run
        ended by itself, and a run that exited having answered every call ended well."""
        answered, breach = self.collect(calls, pending, budget, limits)
        if breach is not None and (outcome.failure is None or exited):
            outcome = breach
        elif exited and not pending:
            outcome = ChildOutcome(None, outcome.function)
        outcome.answered = answered
        return outcome

    def collect(
        self, calls: list[dict[str, Any]], pending: set[int], budget: OutputBudget, limits: Limits
    ) -> tuple[int, ChildOutcome | None]:
        """Read the results log frame by frame, validating each as a frame from the wire, and forward
        the good ones in one message. Returns how many calls were answered, and the breach (a
        malformed frame, or output past a function's share) that stopped the reading, if any."""
        (logged,) = RESULTS_LOG.unpack_from(self.results_log, 0)
        view = memoryview(self.results_log)
        end = RESULTS_LOG.size + min(logged, len(self.results_log) - RESULTS_LOG.size)
        offset = RESULTS_LOG.size
        results: list[dict[str, Any]] = []
        specs: list[dict[str, Any]] = []
        # slices of the log itself: copies would stay in this process's heap, which later runs inherit
        bodies: list[memoryview] = []
        breach = None
        try:
            while offset < end and breach is None:
                if offset + 4 > end:
                    raise ProtocolError("truncated frame")
                (length,) = struct.unpack_from(">I", view, offset)
                if length > MAX_HEADER_BYTES or offset + 4 + length > end:
                    raise ProtocolError("truncated frame")
                # one copy of the header: the run is gone, but a grandchild of it might not be
                raw = bytes(view[offset + 4 : offset + 4 + length])
                header, _, total = parse_header(raw, budget.left, untrusted_loads)
                body_start = offset + 4 + length
                if header.get("op") != "results" or body_start + total > end:
                    raise ProtocolError("unexpected frame")
                clean = _clean_results(header.get("results"), header["arrays"], calls, pending)
                if clean is None:
                    raise ProtocolError("malformed result")
                sizes = _bytes_by_function(clean, header["arrays"], calls)
                over = budget.over(sizes)
                if over is not None:
                    breach = ChildOutcome(_output_breach(limits), over)
                    break
                budget.charge(sizes)
                results += clean
                specs += header["arrays"]
                bodies.append(view[body_start : body_start + total])
                pending.difference_update(result["call"] for result in clean)
                offset = body_start + total
        except ArraysTooLarge as error:
            # charged to the function whose results take it furthest past its share
            clean = _clean_results(error.header.get("results"), error.header["arrays"], calls, pending)
            over = budget.over(_bytes_by_function(clean, error.header["arrays"], calls)) if clean else None
            breach = ChildOutcome(_output_breach(limits), over or _writing(calls, pending))
        except ProtocolError as error:
            breach = ChildOutcome({"type": "protocol", "message": f"sent a malformed result ({error})"},
                                  _writing(calls, pending))
        try:
            if results:
                forward_message(self.control_out, {"op": "results", "results": results}, specs, *bodies)
        except (TypeError, ProtocolError):  # what cannot be encoded is refused before a byte is written
            pending.update(result["call"] for result in results)
            return 0, ChildOutcome({"type": "protocol", "message": "sent a malformed result"},
                                   self.current_function(calls))
        finally:
            for body in bodies:
                body.release()
            view.release()
        return len(results), breach

    def relay(
        self, read_fd: int, pid: int, job: dict[str, Any], limits: Limits, pending: set[int], oom_before: int,
    ) -> tuple[ChildOutcome, Any]:
        """Follow the child until it ends (its results go to the log; its pipe says only that it is
        sandboxed and imported); a call running past its time limit is killed.

        Returns how the child ended, and its reaped status when it ended by itself.
        """
        calls = job["calls"]
        reader = MessageReader(read_fd, max_array_bytes=0, split=False, untrusted=True)
        started = time.monotonic()
        poll = min(0.05, limits.time_limit / 10)
        seen_sequence = -1
        call_deadline = started + limits.import_time_limit
        sandboxed = False
        in_import = True
        while True:
            now = time.monotonic()
            sequence, _ = PROGRESS.unpack_from(self.progress, 0)
            if sequence != seen_sequence:
                seen_sequence = sequence
                if not in_import:  # progress while importing extends nothing: the import has its own limit
                    call_deadline = now + limits.time_limit
            if now >= self.job_deadline:
                text = (f"not finished: the submission used up the {self.job_time_budget:g} s one submission may "
                        "take in all (every import and call together)")
                return ChildOutcome({"type": "total_time", "message": text}, self.current_function(calls)), None
            if now >= call_deadline:  # (past the job deadline, the check above has returned)
                current = self.current_function(calls)
                if in_import:
                    text = f"did not finish importing within {limits.import_time_limit:g} s"
                    return self.fail_import(pending, {"type": "timeout", "message": text}), None
                text = f"did not return within {limits.time_limit:g} s"
                return ChildOutcome({"type": "timeout", "message": text}, current), None
            try:
                message = reader.read(min(now + poll, call_deadline, self.job_deadline))
            except TimeoutError:
                continue
            except ArraysTooLarge as error:  # arrays on the pipe, where none belong (results go to the log)
                failure = (_output_breach(limits) if error.total > limits.max_output_bytes
                           else {"type": "protocol", "message": "sent an unexpected message"})
                return ChildOutcome(failure, self.current_function(calls)), None
            except ProtocolError as error:
                failure = {"type": "protocol", "message": f"sent a malformed result ({error})"}
                return ChildOutcome(failure, self.current_function(calls)), None
            if message is None:
                current = self.current_function(calls)
                try:
                    reaped = self.forker().wait(min(call_deadline, self.job_deadline))
                except TimeoutError:  # it closed its end of the pipe but carries on: a hang all the same
                    if in_import:
                        text = f"did not finish importing within {limits.import_time_limit:g} s"
                        return self.fail_import(pending, {"type": "timeout", "message": text}), None
                    text = f"did not return within {limits.time_limit:g} s"
                    return ChildOutcome({"type": "timeout", "message": text}, current), None
                if not sandboxed:
                    raise SandboxSetupFailed(f"a run died before its sandbox was complete ({_status_text(reaped)})")
                failure = _describe_exit(reaped, limits)
                if failure["type"] == "killed" and self.isolation.oom_kills() > oom_before:
                    failure = _memory_breach(limits)
                if in_import:
                    return self.fail_import(pending, failure), reaped
                return ChildOutcome(failure, current), reaped  # settled once the log is read
            op = message.header.get("op")
            if not sandboxed:
                if op != "sandboxed":
                    raise SandboxSetupFailed("a run spoke before its sandbox was complete")
                sandboxed = True
            elif op == "imported" and in_import:
                in_import = False
                call_deadline = time.monotonic() + limits.time_limit
            elif op == "import_error" and in_import:
                return self.fail_import(pending, _clean_error(message.header.get("error"))), None
            else:
                failure = {"type": "protocol", "message": "sent an unexpected message"}
                return ChildOutcome(failure, self.current_function(calls)), None

    def current_function(self, calls: list[dict[str, Any]]) -> str | None:
        """The function the child is running now, as it last marked in the shared progress page."""
        index = self.current_call()
        return calls[index]["fn"] if 0 <= index < len(calls) else None

    def current_call(self) -> int:
        """The call the child is running now, as it last marked in the shared progress page."""
        _, index = PROGRESS.unpack_from(self.progress, 0)
        return int(index)

    def fail_import(self, pending: set[int], failure: dict[str, Any]) -> ChildOutcome:
        self.send({"op": "import_error", "error": failure})
        for index in sorted(pending):
            self.send_error(index, {**failure, "import": True})
        pending.clear()
        return ChildOutcome(failure, None, import_failed=True)


@dataclass
class OutputBudget:
    """The result bytes a submission may send: `total` in all, and an equal share of it per function,
    so that a function that floods is charged for it, never a function that ran after it."""

    total: int
    functions: int
    sent: dict[str, int] = field(default_factory=dict)

    @property
    def share(self) -> int:
        return self.total // max(1, self.functions)

    @property
    def left(self) -> int:
        return self.total - sum(self.sent.values())

    def over(self, sizes: dict[str, int]) -> str | None:
        """The function these result bytes would take furthest past its share, if any."""
        share = self.share
        worst, furthest = None, 0
        for name, size in sizes.items():
            excess = self.sent.get(name, 0) + size - share
            if excess > furthest:
                worst, furthest = name, excess
        return worst

    def charge(self, sizes: dict[str, int]) -> None:
        for name, size in sizes.items():
            self.sent[name] = self.sent.get(name, 0) + size


def _bytes_by_function(
    clean: list[dict[str, Any]], specs: list[dict[str, Any]], calls: list[dict[str, Any]]
) -> dict[str, int]:
    """Result bytes per function in a batch `_clean_results` accepted (its arrays are float64, one
    spec per array value, in order)."""
    sizes = iter(math.prod(spec["shape"]) * 8 for spec in specs)
    by_function: dict[str, int] = {}
    for result in clean:
        name = calls[result["call"]]["fn"]
        for value in result.get("values", []):
            if value["kind"] == "array":  # only functions with arrays, in the order of their first: ties
                by_function[name] = by_function.get(name, 0) + next(sizes)  # go to the earliest of them
    return by_function


def _writing(calls: list[dict[str, Any]], pending: set[int]) -> str | None:
    """The function that was running when a frame was written: calls run, and log their results,
    in order, so it is the first call the frames before it left unanswered."""
    return calls[min(pending)]["fn"] if pending else None


def _output_breach(limits: Limits) -> dict[str, Any]:
    return {"type": "output", "message": f"sent more than its share of the {limits.max_output_bytes} bytes of results"}


def results_log(max_output_bytes: int) -> mmap.mmap:
    """Shared memory for a run's results: its output limit, room for their headers, and the count."""
    return mmap.mmap(-1, RESULTS_LOG.size + max_output_bytes + LOG_RESERVE)


def submission_time_budget(limits: Limits, calls: list[dict[str, Any]]) -> float:
    """Wall-clock seconds for one submission: its import, plus the per-call limit for each function and two more."""
    return limits.import_time_limit + limits.time_limit * (len({c["fn"] for c in calls}) + 2)


def _lost() -> dict[str, Any]:
    return {"type": "lost", "message": "the process ended before this call ran"}


def _memory_breach(limits: Limits) -> dict[str, Any]:
    return {"type": "memory", "message": f"memory limit of {limits.memory_limit_mb} MB exceeded"}


def clean_text(value: Any, limit: int) -> str:
    """A submission's words as plain text: no terminal escapes, no direction overrides, no lone
    surrogates (UTF-8 cannot carry them onwards), capped. Anything but a string (or a float or a
    small integer) is dropped: its str() could be arbitrarily costly, or refused."""
    if type(value) is float or small_int(value):
        value = str(value)
    return _CONTROL.sub(" ", value[:limit]) if type(value) is str else ""


def small_int(value: Any, low: int = -(2**31), high: int = 2**31) -> bool:
    """An exact int in [low, high): the standard parser reads integers of any size, which neither
    orjson (forwarding them) nor str() (past 4,300 digits) would take."""
    return type(value) is int and low <= value < high


_VALUE_KINDS = frozenset(("array", "none", "invalid"))
_LOW_PRECISIONS = frozenset(("float16", "float32"))
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ud800-\udfff]")


def _clean_error(error: Any) -> dict[str, Any]:
    if not isinstance(error, dict):
        return {"type": "protocol", "message": "malformed error"}
    line = error.get("line")
    return {
        "type": clean_text(error.get("type", "error"), 80),
        "message": clean_text(error.get("message", ""), 400),
        "line": line if small_int(line) else None,
        "fallback": error.get("fallback") is True,
    }


def _clean_results(
    headers: Any, specs: list[dict[str, Any]], calls: list[dict[str, Any]], pending: set[int]
) -> list[dict[str, Any]] | None:
    """Rebuild result headers from the fields the trusted side understands, or None if malformed."""
    if not isinstance(headers, list) or not headers:  # an empty batch would only be noise to relay
        return None
    clean = []
    seen: set[int] = set()
    for header in headers:
        result = _clean_result(header, calls, pending) if isinstance(header, dict) else None
        if result is None or result["call"] in seen:  # one result per call
            return None
        seen.add(result["call"])
        clean.append(result)
    expected_arrays = sum(v["kind"] == "array" for r in clean for v in r.get("values", []))
    if expected_arrays != len(specs) or any(spec["dtype"] != "f8" for spec in specs):
        return None
    return clean


def _clean_result(header: dict[str, Any], calls: list[dict[str, Any]], pending: set[int]) -> dict[str, Any] | None:
    index = header.get("call")
    if type(index) is not int or index not in pending:  # exact type: no bools
        return None
    status = header.get("status")
    if status == "error":
        return {"call": index, "status": "error", "error": _clean_error(header.get("error"))}
    if status != "ok":
        return None
    values = header.get("values")
    wanted = expected_values(calls[index])
    if type(values) is not list or len(values) != wanted or wanted > MAX_VALUES_PER_CALL:
        return None
    clean_values = []
    for value in values:
        kind = value.get("kind") if type(value) is dict else None
        if type(kind) is not str or kind not in _VALUE_KINDS:  # (a set: unhashable kinds must not reach it)
            return None
        message = value.get("message")
        clean = {"kind": kind, "message": "" if message is None else clean_text(message, 300)}
        precision = value.get("precision")
        if type(precision) is str and precision in _LOW_PRECISIONS:
            clean["precision"] = precision
        clean_values.append(clean)
    mutated = header.get("mutated", [])
    if not isinstance(mutated, list) or not all(small_int(m, 0, MAX_VALUES_PER_CALL) for m in mutated):
        mutated = []
    return {
        "call": index,
        "status": "ok",
        "values": clean_values,
        "mutated": mutated[:MAX_VALUES_PER_CALL],
        "fallback": header.get("fallback") is True,
    }


def _status_text(reaped: tuple[int, float] | None) -> str:
    if reaped is None:
        return "no status"
    code = os.waitstatus_to_exitcode(reaped[0])
    return f"signal {-code}" if code < 0 else f"exit status {code}"


def _describe_exit(reaped: tuple[int, float] | None, limits: Limits) -> dict[str, Any]:
    if reaped is None:
        return _lost()
    status, cpu = reaped
    code = os.waitstatus_to_exitcode(status)
    signum = -code if code < 0 else 0
    cpu_breach = {"type": "cpu", "message": f"CPU time limit of {limits.cpu_limit} s exceeded"}
    if signum == signal.SIGXCPU or (signum == signal.SIGKILL and cpu >= limits.cpu_limit - 0.5):
        return cpu_breach
    if signum == signal.SIGXFSZ:
        return {"type": "file_size", "message": f"file-size limit of {limits.max_file_bytes} bytes exceeded"}
    if signum == signal.SIGKILL:
        return {"type": "killed", "message": "was killed (SIGKILL)"}
    if signum:
        text = SIGNAL_NAMES.get(signum, f"was killed by signal {signum}")  # type: ignore[call-overload]
        return {"type": "crash", "message": text}
    return {"type": "exit", "message": f"ended the process (exit status {code}) instead of returning"}


RUN_SEED = 0  # where `random` starts in every run


def _seed_random() -> None:  # pragma: no cover - runs in the forker
    """The same start for every run, on every machine: runs are forked without CPython's at-fork
    hooks (random's reseeding among them); with a fixed start, a submission that draws from `random`
    grades the same every time. numpy's global generator is left alone: `numpy.random` is not loaded
    here (seeding it would load it into every run: 8 MB more to fork), and a run that uses it loads
    it, seeded by numpy from the system, as before."""
    random.seed(RUN_SEED)


FORKED = struct.Struct("<i")  # the run's pid (its pidfd travels beside it)
REAPED = struct.Struct("<id")  # its wait status and the CPU seconds it used
FORKER_TIMEOUT = 30.0  # seconds: a forker that takes longer to fork or to reap a killed run is broken


class Forker:
    """The process every run is forked from, seen from the zygote.

    A copy of the zygote made when the plan arrives (and again when the plan or the results log
    changes), that does nothing but fork: it waits for a job, forks the run, says which process it
    is, reaps it and says how it ended. Forking from it instead of from the zygote does two things.
    The zygote goes on working between runs (reading jobs, relaying results), and every page it
    writes after a fork is a copy-on-write fault: about 440 a submission, paid by nobody now. And a
    run inherits the memory of a process that has never handled a submission: nothing an earlier
    submission left in the zygote's heap (the text of an error, say) can be found in it.

    The job travels in a memory file the forker never reads: the run reads it, before its sandbox.
    """

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        # signalled and waited for through this, never by number: it may have been reaped already
        self.handle = os.pidfd_open(pid)
        self.sock = sock
        self.running = False  # a run was forked and its end not yet heard

    @classmethod
    def start(cls, zygote: Zygote) -> Forker:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the forker
            ours.close()
            zygote.serve_forks(theirs, parent)
        theirs.close()
        return cls(pid, ours)

    def fork_run(self, job_fd: int, result_fd: int) -> tuple[int, int]:
        """Have a run forked, with the job in `job_fd` and `result_fd` as its pipe: (pid, pidfd)."""
        try:
            socket.send_fds(self.sock, [b"r"], [job_fd, result_fd])
            self._wait_readable(time.monotonic() + FORKER_TIMEOUT)
            message, fds, _, _ = socket.recv_fds(self.sock, FORKED.size, 1)
        except OSError as error:
            raise SandboxSetupFailed(f"the forker failed ({error})") from error
        if len(message) != FORKED.size or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise SandboxSetupFailed("the forker stopped")
        self.running = True
        return FORKED.unpack(message)[0], fds[0]

    def wait(self, deadline: float) -> tuple[int, float]:
        """The run's wait status and CPU seconds, once it has ended; TimeoutError past the deadline."""
        self._wait_readable(deadline)
        try:
            message = self.sock.recv(REAPED.size)
        except OSError as error:
            raise SandboxSetupFailed(f"the forker failed ({error})") from error
        if len(message) != REAPED.size:
            raise SandboxSetupFailed("the forker stopped")
        self.running = False
        status, cpu = REAPED.unpack(message)
        return status, cpu

    def kill_and_wait(self, pid: int, pidfd: int) -> None:
        """End a run that has not ended by itself (its process group too), and wait until it is reaped."""
        if not self.running:
            return
        if not self._readable(time.monotonic()):  # once its end is reported, its pid may be reused
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.wait(time.monotonic() + FORKER_TIMEOUT)
        except TimeoutError:
            raise SandboxSetupFailed("a killed run was not reaped") from None

    def stop(self) -> None:
        """End the forker; a run still in progress dies with it (its parent-death signal)."""
        self.sock.close()
        try:
            signal.pidfd_send_signal(self.handle, signal.SIGKILL)  # it holds nothing to clean up
        except ProcessLookupError:
            pass
        try:
            os.waitid(os.P_PIDFD, self.handle, os.WEXITED)
        except ChildProcessError:  # reaped already, among the zygote's orphans
            pass
        os.close(self.handle)

    def _readable(self, deadline: float) -> bool:
        ready, _, _ = select.select([self.sock], [], [], max(0.0, deadline - time.monotonic()))
        return bool(ready)

    def _wait_readable(self, deadline: float) -> None:
        if not self._readable(deadline):
            raise TimeoutError


def _job_file(job: dict[str, Any], arrays: list[np.ndarray]) -> int:
    """A memory file holding one run's job (the compiled module and its source among it), read
    from its start."""
    fd = os.memfd_create("grader-job", os.MFD_CLOEXEC)
    try:
        # the arrays' own bytes, from the arena: copies would stay in the zygote's heap
        specs = [{"dtype": "u1", "shape": [len(array)]} for array in arrays]
        forward_message(fd, job, specs, *(array.data for array in arrays))
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_job(fd: int) -> tuple[dict[str, Any], bytes, bytes]:  # pragma: no cover - runs in the child
    """The job in a file `_job_file` wrote (one frame of the wire: its header's length, big-endian,
    the header, then the compiled module's and the source's bytes): the header, the module, the
    source. Read with one call and sliced, without a MessageReader or numpy arrays: a run pays for
    every page it touches, and this way the reading takes half the time and copies about 40 fewer."""
    data = os.pread(fd, os.fstat(fd).st_size, 0)
    (length,) = struct.unpack_from(">I", data)
    start = 4 + length
    job = orjson.loads(data[4:start])
    code_spec, source_spec = job["arrays"]
    code_end = start + code_spec["shape"][0]
    return job, data[start:code_end], data[code_end : code_end + source_spec["shape"][0]]


def main() -> None:
    # The control channel moves off 0/1 so a stray print in this process cannot corrupt it.
    control_in = os.dup(0)
    control_out = os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # still clean up cgroups and scratch
    # Ctrl-C on a terminal reaches the whole process group: the grader stops the zygotes itself
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    jobs = arena(JOB_ARENA_BYTES)
    # never inherited: a forker made while a job is in it (a larger results log, a new plan) would
    # hand that submission's module to every later run
    jobs.madvise(mmap.MADV_DONTFORK)
    reader = MessageReader(control_in, max_array_bytes=JOB_ARENA_BYTES, arena=jobs)
    config = reader.read()
    if config is None:
        return
    try:
        Zygote(control_in, control_out, config.header).serve(reader)
    except BrokenPipeError:  # the grader is gone (killed): nobody is left to read about it, so no traceback
        pass


if __name__ == "__main__":
    main()
