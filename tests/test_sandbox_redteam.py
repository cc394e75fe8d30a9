"""The red-team pass: each attack a submission could try on the sandbox itself, and that it fails.

A probe is a submission whose fc_forward performs one attack and reports what happened in the
message of the exception it raises (the feedback is a submission's only way out); the test reads
that message. Probes run on a grader of their own with one zygote, so that one probe's run is the
next probe's predecessor.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from grader.engine.grading import Grader
from grader.engine.report import SubmissionReport
from grader.sandbox.isolation import Limits
from tests.conftest import EXAMPLES
from tests.sandbox_support import (
    CANARY,
    assignment_copy,
    canary_state,
    exclusive,
    grade_command,
    make_canary,
    reports_by_file,
    run_grader,
    skip_if_python_under_tmp,
)

CORRECT = (EXAMPLES / "correct.py").read_text()
PROBE = """
import ctypes, errno, gc, json, mmap, os, signal, socket, struct, sys, time
import numpy as np
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def syscall(number, *args):
    result = libc.syscall(ctypes.c_long(number), *[ctypes.c_long(a) for a in args])
    return result if result >= 0 else -ctypes.get_errno()


def attempt(action):
    try:
        action()
    except OSError as error:
        return -error.errno
    except Exception as error:
        return type(error).__name__
    return 0


_outcome = None


def fc_forward(x, w, b):
    global _outcome
    if _outcome is None:
        _outcome = probe()
    raise RuntimeError("PROBE" + json.dumps(_outcome, separators=(",", ":")) + "ENDPROBE")
"""


def probe_source(body: str, rest: str = CORRECT) -> bytes:
    """A correct layers.py whose fc_forward runs `body` (defining probe()) instead."""
    without_fc = re.sub(r"def fc_forward\(.*?\n\n\n", "", rest, count=1, flags=re.S)
    probe = textwrap.dedent(body).strip()
    return (PROBE + "\n" + probe + "\n\n\n" + without_fc.replace("import numpy as np\n", "")).encode()


def outcome(report_messages: str) -> dict[str, Any]:
    found = re.search(r"PROBE(.*?)ENDPROBE", report_messages)
    assert found, f"the probe did not report: {report_messages[:600]}"
    return json.loads(found.group(1))


def check_message(report: object, problem: int) -> str:
    return report.problems[problem - 1].checks[0].message  # type: ignore[attr-defined]


def messages(report: object) -> str:
    return " | ".join(c.message for p in report.problems for c in p.checks)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def one_zygote() -> Iterator[Grader]:
    with Grader(workers=1, limits=Limits(time_limit=1.0, import_time_limit=2.0)) as grader:
        yield grader


def run_probe(grader: Grader, body: str) -> dict[str, Any]:
    return outcome(messages(grader.grade(probe_source(body))))


EPERM, ENOSYS, ESRCH = -1, -38, -3


# name -> the call, as the probe spells it; each must fail with EPERM
REFUSED = {
    "ptrace_attach": "syscall(101, 16, 1, 0, 0)",
    "ptrace_traceme": "syscall(101, 0, 0, 0, 0)",
    "process_vm_readv": "syscall(310, 1, 0, 0, 0, 0, 0)",
    "io_uring_setup": "syscall(425, 8, 0)",
    "userfaultfd": "syscall(323, 0)",
    "keyctl": "syscall(250, 0, 0)",
    "add_key": "syscall(248, 0, 0, 0, 0, 0)",
    "unshare_user": "syscall(272, 0x10000000)",
    "unshare_net": "syscall(272, 0x40000000)",
    "clone_newuser": "syscall(56, 0x10000000 | 17, 0, 0, 0, 0)",
    "setns": "syscall(308, 0, 0)",
    "mount": "syscall(165, 0, 0, 0, 0, 0)",
    "chroot": "syscall(161, 0)",
    "personality": "syscall(135, 0x0040000)",
    "tiocsti": "syscall(16, 0, 0x5412, 0)",
    "bpf": "syscall(321, 0, 0, 0)",
    "perf_event_open": "syscall(298, 0, 0, -1, -1, 0)",
    "execve": "attempt(lambda: os.execv('/bin/sh', ['sh', '-c', 'true']))",
    "open_by_handle_at": "syscall(304, 0, 0, 0)",
    "socket_inet": "attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))",
    "socket_unix": "attempt(lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))",
    "socket_netlink": "attempt(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW))",
    "chmod": "attempt(lambda: os.chmod('.', 0o777))",
    "setxattr": "attempt(lambda: os.setxattr('.', 'user.x', b'1'))",
    "shmget": "syscall(29, 0, 4096, 0o1000 | 0o666)",
    "setsid": "syscall(112)",
    # a pipe's SIGIO pointed at another process group, as SIGKILL: the run's own pipe, so a refusal
    # is the filter's, not a bad descriptor's
    "fcntl_setown": "syscall(72, os.pipe()[0], 8, -1)",
    "fcntl_setsig": "syscall(72, os.pipe()[0], 10, 9)",
    "fcntl_setown_ex": "syscall(72, os.pipe()[0], 15, 0)",
    "ioctl_fiosetown": "syscall(16, os.pipe()[0], 0x8901, 0)",
    "ioctl_siocspgrp": "syscall(16, os.pipe()[0], 0x8902, 0)",
    # kernel attack surface a homework never needs (found open by the seventh session's red team)
    "modify_ldt": "syscall(154, 0, 0, 0)",
    "io_setup": "syscall(206, 1, 0)",
    "memfd_secret": "syscall(447, 0)",
    "statmount": "syscall(457, 0, 0, 0, 0)",
    "listmount": "syscall(458, 0, 0, 0, 0)",
    # prctl's option is an int: bits above it must not carry PR_SET_PDEATHSIG past the filter
    "prctl_pdeathsig_high_bits": "syscall(157, (1 << 32) | 1, 0)",
}
GROUPS = [dict(list(REFUSED.items())[i : i + 9]) for i in range(0, len(REFUSED), 9)]


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: ",".join(g)[:40])
def test_dangerous_system_calls_are_refused(one_zygote: Grader, group: dict[str, str]) -> None:
    entries = ", ".join(f"{name!r}: {call}" for name, call in group.items())
    result = run_probe(one_zygote, f"""
