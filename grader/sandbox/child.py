"""What runs inside the sandbox: load the submission, call its functions, send back plain arrays.

This module is imported by the zygote before any student code exists, so it must never import the
engine or an assignment. Everything it sends is data the trusted side re-checks; nothing it says is
ever taken as a score.
"""

from __future__ import annotations

import errno
import importlib.abc
import importlib.util
import io
import linecache
import marshal
import mmap
import os
import struct
import sys
import traceback
import types
import warnings
from typing import Any

import numpy as np

from grader.sandbox.protocol import LOG_RESERVE, MAX_DIMS, RESULTS_LOG, ProtocolError, encode, write_message

MAX_MESSAGE_CHARS = 400
MAX_NAME_CHARS = 80  # an exception's or a value's type name, as feedback shows it
MAX_RESULT_ELEMENTS = 1_000_000  # 8 MB: far beyond any homework answer, within the output limit
# Shared with the zygote: (progress counter, index of the call running now; -1 while importing).
# The zygote reads it to time each call and to know which function a crash happened in, without a
# message per call; a counter still at 0 means the run died before the student's code was loaded.
# The student's code can scribble on it, which only misattributes its own failure.
PROGRESS = struct.Struct("<qq")
# Errors a limit causes, as the student's code sees them: (errno, kind) and exception types.
LIMIT_ERRNOS = {
    errno.EMFILE: "open_files",
    errno.ENFILE: "open_files",
    errno.EFBIG: "file_size",
    errno.ENOSPC: "disk",
    errno.EDQUOT: "disk",
    errno.EAGAIN: "processes",
}


def mark_progress(page: mmap.mmap | None, sequence: int, call: int) -> None:
    if page is not None:
        PROGRESS.pack_into(page, 0, sequence, call)


class ForbiddenImportBlocker(importlib.abc.MetaPathFinder):
    """Refuses modules the course forbids, however the import is spelled."""

    def __init__(self, forbidden: list[str]) -> None:
        self.forbidden = set(forbidden)

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname.split(".")[0] in self.forbidden:
            raise ImportError(f"importing {fullname} is not allowed in this assignment")
        return None


