"""Scoring a run's plain arrays against the rubric, and saying what went wrong in words a student can use.

Everything here runs in the trusted process and decides scores only from arrays and error kinds;
nothing the submission printed or wrote reaches a score.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from grader.engine.assignment import Assignment
from grader.engine.plan import STENCIL_WEIGHTS, Plan
from grader.engine.report import CheckResult, ProblemResult
from grader.engine.rubric import CheckSpec
from grader.engine.spec import Case, Function
from grader.sandbox.isolation import Limits
from grader.sandbox.pool import CallResult, RunResult, Value

# error kind -> the limit it is a breach of (the names a report's `limits_hit` lists)
LIMIT_KINDS = {
    "timeout": "time", "total_time": "time",
    "memory": "memory", "cpu": "cpu", "processes": "processes", "open_files": "open files",
    "file_size": "file size", "disk": "disk", "output": "output",
}


def why_no_terminal(kind: str, message: str) -> str:
    """What an exception means here when it comes from waiting for someone at a terminal."""
    if kind == "BdbQuit":
        return "; a breakpoint() or pdb.set_trace() was left in the code, and with no terminal the debugger quits"
    if kind == "EOFError" and "reading a line" in message:
        return "; input() was left in the code, and with no terminal nothing answers it"
    return ""


def describe_limit(kind: str, limits: Limits) -> str | None:
    """A limit breach in the words the feedback uses ("memory limit of 512 MB exceeded"), or None."""
    return {
        "memory": f"memory limit of {limits.memory_limit_mb} MB exceeded",
        "cpu": f"CPU time limit of {limits.cpu_limit} s exceeded",
        "processes": f"process limit of {limits.max_processes} exceeded",
        "open_files": f"open-file limit of {limits.max_open_files} exceeded",
        "file_size": f"file-size limit of {fmt_bytes(limits.max_file_bytes)} exceeded",
        "disk": f"scratch space limit of {limits.scratch_mb} MB exceeded",
        "output": f"output limit of {fmt_bytes(limits.max_output_bytes)} exceeded",
    }.get(kind)


def fmt_bytes(count: int) -> str:
    return f"{count / (1 << 20):g} MB" if count >= 1 << 20 else f"{count} bytes"


class CheckFailed(Exception):
    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def returns_hint(function: Function, error: dict[str, Any] | None) -> str:
    """For a function that returned something other than its tuple: how the starter returns it."""
    if (error or {}).get("type") != "returns" or len(function.returns) < 2:
        return ""
    return f"End {function.name} with `return {', '.join(function.returns)}`, as the starter code does."


@dataclass
class Scorer:
    assignment: Assignment
    plan: Plan
    run: RunResult
    limits: Limits
    filename: str
    warnings: list[str] = field(default_factory=list)
    limits_hit: list[str] = field(default_factory=list)

    def score(self) -> list[ProblemResult]:
        problems = []
        for problem in self.assignment.rubric.problems:
            checks = [self.score_check(check) for check in problem.checks]
            problems.append(
                ProblemResult(
                    number=problem.number,
                    title=problem.title,
                    score=sum(c.score for c in checks),
                    max_score=sum(c.max_score for c in checks),
                    checks=checks,
                )
            )
        return problems

    def score_check(self, check: CheckSpec) -> CheckResult:
        self.measured: float | None = None
        try:
            note = self.match(check) if check.kind == "match" else self.gradcheck(check)
        except CheckFailed as failure:
            return CheckResult(
                name=check.name, score=0.0, max_score=check.points, passed=False,
                message=failure.message, hint=failure.hint, measured=self.measured,
            )
        return CheckResult(
            name=check.name, score=check.points, max_score=check.points, passed=True, message=note,
            measured=self.measured,
        )

    # -- match --------------------------------------------------------------------------------------

    def match(self, check: CheckSpec) -> str:
        assert check.function is not None
        function = self.assignment.functions[check.function]
        cases = self.plan.cases[check.cases]
        used_fallback = False
        for i, case in enumerate(cases):
            key = (function.name, check.cases, i)
            result = self.result(key)
            where = CaseRef(function, case, i, len(cases))
            if not result.ok:
                raise CheckFailed(
                    self.describe_failure(function.name, result.error) + self.fallback_note(function, result)
                    + f" ({where})",
                    check.hints.error or returns_hint(function, result.error),
                )
            used_fallback = used_fallback or result.fallback
            self.note_mutations(function, result)
            values = self.named_values(function, result)
            for name in check.outputs:
                expected = self.plan.expected[key][name]
                actual = self.as_array(function, name, values[name], check, where)
                bound = self.plan.tolerance_bound(key, name, check.rtol, check.atol)
                if actual.shape == expected.shape and bound is not None and (np.abs(actual - expected) <= bound).all():
                    continue  # most values pass: one comparison (false for nan or inf) settles it
                swapped = self.swapped_with(key, values, name, actual.shape) if actual.shape != expected.shape else ""
                self.compare(name, actual, expected, check, where, values[name].precision, swapped)
        if used_fallback and function.cache is not None:
            return (
                f"passed using the documented cache, because your {function.cache.forward} "
                "did not return a usable cache"
            )
        return ""

    def swapped_with(self, key: tuple[Any, ...], values: dict[str, Value], name: str, shape: tuple[int, ...]) -> str:
        """Another of the call's return values that has the shape `name` should have, while `name` has
        that one's: the two were most likely returned in each other's place."""
        expected = self.plan.expected[key]
        for other, value in values.items():
            if other == name or other not in expected or value.array is None:
                continue
            if np.shape(expected[other]) == shape and value.array.shape == np.shape(expected[name]):
                return other
        return ""

    def compare(
        self, name: str, actual: np.ndarray, expected: np.ndarray, check: CheckSpec, where: CaseRef,
        precision: str = "", swapped: str = "",
    ) -> None:
        if actual.shape != expected.shape:
            order = (f"{name} has the shape {swapped} should have, and {swapped} the shape of {name}: return them in "
                     "the order the starter does.") if swapped else ""
            raise CheckFailed(
                f"{name} has shape {fmt_shape(actual.shape)}; expected {fmt_shape(expected.shape)} ({where})",
                join_hints(order, check.hints.shape, extra_axis_hint(actual.shape, expected.shape)),
            )
        if not np.isfinite(actual).all():
            raise CheckFailed(f"{name} contains nan or inf ({where})", check.hints.nonfinite or check.hints.mismatch)
        if not np.allclose(actual, expected, rtol=check.rtol, atol=check.atol):
            error = float(np.max(np.abs(actual - expected)))
            hint = check.hints.mismatch
            if precision:  # a small relative error is the precision alone, a large one the formula as well
                scale = max(float(np.max(np.abs(expected))), 1.0) if expected.size else 1.0
                lost = precision_hint(name, precision)
                hint = lost if error / scale < 1e-3 else join_hints(lost, hint)
            raise CheckFailed(
                f"{name} has the right shape but wrong values: largest difference from the expected "
                f"values is {error:.3g} ({where})",
                hint,
            )

    # -- gradient check -----------------------------------------------------------------------------

    def gradcheck(self, check: CheckSpec) -> str:
        assert check.forward is not None and check.output is not None
        forward = self.assignment.functions[check.forward]
        source = self.assignment.functions[check.backward] if check.backward else forward
        cases = self.plan.cases[check.cases]
        worst = 0.0
        for i, case in enumerate(cases):
            where = CaseRef(forward, case, i, len(cases))
            source_where = CaseRef(source, case, i, len(cases))
            result = self.result((source.name, check.cases, i))
            if not result.ok:
                raise CheckFailed(
                    self.describe_failure(source.name, result.error) + self.fallback_note(source, result)
                    + f" ({source_where})",
                    returns_hint(source, result.error),
                )
            analytic = self.named_values(source, result)
            expected_output = self.plan.expected[(forward.name, check.cases, i)][check.output]
            for param, grad_name in check.wrt.items():
                grad = self.as_array(source, grad_name, analytic[grad_name], check, source_where)
                base = np.asarray(case[param])
                if grad.shape != base.shape:
                    raise CheckFailed(
                        f"{grad_name} has shape {fmt_shape(grad.shape)}; expected {fmt_shape(base.shape)}, "
                        f"the shape of {param} ({source_where})",
                        extra_axis_hint(grad.shape, base.shape),
                    )
                if not np.all(np.isfinite(grad)):
                    raise CheckFailed(f"{grad_name} contains nan or inf ({source_where})")
                numeric, nudged = self.numeric_gradient(check, forward, case, i, param, expected_output, where)
                if not np.any(numeric != 0):
                    raise CheckFailed(
                        f"the numeric gradient of your {forward.name} with respect to {param} is zero "
                        f"everywhere, so there is nothing to check: {forward.name} ignores {param} ({where})",
                        check.hints.zero,
                    )
                difference = float(np.max(np.abs(grad - numeric)))
                worst = max(worst, difference)
                self.measured = worst
                if not difference < check.tolerance:
                    if analytic[grad_name].precision:
                        lost = precision_hint(grad_name, analytic[grad_name].precision)
                    else:
                        lost = precision_hint(f"{forward.name} {check.output}", nudged) if nudged else ""
                    raise CheckFailed(
                        f"{grad_name} differs from the numeric gradient of your {forward.name} by up to "
                        f"{difference:.2e}; it must be below {check.tolerance:g} ({where})",
                        join_hints(lost, check.hints.mismatch),
                    )
        return f"largest difference {worst:.1e}"

    def numeric_gradient(
        self, check: CheckSpec, forward: Function, case: Case, i: int, param: str,
        expected_output: np.ndarray, where: CaseRef,
    ) -> tuple[np.ndarray, str]:
        """The numeric gradient from the nudged outputs, and their precision if below float64."""
        assert check.output is not None
        key = ("perturb", forward.name, check.cases, i, param, check.output, check.step)
        result = self.result(key)
        if not result.ok:
            described = self.describe_failure(forward.name, result.error)
            error = result.error or {}
            # the limit covers all the nudged calls together (unless they never ran)
            if error.get("type") == "timeout" and not error.get("not_run"):
                calls = np.asarray(case[param]).size * len(STENCIL_WEIGHTS)
                described = (f"{forward.name} did not finish the {calls} calls of the gradient check (each element "
                             f"of {param} nudged {len(STENCIL_WEIGHTS)} times) within {self.limits.time_limit:g} s")
            raise CheckFailed(f"{described} ({where})", returns_hint(forward, result.error))
        outputs = result.values[0].array if result.values and result.values[0].array is not None else None
        base = np.asarray(case[param])
        steps = len(STENCIL_WEIGHTS)
        if outputs is not None and expected_output.shape == () and outputs.ndim > 1 and outputs[0].size == 1:
            # a loss of shape (1,) is one number all the same: its numeric gradient is as well defined,
            # so the gradient check judges the gradient (the loss check has said what is wrong with it)
            outputs = outputs.reshape(outputs.shape[0])
        if outputs is None or outputs.shape != (base.size * steps, *expected_output.shape):
            shape = "nothing" if outputs is None else fmt_shape(outputs.shape[1:])
            raise CheckFailed(
                f"{check.output} of {forward.name} has shape {shape}; expected {fmt_shape(expected_output.shape)}, "
                f"so no numeric gradient can be taken ({where})"
            )
        if expected_output.shape == ():
            objective = outputs
        else:
            upstream = np.asarray(case[check.upstream], dtype=np.float64)
            objective = np.sum(outputs * upstream, axis=tuple(range(1, outputs.ndim)))
        if not np.all(np.isfinite(objective)):
            raise CheckFailed(f"{forward.name} returned nan or inf for slightly changed inputs ({where})")
        numeric = objective.reshape(base.size, steps) @ STENCIL_WEIGHTS / check.step
        return numeric.reshape(base.shape), result.values[0].precision

    # -- shared -------------------------------------------------------------------------------------

    def result(self, key: tuple[Any, ...]) -> CallResult:
        return self.run.calls[self.plan.keys[key]]

    def named_values(self, function: Function, result: CallResult) -> dict[str, Value]:
        names = [function.returns[i] for i in function.sent]
        return dict(zip(names, result.values, strict=False))

    def as_array(self, function: Function, name: str, value: Value, check: CheckSpec, where: CaseRef) -> np.ndarray:
        if value.kind == "none" or (value.array is None and value.kind == "array"):
            raise CheckFailed(
                f"{function.name} returned None for {name} ({where})",
                check.hints.none or "Replace the starter's placeholder with your implementation.",
            )
        if value.kind != "array" or value.array is None:
            raise CheckFailed(f"{function.name} returned an unusable {name}: {value.message} ({where})")
        return value.array

    def fallback_note(self, function: Function, result: CallResult) -> str:
        """Why a call that failed was given the documented cache rather than the student's own."""
        if function.cache is None or not (result.error or {}).get("fallback"):
            return ""
        return (f"; it was given the documented cache {function.cache.describe()}, because your "
                f"{function.cache.forward} did not return a usable one for this case")

    def describe_failure(self, function: str, error: dict[str, Any] | None) -> str:
        error = error or {}
        if error.get("not_run"):  # the function failed on two other calls; this one never ran
            earlier = self.describe_failure(function, {k: v for k, v in error.items() if k != "not_run"})
            return f"not run, because {earlier} on two other calls"
        kind = error.get("type", "error")
        message = error.get("message", "")
        if error.get("import"):
            return f"not run: {self.filename} could not be imported"
        if kind in LIMIT_KINDS:
            limit = LIMIT_KINDS[kind]
            if limit not in self.limits_hit:
                self.limits_hit.append(limit)
        if kind == "timeout":
            return f"{function} did not return within {self.limits.time_limit:g} s"
        breach = describe_limit(kind, self.limits)
        if breach:
            return f"{breach} in {function}"
        if kind in ("missing", "returns", "shape", "invalid", "total_time"):
            return message
        if kind in ("killed", "crash", "exit", "protocol", "lost"):
            return f"{function} {message}"
        line = error.get("line")
        at = f" (line {line})" if line else ""
        text = f": {message}" if message else ""
        return f"{function} raised {kind}{text}{at}{why_no_terminal(kind, message)}"

    def note_mutations(self, function: Function, result: CallResult) -> None:
        for position in result.mutated:
            if 0 <= position < len(function.params):
                warning = (
                    f"{function.name} modifies its input {function.params[position]} in place; it was graded "
                    "on what it returned, but callers expect inputs to stay unchanged"
                )
                if warning not in self.warnings:
                    self.warnings.append(warning)