def probe():
    return {{{entries}}}
""")
    assert result == dict.fromkeys(group, EPERM)


def test_unknown_and_unfilterable_system_calls_are_unknown(one_zygote: Grader) -> None:
    """clone3 hides its flags from seccomp, and calls newer than the policy are not trusted."""
    result = run_probe(one_zygote, """
def probe():
    return {"clone3": syscall(435, 0, 0), "newer_than_policy": syscall(470), "threads_still_work": thread()}

def thread():
    import threading
    box = []
    worker = threading.Thread(target=lambda: box.append(1))
    worker.start()
    worker.join()
    return box == [1]
""")
    assert result == {"clone3": ENOSYS, "newer_than_policy": ENOSYS, "threads_still_work": True}


def test_x32_system_calls_do_not_slip_past_the_filter(one_zygote: Grader) -> None:
    """x32 numbers (0x40000000 + n) would slip past rules written for x86-64 numbers: they fail."""
    result = run_probe(one_zygote, """
def probe():
    return {"x32_socket": syscall(0x40000000 | 41, 2, 1, 0), "x32_ptrace": syscall(0x40000000 | 521, 16, 1, 0, 0)}
""")
    assert result == {"x32_socket": ENOSYS, "x32_ptrace": ENOSYS}


def test_the_run_sees_almost_nothing(one_zygote: Grader) -> None:
    result = run_probe(one_zygote, """
def probe():
    fds = [fd for fd in range(1024) if attempt(lambda fd=fd: os.fstat(fd)) == 0]
    words = ("GRADER", "SECRET", "TOKEN", "DATABASE", "PASSWORD", "KEY")
    return {
        "uid": os.getuid(), "pid": os.getpid(), "host": socket.gethostname(), "fds": len(fds),
        "proc": attempt(lambda: os.listdir("/proc")), "root": sorted(os.listdir("/")),
        "dev": sorted(os.listdir("/dev")), "env": [n for n in os.environ if any(w in n for w in words)],
        "passwd": attempt(lambda: open("/etc/passwd").read()),
        "write_usr": attempt(lambda: open("/usr/x", "w")),
        "kill_all": attempt(lambda: os.kill(-1, signal.SIGKILL)),
    }
""")
    assert result["uid"] == 61000 and result["pid"] == 1 and result["host"] == "sandbox"
    assert result["fds"] == 4, "only stdin, stdout, stderr (all /dev/null) and the result pipe are open"
    assert result["proc"] != 0 and result["passwd"] != 0 and result["write_usr"] != 0
    # ".scratch" stands in for "tmp" when the Python install itself lives under /tmp
    allowed = {"bin", "dev", "etc", "lib", "lib32", "lib64", "root", "tmp", "usr", ".scratch"}
    assert set(result["root"]) <= allowed
    assert result["dev"] == ["null", "random", "urandom", "zero"]
    assert result["env"] == []
    assert result["kill_all"] == ESRCH, "kill(-1) found no other process in its PID namespace"


def test_scratch_is_empty_for_the_next_run_and_symlinks_are_not_followed(one_zygote: Grader) -> None:
    with exclusive():
        make_canary()
        before = canary_state()
        first, second = scratch_probes(one_zygote)
        assert canary_state() == before
    assert first["cwd"] == ["canary-link", "left-behind", "locked", "root-link"]
    assert second["cwd"] == [], "a run found what the previous run left"


def scratch_probes(grader: Grader) -> tuple[dict[str, object], dict[str, object]]:
    first = run_probe(grader, """
def probe():
    os.symlink("/tmp/hw-grader-canary", "canary-link")
    os.symlink("/", "root-link")
    os.mkdir("locked")
    open("locked/file", "w").write("x")
    os.mkdir("locked/sealed", 0)  # chmod is refused, but a folder can be made without permissions
    open("left-behind", "w").write("for the next run")
    return {"cwd": sorted(os.listdir("."))}