class CallFailed(Exception):
    """A call whose failure is already described for the student."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("message", ""))
        self.error = error


class Harness:
    def __init__(
        self, job: dict[str, Any], arrays: list[np.ndarray], result_fd: int, log: mmap.mmap,
        progress: mmap.mmap | None = None,
    ) -> None:
        self.progress = progress
        self.pid = os.getpid()
        self.sequence = 0
        self.log = log
        self.logged = 0  # frame bytes written to the log so far
        self.calls: list[dict[str, Any]] = job["calls"]
        self.arrays = arrays
        self.result_fd = result_fd
        self.filename: str = job.get("filename", "submission.py")
        self.skip = set(job.get("skip", []))
        self.broken = set(job.get("broken", []))
        self.failed = set(job.get("failed", []))  # calls that crashed or hung in an earlier process
        self.memory_limit_mb = job.get("memory_limit_mb")
        self.own_scratch = bool(job.get("own_file"))
        self.module: types.ModuleType | None = None
        # call index -> (returned value, failed?) of producer calls run in this process
        self.produced: dict[int, tuple[Any, bool]] = {}

    def send(self, header: dict[str, Any], arrays: list[np.ndarray] | None = None) -> None:
        try:
            write_message(self.result_fd, header, arrays or [])
        except TypeError:  # nothing is written before the header encodes: retried with text UTF-8 can carry
            write_message(self.result_fd, encodable(header), arrays or [])

    def begin(self, index: int) -> None:
        self.sequence += 1
        mark_progress(self.progress, self.sequence, index)

    def record(self, result: dict[str, Any], arrays: list[np.ndarray]) -> None:
        """Append one call's result to the log, where the zygote reads it however the run ends: no
        message per call, and nothing a call answered is lost when a later one crashes or hangs."""
        header = {"op": "results", "results": [result]}
        try:
            frame = encode(header, arrays)
        except TypeError:  # a student's text with lone surrogates: made valid UTF-8 first
            frame = encode(encodable(header), arrays)
        except ProtocolError:  # a header over the wire's cap
            frame = b""
        room = len(self.log) - RESULTS_LOG.size - self.logged
        if not frame or len(frame) > room - (LOG_RESERVE if arrays else 0):
            too_large = {"type": "output", "message": "results larger than the output limit"}
            failed = {"call": result["call"], "status": "error", "error": too_large}
            frame = encode({"op": "results", "results": [failed]})
            if len(frame) > room:
                return  # the call stays unanswered
        start = RESULTS_LOG.size + self.logged
        self.log[start : start + len(frame)] = frame
        self.logged += len(frame)
        RESULTS_LOG.pack_into(self.log, 0, self.logged)

    def load(self, code: bytes, module_name: str, forbidden: list[str], source: bytes = b"") -> bool:
        """Run the module the trusted side compiled (`code`, marshalled) as the submission's import."""
        sys.meta_path.insert(0, ForbiddenImportBlocker(forbidden))
        sys.argv[:] = [self.filename]  # as if the file were run; not the zygote's own command line
        compiled = marshal.loads(code)  # noqa: S302 - bytes the trusted grader made, read by the sandbox
        where = self.own_file(source)
        self.begin(-1)  # from here on, the student's code runs
        module = types.ModuleType(module_name)
        module.__file__ = where
        sys.modules[module_name] = module
        try:
            exec(compiled, module.__dict__)  # noqa: S102 - running the submission is this module's purpose
        except BaseException as error:  # noqa: BLE001 - student code may raise anything, SystemExit too
            self.stay_the_run()
            self.send({"op": "import_error", "error": self.describe(error)})
            return False
        self.stay_the_run()
        self.forget_own_file(where)
        self.module = module
        self.send({"op": "imported"})
        return True

    def own_file(self, source: bytes) -> str:
        """Where `__file__` says the submission is: as in any import, an absolute path to the file
        itself, in the scratch (the working directory), for `os.path.dirname(__file__)`,
        `open(__file__)` at import time, and `inspect` (its lines are in `linecache` too). The file is
        there while the module is imported, and gone before the first call: the scratch a call sees
        is empty. Without a scratch, the bare name."""
        if not self.own_scratch:
            return self.filename
        path = os.path.join(os.getcwd(), self.filename)
        if not source:  # the trusted side sends it only to code that could look (it names __file__ or inspect)
            return path
        try:  # split as a file read in text mode splits, which is how linecache and line numbers count
            lines = io.StringIO(importlib.util.decode_source(source), newline=None).readlines()
        except (SyntaxError, UnicodeError, LookupError):
            lines = []
        for name in (path, self.filename):  # __file__, and the name the code was compiled with
            linecache.cache[name] = (len(source), None, lines, name)
        try:
            with open(path, "wb") as handle:
                handle.write(source)
        except OSError:
            pass
        return path

    def forget_own_file(self, path: str) -> None:
        if path != self.filename and path in linecache.cache:
            try:
                os.unlink(path)
            except OSError:
                pass

    def run(self, start: int) -> None:
        for index in range(start, len(self.calls)):
            if index in self.skip or self.calls[index]["fn"] in self.broken:
                continue
            self.run_one(index)

    def run_one(self, index: int) -> None:
        call = self.calls[index]
        header: dict[str, Any] = {"call": index}
        try:
            if call.get("perturb"):
                values, arrays = self.perturbed(index, call)
                header.update(status="ok", values=values)
            else:
                value, mutated, fallback = self.invoke(index, call)
                values, arrays = self.encode_returns(call, value)
                header.update(status="ok", values=values, mutated=mutated, fallback=fallback)
        except CallFailed as failure:
            header.update(status="error", error=failure.error)
            arrays = []
        self.record(header, arrays)

    def invoke(self, index: int, call: dict[str, Any]) -> tuple[Any, list[int], bool]:
        """Call the student's function on fresh copies of the inputs; report which inputs it changed."""
        fallback = False
        args = []
        for spec in call["args"]:
            value, used_fallback = self.build_arg(spec)
            fallback = fallback or used_fallback
            args.append(value)
        originals = [a.copy() if isinstance(a, np.ndarray) else None for a in args]
        function = self.function(call["fn"])
        self.begin(index)
        try:
            value = self.call_student(function, args)
        except CallFailed as failure:
            if fallback:  # the scorer says so: a custom cache format cannot work with the documented one
                failure.error["fallback"] = True
            raise
        mutated = [i for i, original in enumerate(originals) if original is not None and changed(original, args[i])]
        return value, mutated, fallback

    def call_student(self, function: Any, args: list[Any]) -> Any:
        """Call a student's function; whatever it raises becomes this call's described failure."""
        try:
            value = function(*args)
        except BaseException as error:  # noqa: BLE001 - student code may raise anything, SystemExit too
            self.stay_the_run()
            raise CallFailed(self.describe(error)) from None
        self.stay_the_run()
        return value

    def stay_the_run(self) -> None:
        """A process the student's code forked returns here too: it must not answer for the run."""
        if os.getpid() != self.pid:
            os._exit(0)

    def function(self, name: str) -> Any:
        function = getattr(self.module, name, None)
        if not callable(function):
            raise CallFailed({"type": "missing", "message": f"{self.filename} defines no function {name}"})
        return function

    def build_arg(self, spec: dict[str, Any]) -> tuple[Any, bool]:
        if "a" in spec:
            return self.arrays[spec["a"]].copy(), False
        if "v" in spec:
            return spec["v"], False
        if "tuple" in spec:
            parts = [self.build_arg(part) for part in spec["tuple"]]
            return tuple(p[0] for p in parts), any(p[1] for p in parts)
        if "from" in spec:
            value = self.produce(spec["from"])
            arity = self.calls[spec["from"]].get("arity")
            # a forward that returned no tuple of its arity (`return out`, the cache forgotten) has no
            # cache to give: indexing it would hand the backward a row of `out`
            if value is not None and (arity is None or _of_arity(value, arity)):
                try:
                    return value[spec["index"]] if spec.get("index") is not None else value, False
                except Exception:  # noqa: BLE001, S110 - a malformed return falls back like a failure
                    pass
            built, _ = self.build_arg(spec["fallback"])
            return built, True
        raise CallFailed({"type": "internal", "message": "unknown argument kind"})

    def produce(self, index: int) -> Any:
        """The value a producer call (a forward pass) returned in this process, running it if needed."""
        if index not in self.produced:
            call = self.calls[index]
            if call["fn"] in self.broken or index in self.failed:
                self.produced[index] = (None, True)
            else:
                try:
                    value, _, _ = self.invoke(index, call)
                    self.produced[index] = (value, False)
                except CallFailed:
                    self.produced[index] = (None, True)
        value, failed = self.produced[index]
        return None if failed else value

    def perturbed(self, index: int, call: dict[str, Any]) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
        """Evaluate the function with one input nudged element by element (a batched numeric gradient)."""
        spec = call["perturb"]
        position = spec["arg"]
        output = spec["output"]
        name = call["returns"][output]
        arity = call.get("arity")
        bases = [self.build_arg(a)[0] for a in call["args"]]
        nudged = nudged_copies(bases[position], spec["offsets"])
        function = self.function(call["fn"])
        # fresh copies for every call: a function that changes its inputs must not skew the next
        fresh = [i for i, b in enumerate(bases) if i != position and isinstance(b, np.ndarray)]
        self.begin(index)  # the per-call time limit covers all the nudged calls together
        precisions: set[str] = set()
        stacked: np.ndarray | None = None
        for k, row in enumerate(nudged):
            args = bases.copy()
            for i in fresh:
                args[i] = bases[i].copy()
            args[position] = row.copy()
            value = self.call_student(function, args)
            if arity is None:
                picked = value
            elif type(value) is tuple and len(value) == arity:  # what unpack would take, without its checks
                picked = value[output]
            else:
                picked = self.unpack(call, value)[output]
            result = self.as_float_array(picked, name)
            if stacked is None:
                stacked = np.empty((len(nudged), *result.shape))
            elif result.shape != stacked.shape[1:]:
                raise CallFailed({"type": "shape", "message": f"{call['fn']} returned {name} of varying shapes"})
            # copied as it comes back: a function may hand back the same buffer every time, refilled
            stacked[k] = result
            if type(picked) is not np.ndarray or picked.dtype != np.float64:  # float64: no precision to name
                precisions.add(low_precision(picked) or "")
        if stacked is None:
            stacked = np.zeros((0,))
        described: dict[str, Any] = {"kind": "array"}
        precisions.discard("")
        if precisions:
            described["precision"] = sorted(precisions)[0]  # "float16" before "float32"
        return [described], [stacked]

    def unpack(self, call: dict[str, Any], value: Any) -> tuple[Any, ...]:
        arity = call["arity"]
        name = call["fn"]
        if not _of_arity(value, arity):
            described = "None" if value is None else a_type(value)
            if isinstance(value, (tuple, list)):
                described += f" of length {_length(value)}"
            expected = ", ".join(call["returns"])
            raise CallFailed(
                {"type": "returns", "message": f"{name} must return a tuple ({expected}); it returned {described}"}
            )
        return tuple(value)

    def encode_returns(self, call: dict[str, Any], value: Any) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
        parts = (value,) if call.get("arity") is None else self.unpack(call, value)
        values = []
        arrays = []
        for position in call["send"]:
            part = parts[position]
            name = call["returns"][position]
            if part is None:
                values.append({"kind": "none"})
                continue
            try:
                array = self.as_float_array(part, name)
            except CallFailed as failure:
                values.append({"kind": "invalid", "message": failure.error["message"]})
                continue
            described: dict[str, Any] = {"kind": "array"}
            precision = low_precision(part)
            if precision:  # compared in float64 all the same; named, should the values fall short
                described["precision"] = precision
            values.append(described)
            arrays.append(array)
        return values, arrays

    def as_float_array(self, value: Any, name: str) -> np.ndarray:
        if value is None:
            raise CallFailed({"type": "none", "message": f"{name} is None"})
        if (type(value) is np.ndarray and value.dtype == np.float64 and value.size <= MAX_RESULT_ELEMENTS
                and value.ndim < MAX_DIMS):
            return value
        try:
            array = np.asarray(value)
            if array.dtype.kind == "c":
                raise TypeError("complex values")
            array = array.astype(np.float64)
        except Exception as error:  # noqa: BLE001
            raise CallFailed(
                {"type": "invalid", "message": f"{name} is {a_type(value)}, not numbers ({error})"[:300]}
            ) from None
        if array.size > MAX_RESULT_ELEMENTS:
            raise CallFailed({"type": "invalid", "message": f"{name} has {array.size} elements, far too many"})
        # one axis short of the wire's cap: a gradient check stacks its outputs along a new one
        if array.ndim >= MAX_DIMS:
            raise CallFailed({"type": "invalid", "message": f"{name} has {array.ndim} axes, far too many"})
        return array

    def describe(self, error: BaseException) -> dict[str, Any]:
        """The exception type, message and the student's line, short enough for feedback."""
        kind = type_name(error)
        line = None
        for frame, lineno in traceback.walk_tb(error.__traceback__):
            if frame.f_code.co_filename == self.filename:
                line = lineno
        if isinstance(error, SyntaxError) and error.filename == self.filename:
            line = error.lineno  # a student can raise one with any value here
        if type(line) is not int or not 0 < line < 2**31:
            line = None
        text = _text(error)
        described: dict[str, Any] = {"type": kind, "message": text[:MAX_MESSAGE_CHARS], "line": line}
        limit = limit_kind(error)
        if limit:
            described["type"] = limit
        return described