def fmt_shape(shape: tuple[int, ...]) -> str:
    return "()" if shape == () else "(" + ", ".join(str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"


class CaseRef:
    """Which case a check failed on; worded only when a message needs it (most checks pass)."""

    __slots__ = ("case", "count", "function", "index")

    def __init__(self, function: Function, case: Case, index: int, count: int) -> None:
        self.function = function
        self.case = case
        self.index = index
        self.count = count

    def __str__(self) -> str:
        return f"on case {self.index + 1} of {self.count}, {describe_call(self.function, self.case)}"


def precision_hint(what: str, precision: str) -> str:
    digits = "7" if precision == "float32" else "3"
    return (f"Your {what} is {precision}, which carries about {digits} significant digits: compute in float64 "
            "(numpy's default) to get within the tolerance.")


def join_hints(*hints: str) -> str:
    return " ".join(h for h in hints if h)


def extra_axis_hint(actual: tuple[int, ...], expected: tuple[int, ...]) -> str:
    """The one shape mistake worth naming: a stray leading axis of length 1 (a tuple, or keepdims)."""
    if actual == (1, *expected) and expected:
        return ("There is an extra leading axis of length 1: return the array itself, not wrapped in a tuple "
                "or list, and reduce without keepdims.")
    return ""


def describe_call(function: Function, case: Case) -> str:
    """The call with argument shapes only: hidden inputs are never printed wholesale."""
    parts = []
    for param in function.params:
        if function.cache is not None and param == function.cache.param:
            parts.append(param)
            continue
        value = case[param]
        if isinstance(value, np.ndarray):
            parts.append(f"{param} {fmt_shape(value.shape)}")
        else:
            parts.append(f"{param}={value:g}" if isinstance(value, float) else f"{param}={value}")
    return f"{function.name}({', '.join(parts)})"