""")
    second = run_probe(grader, """
def probe():
    return {"cwd": sorted(os.listdir("."))}
""")
    return first, second


@pytest.mark.parametrize("output_mb", [16, 32], ids=["default", "larger-output-limit"])
def test_no_trace_of_the_previous_submission_in_memory(output_mb: int) -> None:
    """The next run inherits the zygote's memory: the previous source must not be anywhere in it.
    With an output limit past the default, the zygote makes a larger results log, and a new forker,
    while the first submission's job is in its arena: that arena is never inherited."""
    marker = _marker()
    # a constant: it is in the compiled module that crosses (comments are not); the long text puts
    # it beyond where the next job's bytes will be written
    filler = "a long text, so that the marker lies beyond where the next job will be written. " * 1500
    previous = CORRECT.replace("import numpy as np", f"import numpy as np\nNOTE = {filler!r} + {marker!r}", 1)
    limits = Limits(time_limit=20.0, max_output_bytes=output_mb << 20)
    with Grader(workers=1, limits=limits) as grader:
        assert grader.grade(previous.encode()).score == 10
        result = run_probe(grader, _memory_scan(marker))
    assert result["scanned_mb"] >= 20, result  # it really did read the inherited heap and arenas
    assert result["hits"] == 0, result


def test_no_trace_of_the_previous_submissions_results_in_memory() -> None:
    """Nor its answers: the zygote forwards them from the results log, which is freed after the run,
    without copying them into its own heap (once, 24 copies of a run's arrays stayed there). The
    previous submission returns the marker's bytes as the float64 array of every relu_forward call
    (its source holds the marker reversed, so that only its answers can leave the marker behind)."""
    marker = _marker()
    as_floats = f"np.frombuffer(({marker[::-1]!r}[::-1] * 8).encode(), dtype=np.float64).copy()"
    previous = CORRECT.replace("def relu_forward(x):\n", f"def relu_forward(x):\n    return {as_floats}, x\n", 1)
    with Grader(workers=1, limits=Limits(time_limit=20.0)) as grader:
        assert grader.grade(previous.encode()).problems[1].score < 2  # its arrays did cross
        result = run_probe(grader, _memory_scan(marker))
    assert result["scanned_mb"] >= 20, result
    assert result["hits"] == 0, result


def test_no_trace_of_the_previous_submissions_error_texts_in_memory() -> None:
    """Nor the words of its errors, which the zygote parses, cleans and forwards: a run is forked
    from a process that has never handled a submission (once, a later run read another student's
    exception text back, 13 copies). The marker is built as the call runs, so that only the error
    text carries it; a long text (near the 400 characters kept) lands where copies used to stay."""
    marker = _marker()
    with Grader(workers=1, limits=Limits(time_limit=20.0)) as grader:
        report = grader.grade(_raising(marker).encode())
        assert marker in str(report.problems[1].checks[0].message)  # the text did reach the grader
        result = run_probe(grader, _memory_scan(marker))
    assert result["scanned_mb"] >= 20, result
    assert result["hits"] == 0, result


def test_a_new_plan_gets_a_fresh_zygote_and_an_equal_one_keeps_it() -> None:
    """A zygote makes its forker when a plan arrives. After it has graded, a different plan (another
    seed, on a shared pool) gets a fresh zygote: the error texts the old one parsed must not reach
    the new forker's runs. An equal plan (another Grader, the same assignment and seed) keeps it."""
    marker = _marker()
    previous = _raising(marker)
    limits = Limits(time_limit=20.0)
    with Grader(workers=1, limits=limits, seed=1) as first:
        for _ in range(4):
            assert first.grade(previous.encode()).problems[1].score < 1
        zygotes = first.pool.zygote_pids()
        same = Grader(first.assignment, pool=first.pool, limits=limits, seed=1)
        assert same.grade(CORRECT.encode()).score == 10
        assert first.pool.zygote_pids() == zygotes
        other = Grader(first.assignment, pool=first.pool, limits=limits, seed=2)
        result = run_probe(other, _memory_scan(marker))
        assert first.pool.zygote_pids() != zygotes
    assert result["scanned_mb"] >= 20, result
    assert result["hits"] == 0, result


def test_a_larger_output_limit_gets_a_fresh_zygote_once_it_has_graded() -> None:
    """A job whose output limit outgrows the zygote's results log needs a new forker: after the
    zygote has graded, a fresh zygote makes it (one that had graded let a later run read earlier
    students' error texts back, 3 to 7 copies). A smaller limit keeps the zygote."""
    marker = _marker()
    with Grader(workers=1, limits=Limits(time_limit=20.0)) as first:
        for _ in range(4):
            assert first.grade(_raising(marker).encode()).problems[1].score < 1
        zygotes = first.pool.zygote_pids()
        larger = Grader(first.assignment, pool=first.pool, limits=Limits(time_limit=20.0, max_output_bytes=32 << 20))
        result = run_probe(larger, _memory_scan(marker))
        replaced = first.pool.zygote_pids()
        assert replaced != zygotes
        assert first.grade(CORRECT.encode()).score == 10
        assert first.pool.zygote_pids() == replaced
    assert result["scanned_mb"] >= 20, result
    assert result["hits"] == 0, result