# What the zygote runs through the harness once per plan, before any run: the harness's code paths
# and numpy's float64 loops are then warm in every child it forks (a child that has to warm them up
# itself spends a sixth more time). Trusted code of ours, not a submission and not a reference.
WARMUP = """
import numpy as np


def _warm(*args):
    x = next((np.asarray(a, dtype=np.float64) for a in args if isinstance(a, np.ndarray)), np.zeros(3))
    m = x.reshape(x.shape[0], -1) if x.ndim else x.reshape(1, 1)
    shifted = m - np.max(m, axis=1, keepdims=True)
    exp = np.exp(shifted)
    probs = exp / np.sum(exp, axis=1, keepdims=True)
    loss = -np.mean(np.log(probs[np.arange(m.shape[0]), 0]))
    relu = np.maximum(0, x) * (x > 0)
    product = m.T.dot(m) + m.T @ m
    total = 0.5 * np.sum(x * x) + float(loss) + float(product.sum(axis=0).sum())
    return relu, total, x.copy(), probs
"""


def warm_up(calls: list[dict[str, Any]], arrays: list[np.ndarray]) -> None:
    """Run the plan's calls on stand-in functions in this (trusted) process, output discarded."""
    functions = {c["fn"]: c.get("arity") for c in calls if str(c["fn"]).isidentifier()}
    source = WARMUP + "".join(
        f"\n\ndef {name}(*args):\n    out = _warm(*args) * {1 + (arity or 1) // 4}\n"
        f"    return {'out[0]' if arity is None else f'out[:{arity}]'}\n"
        for name, arity in functions.items()
    )
    calls = [c for c in calls if c["fn"] in functions]
    blockers = list(sys.meta_path)
    null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"), mmap.mmap(-1, 2 * LOG_RESERVE) as log:
            warnings.simplefilter("ignore")
            harness = Harness({"calls": calls, "filename": "<warm-up>"}, arrays, null, log)
            code = marshal.dumps(compile(source, "<warm-up>", "exec", dont_inherit=True))
            if harness.load(code, "_sandbox_warm_up", []):
                harness.run(0)
    finally:
        os.close(null)
        sys.meta_path[:] = blockers
        sys.modules.pop("_sandbox_warm_up", None)