def _raising(marker: str) -> str:
    """The correct file with three functions raising an error whose long text holds the marker,
    built as the call runs (so that only the error text carries it)."""
    raising = f"raise ValueError('bad input: ' + {marker[::-1]!r}[::-1] + '.' * 350)"
    source = CORRECT
    for function, params in [("relu_forward", "x"), ("relu_backward", "dout, cache"), ("fc_forward", "x, w, b")]:
        source = source.replace(f"def {function}({params}):\n", f"def {function}({params}):\n    {raising}\n", 1)
    return source


def _marker() -> str:
    """A string no run has seen before; 32 bytes (a whole number of float64s)."""
    return "MARKERq" + f"{os.getpid():08d}{time.monotonic_ns():017d}"[-25:]


def _memory_scan(marker: str) -> str:
    """A probe that reads every readable page near its heap, its Python objects and its mappings
    (mincore finds them, a pipe tells readable from guard pages), counting copies of `marker`. It
    knows only the marker's hash, so its own memory never holds the marker."""
    digest = hashlib.sha256(marker.encode()).hexdigest()
    length = len(marker)
    return f"""
import hashlib

PAGE = mmap.PAGESIZE
libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
libc.write.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]


vector = (ctypes.c_ubyte * (1 << 18))()


def mapped(address, pages=1):
    return libc.mincore(address, pages * PAGE, vector) == 0


def region(address, limit=1 << 18):
    # the mapped pages around an address: grow while whole steps are mapped, halving the step
    low = high = address & ~(PAGE - 1)
    step = limit
    while step:
        if mapped(high, step) and high - low < limit * PAGE:
            high += step * PAGE
        else:
            step //= 2
    step = limit
    while step:
        if low >= step * PAGE and mapped(low - step * PAGE, step) and high - low < limit * PAGE:
            low -= step * PAGE
        else:
            step //= 2
    return low, high


def starts():
    seen = [ctypes.addressof(ctypes.create_string_buffer(64)), ctypes.addressof(ctypes.create_string_buffer(1 << 20))]
    # the C heap (malloc's, where numpy keeps small arrays' data): numpy arrays are not among gc's objects
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    seen += [libc.malloc(64), libc.malloc(8192), np.empty(16).ctypes.data, np.empty(1000).ctypes.data]
    for item in gc.get_objects()[::50]:
        seen.append(id(item))
    for item in gc.get_objects():
        if isinstance(item, mmap.mmap) and len(item):
            seen.append(ctypes.addressof(ctypes.c_char.from_buffer(item)))
        if isinstance(item, np.ndarray) and item.size:
            seen.append(item.ctypes.data)
    return seen


def probe():
    prefix, length = b"MARK" + b"ERq", {length}
    read_end, write_end = os.pipe()
    regions, hits, scanned = [], 0, 0
    for address in starts():
        if any(low <= address < high for low, high in regions) or not mapped(address & ~(PAGE - 1)):
            continue
        regions.append(region(address))
    os.set_blocking(write_end, False)
    for low, high in regions:
        block = low
        while block < high:
            size = min(16 * PAGE, high - block)  # the pipe holds 16 pages
            copied = libc.write(write_end, block, size)  # a guard page stops the copy (EFAULT), no crash
            if copied > 0:
                os.read(read_end, copied)
            readable = max(copied, 0) // PAGE * PAGE
            if readable:
                chunk = ctypes.string_at(block, readable)
                scanned += readable
                at = chunk.find(prefix)
                while at >= 0:
                    if hashlib.sha256(chunk[at:at + length]).hexdigest() == "{digest}":
                        hits += 1
                    at = chunk.find(prefix, at + 1)
            block += readable if readable == size else readable + PAGE
    return {{"hits": hits, "scanned_mb": scanned >> 20}}
"""


def test_a_closed_result_pipe_does_not_stall_the_zygote(one_zygote: Grader) -> None:
    """A run that closes its end of the pipe and sleeps is a hang: the time limit still ends it."""
    started = time.monotonic()
    source = probe_source("""
def probe():
    for fd in range(3, 64):
        try:
            os.close(fd)
        except OSError:
            pass
    time.sleep(3600)
""")
    report = one_zygote.grade(source)
    assert time.monotonic() - started < 20
    assert "fc_forward did not return within 1 s" in messages(report)
    assert report.problems[1].score == 2, "the other functions still ran"


def test_a_result_pipe_closed_while_importing_is_an_import_timeout(one_zygote: Grader) -> None:
    """The same while the module is being imported: the import's limit ends it, and it is reported
    as the import not finishing, not as a function that did not return."""
    report = one_zygote.grade(CORRECT.replace("import numpy as np", """import numpy as np
import os, time
for fd in range(3, 64):
    try:
        os.close(fd)
    except OSError:
        pass
time.sleep(3600)""", 1).encode())
    assert report.score == 0
    assert "could not be imported: it did not finish importing within 2 s" in messages(report)
    assert "did not return" not in messages(report)


def test_the_memory_limit_leaves_a_run_that_much_and_no_more(one_zygote: Grader) -> None:
    """The address-space limit is what a run inherits plus the memory limit (512 MB): the largest
    mapping a run can make is a little under that. (Measured in the zygote, it counted the job
    arena, which runs do not inherit: 768 MB.)"""
    result = run_probe(one_zygote, """
def probe():
    low, high = 0, 4096
    while low < high:
        middle = (low + high + 1) // 2
        try:
            mmap.mmap(-1, middle << 20).close()
            low = middle
        except OSError:
            high = middle - 1
    return {"largest_mb": low}
""")
    assert 400 <= result["largest_mb"] <= 512, result


def test_a_run_starts_threads_and_forks_as_any_process_does(one_zygote: Grader) -> None:
    """Runs are forked without CPython's after-fork work (their forker has one thread): the
    interpreter a run gets still starts threads, knows its main thread and forks; asyncio and
    multiprocessing's pipes work too."""
    source = CORRECT.replace("def relu_forward(x):\n", """def relu_forward(x):
    import concurrent.futures, os, threading
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        assert list(pool.map(abs, [-1, -2])) == [1, 2]
    assert threading.current_thread() is threading.main_thread()
    child = os.fork()
    if child == 0:
        os._exit(7)
    assert os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) == 7
    import asyncio, multiprocessing  # their self-pipe and duplex pipe are socket pairs (allowed: they reach nothing)
    assert asyncio.run(asyncio.sleep(0, result=5)) == 5
    here, there = multiprocessing.Pipe()
    here.send(3)
    assert there.recv() == 3
""", 1)
    report = one_zygote.grade(source.encode())
    assert report.score == 10, messages(report)


def test_a_run_dies_with_its_forker(one_zygote: Grader) -> None:
    """Its parent-death signal is SIGKILL once it is sandboxed: the uid change, which clears it, comes
    before it is set for the last time."""
    result = run_probe(one_zygote, """
def probe():
    signal_number = ctypes.c_int(-1)
    libc.prctl(2, ctypes.byref(signal_number), 0, 0, 0)  # PR_GET_PDEATHSIG
    return {"pdeathsig": signal_number.value}
""")
    assert result == {"pdeathsig": signal.SIGKILL}


def test_random_numbers_start_the_same_in_every_run() -> None:
    """Runs are forked without CPython's at-fork hooks: `random` starts from one fixed seed in every
    run, of every zygote, so a submission that draws from it grades the same."""
    probe = """
def probe():
    import random
    return {"random": random.random()}
"""
    with Grader(workers=1) as first:
        draws = [run_probe(first, probe), run_probe(first, probe)]
    with Grader(workers=1) as second:
        draws.append(run_probe(second, probe))
    assert draws[0] == draws[1] == draws[2], draws


def test_faking_progress_does_not_buy_time() -> None:
    """Scribbling on the shared progress page from a thread only reaches the run's hard ceiling
    (the import limit plus one call limit per function and two more: 1 + 0.3 * 8 s here), and
    only at the submission's own expense."""
    source = probe_source("""
def probe():
    import threading
    frame, page = sys._getframe(), None
    while page is None:  # up the stack to the harness, which holds the page
        page = getattr(frame.f_locals.get("self"), "progress", None)
        frame = frame.f_back
    def bump():
        n = 100
        while True:
            n += 1
            struct.pack_into("<qq", page, 0, n, 10**9)
            time.sleep(0.01)
    threading.Thread(target=bump, daemon=True).start()
    time.sleep(3600)
""")
    with Grader(workers=1, limits=Limits(time_limit=0.3, import_time_limit=1.0)) as grader:
        started = time.monotonic()
        report = grader.grade(source)
        elapsed = time.monotonic() - started
    assert 3.0 < elapsed < 10, elapsed
    # the page said "call 10**9": the failure cannot be pinned on one function, so it is everyone's,
    # and it is the submission's total time budget that ran out
    assert report.problems[0].checks[0].message.startswith("not finished: the submission used up the 3.4 s")
    assert report.score == 0 and report.errors == []