def encodable(value: Any) -> Any:
    """A header with every string made valid UTF-8: a student's exception text may hold lone
    surrogates (from a surrogateescape decode, or written as escapes), which the wire cannot carry
    and which would otherwise cost the whole run's results. They become visible escapes."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {encodable(k): encodable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encodable(v) for v in value]
    return value


def changed(original: np.ndarray, now: np.ndarray) -> bool:
    """Whether a call changed an input array: equal bytes and shape settle it fast, else numpy decides
    (NaNs compare equal, -0.0 equals 0.0)."""
    if now.shape == original.shape and now.dtype == original.dtype and now.tobytes() == original.tobytes():
        return False
    return not np.array_equal(original, now, equal_nan=True)


def nudged_copies(base: np.ndarray, offsets: list[float]) -> np.ndarray:
    """Every input a numeric gradient needs, at once: row k is `base` with element k // len(offsets)
    moved by offsets[k % len(offsets)], the same float addition as nudging a copy one at a time."""
    steps = len(offsets)
    rows = np.repeat(base.reshape(1, -1), base.size * steps, axis=0)
    rows[np.arange(base.size * steps), np.repeat(np.arange(base.size), steps)] += np.tile(offsets, base.size)
    return rows.reshape(base.size * steps, *base.shape)


def _of_arity(value: Any, arity: int) -> bool:
    """Whether a student's value is the tuple (or list) of `arity` values a function must return."""
    return isinstance(value, tuple | list) and _length(value) == arity