def test_forged_frames_cannot_crash_the_grader(one_zygote: Grader) -> None:
    """Well-formed frames with the wrong number of values, nested JSON, an empty batch, huge counts."""
    source = probe_source("""
def frame(header, arrays=()):
    specs = [{"dtype": "f8", "shape": list(a.shape)} for a in arrays]
    body = json.dumps({**header, "arrays": specs}).encode()
    return struct.pack(">I", len(body)) + body + b"".join(a.tobytes() for a in arrays)

def probe():
    pipe = max(fd for fd in range(3, 64) if attempt(lambda fd=fd: os.fstat(fd)) == 0)
    os.write(pipe, frame({"op": "results", "results": [{"call": 1, "status": "ok", "values": []}]}))
    time.sleep(3600)
""")
    report = one_zygote.grade(source)  # results travel only through the results log
    assert report.problems[0].checks[0].message.startswith("fc_forward sent an unexpected message")
    nested = probe_source("""
def probe():
    pipe = max(fd for fd in range(3, 64) if attempt(lambda fd=fd: os.fstat(fd)) == 0)
    body = b"[" * 120000 + b"]" * 120000
    os.write(pipe, struct.pack(">I", len(body)) + body)
    time.sleep(3600)
""")
    assert "malformed" in messages(one_zygote.grade(nested))
    empty = probe_source("""
def probe():
    pipe = max(fd for fd in range(3, 64) if attempt(lambda fd=fd: os.fstat(fd)) == 0)
    body = json.dumps({"op": "results", "results": [], "arrays": []}).encode()
    for _ in range(1000):
        os.write(pipe, struct.pack(">I", len(body)) + body)
    time.sleep(3600)
""")
    assert "unexpected message" in messages(one_zygote.grade(empty))
    # and the zygote is still the same, healthy one
    assert one_zygote.grade(CORRECT.encode()).score == 10


@pytest.mark.parametrize("forged", [
    "_log_frame(harness, {'op': 'results', 'results': [{'call': index, 'status': 'ok', 'values': []}]})",
    "_log_frame(harness, {'op': 'results', 'results': []})",
    "_log_frame(harness, {'op': 'imported'})",
    "_log_raw(harness, _struct.pack('>I', 240000) + b'[' * 120000 + b']' * 120000)",
    "_log_raw(harness, _struct.pack('>I', 2 ** 31))",
    "harness.logged = 2 ** 40; _struct.pack_into('<Q', harness.log, 0, 2 ** 40)",
], ids=["value-count", "empty", "not-results", "nested", "length", "count"])
def test_forged_frames_in_the_results_log_are_the_runs_own_failure(one_zygote: Grader, forged: str) -> None:
    """The log is the run's own memory: whatever it writes there is read as a frame from the wire."""
    report = l2_attacked(one_zygote, f"    harness, index = _harness()\n    {forged}\n")
    assert "l2_regularization sent a malformed result" in check_message(report, 4)


def test_a_previously_good_value_count_is_checked_per_call() -> None:
    """The zygote accepts a result only with exactly the values its call returns."""
    from grader.sandbox.zygote import _clean_results

    calls: list[dict[str, Any]] = [{"fn": "f", "send": [0, 1]}, {"fn": "g", "send": [0], "perturb": {"arg": 0}}]
    ok = {"call": 0, "status": "ok", "values": [{"kind": "array"}, {"kind": "none"}]}
    specs = [{"dtype": "f8", "shape": [2]}]
    assert _clean_results([ok], specs, calls, {0, 1}) is not None
    assert _clean_results([{**ok, "values": [{"kind": "array"}]}], specs, calls, {0, 1}) is None
    assert _clean_results([ok], [{"dtype": "i8", "shape": [2]}], calls, {0, 1}) is None
    assert _clean_results([ok], specs, calls, {1}) is None, "a call that is not pending"
    assert _clean_results([], [], calls, {0, 1}) is None


def test_terminal_escapes_never_reach_a_report(one_zygote: Grader) -> None:
    source = probe_source("""
def probe():
    raise ValueError("\\x1b]0;pwned\\x07\\x1b[2J\\x1b[31mred\\u202eevil\\r\\n\\x00")
""")
    text = messages(one_zygote.grade(source))
    assert "red" in text and "evil" in text
    assert not re.search("[\\x00-\\x1f\\x7f-\\x9f\\u202e]", text)


def test_a_memory_cgroup_breach_is_reported_as_the_memory_limit() -> None:
    """Processes each under the address-space limit, together over the cgroup's: the kernel kills the
    largest (the run itself), and the feedback names the memory limit, not a mysterious SIGKILL."""
    limits = Limits(time_limit=5.0, import_time_limit=5.0, memory_limit_mb=64, scratch_mb=8)
    with Grader(workers=1, limits=limits) as grader:
        if not grader.layers["cgroup_memory"]:
            pytest.skip("no memory cgroup on this host")
        source = probe_source("""
def probe():
    for _ in range(4):
        if os.fork() == 0:
            hog = bytearray(16 << 20)
            time.sleep(3)
            os._exit(0)
    time.sleep(0.3)
    hogs = [bytearray(1 << 20) for _ in range(100)]  # the biggest process, so the one the kernel kills
    time.sleep(3)
    return {"survived": len(hogs)}
""")
        report = grader.grade(source)
    assert "memory limit of 64 MB exceeded in fc_forward" in messages(report)
    assert "memory" in report.limits_hit


@pytest.mark.skipif(os.geteuid() != 0, reason="simulating a deployment needs root")
def test_sharing_the_graders_uid_gives_no_reach_over_it() -> None:
    """In the compose deployment the run has the grader's uid: it may still not touch the grader's
    limits, priority or files, nor signal it."""
    skip_if_python_under_tmp("compose")
    with assignment_copy(time_limit=20.0, import_time_limit=5.0) as assignment:
        probe = Path(assignment.parent) / "reach.py"
        probe.write_bytes(probe_source(f"""
    def probe():
        import resource
        reached = []
        for pid in range(2, 32769):
            if pid == os.getpid():
                continue
            if attempt(lambda: resource.prlimit(pid, resource.RLIMIT_NOFILE, (0, 0))) == 0:
                reached.append(("prlimit", pid))
            if attempt(lambda: os.setpriority(os.PRIO_PROCESS, pid, 19)) == 0:
                reached.append(("nice", pid))
            if attempt(lambda: os.kill(pid, signal.SIGSTOP)) == 0:
                reached.append(("kill", pid))
        for path in ("{CANARY}", "{CANARY}/keep.txt"):
            for action in (lambda: os.chmod(path, 0), lambda: os.utime(path, (0, 0)),
                           lambda: os.setxattr(path, "user.x", b"1")):
                if attempt(action) == 0:
                    reached.append(("file", path))
        return {{"reached": reached[:10]}}
    """))
        os.chmod(probe, 0o644)
        command = grade_command(assignment, [probe], "compose")
        with exclusive():
            make_canary()
            before = canary_state()
            result = run_grader(command, timeout=120)
            assert canary_state() == before
    assert result.returncode == 0, result.stderr[-2000:]
    report = reports_by_file(result.stdout)["reach.py"]
    text = " | ".join(c["message"] for p in report["problems"] for c in p["checks"])  # type: ignore[attr-defined]
    assert outcome(text) == {"reached": []}


# Attacks from the third red-team pass. Each is a correct layers.py with one function changed; the
# functions left alone must keep their points.
FIND_HARNESS = """
import json as _json, os as _os, struct as _struct, sys as _sys


def _harness():
    frame, index, harness = _sys._getframe(1), None, None
    while frame is not None:
        if frame.f_code.co_name == "run_one" and index is None:
            index = frame.f_locals.get("index")
        if harness is None and type(frame.f_locals.get("self")).__name__ == "Harness":
            harness = frame.f_locals["self"]
        frame = frame.f_back
    return harness, index


def _log_raw(harness, frame):
    # appended to the run's results log, as the harness appends its own frames
    start = 8 + harness.logged
    harness.log[start : start + len(frame)] = frame
    harness.logged += len(frame)
    _struct.pack_into("<Q", harness.log, 0, harness.logged)


def _log_frame(harness, header):
    body = _json.dumps({"arrays": [], **header}).encode()
    _log_raw(harness, _struct.pack(">I", len(body)) + body)
"""


def l2_attacked(grader: Grader, attack: str) -> SubmissionReport:
    """A correct file whose l2_regularization runs `attack` first: everything else must keep its points."""
    report = grader.grade(changed("def l2_regularization(w, reg):\n", "def l2_regularization(w, reg):\n" + attack,
                                  FIND_HARNESS))
    assert [p.score for p in report.problems] == [3, 2, 3, 0]
    assert report.errors == []
    return report


def changed(old: str, new: str, prelude: str = "") -> bytes:
    assert old in CORRECT
    return (prelude + CORRECT.replace(old, new, 1)).encode()


def test_integers_too_large_to_forward_are_the_runs_own_failure(one_zygote: Grader) -> None:
    """A forged error result with a 2**64 line number, and brackets enough that the standard parser
    reads it (it takes integers of any size, which orjson then cannot forward): once, that killed
    the zygote twice and scored the submission 0."""
    l2_attacked(one_zygote, """    harness, index = _harness()
    _log_frame(harness, {"op": "results", "results": [{"call": index, "status": "error",
               "error": {"type": "ValueError", "message": "[" * 950, "line": 2 ** 64}}]})
""")
    assert one_zygote.grade(CORRECT.encode()).score == 10


def test_a_result_the_wire_cannot_carry_costs_only_its_own_call(one_zygote: Grader) -> None:
    """Nine axes, or an exception class with a 300,000-character name, once made the whole batch
    malformed, and each retry blamed another correct function (3 of 10 points left)."""
    nine = "    grad_x = (grad_out * (x > 0)).reshape((1,) * 9 + grad_out.shape)\n"
    axes = changed("    grad_x = grad_out * (x > 0)\n", nine)
    report = one_zygote.grade(axes)
    assert [p.score for p in report.problems] == [3, 1, 3, 2]
    assert "grad_x has 11 axes, far too many" in messages(report)
    named = changed("    grad_x = grad_out * (x > 0)\n", "    raise type('E' * 300000, (Exception,), {})('boom')\n")
    report = one_zygote.grade(named)
    assert [p.score for p in report.problems] == [3, 1, 3, 2]
    assert f"relu_backward raised {'E' * 80}: boom" in messages(report)