def _length(value: Any) -> int | None:
    """len() of a student's value, or None where its __len__ misbehaves."""
    try:
        return len(value)
    except Exception:  # noqa: BLE001 - a hostile __len__
        return None


def low_precision(value: Any) -> str | None:
    """"float32" or "float16" when a returned value (or every number in a list of them) has that
    precision: the feedback then says why its values fall short of the tolerance."""
    try:
        return _low_precision(value)
    except Exception:  # noqa: BLE001 - a `dtype` that raises: no precision to name
        return None


def _low_precision(value: Any) -> str | None:
    dtype = getattr(value, "dtype", None)
    if dtype is None and isinstance(value, list | tuple) and value:
        dtypes = {getattr(v, "dtype", None) for v in value}
        dtype = dtypes.pop() if len(dtypes) == 1 else None
    if isinstance(dtype, np.dtype) and dtype.kind == "f" and dtype.itemsize in (2, 4):
        return str(dtype)
    return None


def _text(error: BaseException) -> str:
    try:
        return str(error)
    except Exception:  # noqa: BLE001 - a hostile __str__
        return ""


def type_name(value: Any) -> str:
    """The name of a value's type, capped: a class can be given a name of any length."""
    return str(type(value).__name__)[:MAX_NAME_CHARS]


def a_type(value: Any) -> str:
    """"a tuple", "an int", "an ndarray" (as it is said): a value's type with its article."""
    kind = type_name(value)
    return f"{'an' if kind[:1] in 'aeiou' or kind == 'ndarray' else 'a'} {kind}"


def limit_kind(error: BaseException) -> str | None:
    """Which limit an exception is the symptom of, if any (the kinds the scorer words as limits)."""
    if isinstance(error, MemoryError):
        return "memory"
    if isinstance(error, RuntimeError) and "can't start new thread" in _text(error):
        return "processes"
    if isinstance(error, OSError) and type(error.errno) is int and error.errno in LIMIT_ERRNOS:
        if error.errno == errno.EAGAIN and not isinstance(error, BlockingIOError):
            return None
        return LIMIT_ERRNOS[error.errno]
    return None