def test_an_exception_whose_text_cannot_be_read_is_described_as_raised(one_zygote: Grader) -> None:
    weird = "class Weird(RuntimeError):\n    def __str__(self):\n        raise ValueError('no')\n\n\n"
    report = one_zygote.grade(changed("    grad_x = grad_out * (x > 0)\n", "    raise Weird()\n", weird))
    assert [p.score for p in report.problems] == [3, 1, 3, 2]
    assert "relu_backward raised Weird" in messages(report)


def test_a_flood_of_output_is_charged_to_the_function_that_sent_it(one_zygote: Grader) -> None:
    """softmax_loss's results use up the output budget, but the batch that crosses it goes out while
    a correct l2_regularization runs: the breach is softmax_loss's, and l2 keeps its points."""
    flood = """_calls = [0]


"""
    source = changed(
        "    return loss, grad_x\n\n\ndef l2_regularization",
        "    _calls[0] += 1\n"
        "    if _calls[0] <= 2:\n        return np.zeros(993_750), grad_x\n"
        "    if _calls[0] == 11:\n        return np.zeros(128_000), grad_x\n"
        "    return loss, grad_x\n\n\ndef l2_regularization",
        flood,
    )
    report = one_zygote.grade(source)
    assert [p.score for p in report.problems] == [3, 2, 0, 2]
    assert "output limit of 16 MB exceeded in softmax_loss" in messages(report)
    assert report.limits_hit == ["output"]


def test_the_shared_progress_page_carries_nothing_to_the_next_run(one_zygote: Grader) -> None:
    """A run can write the whole page it shares with its zygote; the next submission's run once read it."""
    write = changed("def fc_forward(x, w, b):\n", "def fc_forward(x, w, b):\n"
                    "    _harness()[0].progress[64:104] = b'SECRET-FROM-SUBMISSION-A'.ljust(40, b'.')\n", FIND_HARNESS)
    assert one_zygote.grade(write).score == 10
    read = changed("def fc_forward(x, w, b):\n", "def fc_forward(x, w, b):\n"
                   "    raise ValueError(repr(bytes(_harness()[0].progress[16:]).strip(bytes(1))))\n", FIND_HARNESS)
    text = messages(one_zygote.grade(read))
    assert "fc_forward raised ValueError: b''" in text and "SECRET" not in text


def test_a_malformed_spec_after_an_oversized_one_is_the_runs_own_failure(one_zygote: Grader) -> None:
    """The reader stopped checking specs at the first one over the budget, and the zygote then read
    the unchecked ones to find who to charge: a spec that was not a dict killed it."""
    l2_attacked(one_zygote, """    harness, index = _harness()
    two = [{"kind": "array"}, {"kind": "array"}]  # loss and grad_w: as many values as the call returns
    _log_frame(harness, {"op": "results", "results": [{"call": index, "status": "ok", "values": two}],
               "arrays": [{"dtype": "f8", "shape": [10 ** 9]}, 5]})
""")
    assert one_zygote.grade(CORRECT.encode()).score == 10


def test_the_results_log_carries_nothing_to_the_next_run(one_zygote: Grader) -> None:
    """A run may write anywhere in its results log, past what its count claims."""
    stash = "    _harness()[0].log[1 << 20 : (1 << 20) + 24] = b'SECRET-FROM-SUBMISSION-A'\n"
    write = changed("def fc_forward(x, w, b):\n", "def fc_forward(x, w, b):\n" + stash, FIND_HARNESS)
    assert one_zygote.grade(write).score == 10
    peek = "    raise ValueError(repr(bytes(_harness()[0].log[1 << 20 : (1 << 20) + 24])))\n"
    text = messages(one_zygote.grade(changed("def fc_forward(x, w, b):\n", "def fc_forward(x, w, b):\n" + peek,
                                             FIND_HARNESS)))
    assert "fc_forward raised ValueError: b'\\x00" in text and "SECRET" not in text


def test_an_empty_array_with_a_huge_shape_is_the_runs_own_failure(one_zygote: Grader) -> None:
    """A result array of shape (0, 2**62, 4) holds no bytes, so every size check passed, and numpy
    then refused to make it in the grader: a traceback, and every later job on that zygote failed."""
    attack = """    harness, _ = _harness()
    if not harness.skip:  # once: forge the answer of the last pending call, with the right value count
        call = max(i for i in range(len(harness.calls)) if harness.calls[i]["fn"] != "relu_forward")
        count = 1 if harness.calls[call].get("perturb") else len(harness.calls[call]["send"])
        result = {"call": call, "status": "ok", "values": [{"kind": "array"}] * count}
        _log_frame(harness, {"op": "results", "results": [result],
                             "arrays": [{"dtype": "f8", "shape": [0, 2 ** 62, 4]}] * count})
        harness.skip.add(call)
"""
    report = one_zygote.grade(changed("def relu_forward(x):\n", "def relu_forward(x):\n" + attack, FIND_HARNESS))
    assert report.errors == []
    assert "relu_forward sent a malformed result" in messages(report)
    assert one_zygote.grade(CORRECT.encode()).score == 10
