"""Turning a rubric into the calls the sandbox makes, and the reference's answers to them.

A plan is built once per assignment and seed, then reused for every submission: the inputs, the
perturbed-input recipes and the reference outputs never change between students.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from grader.engine.assignment import Assignment
from grader.engine.rubric import CheckSpec
from grader.engine.spec import Case, Function

# Fourth-order central difference: f'(x) ~ (f(x-2h) - 8 f(x-h) + 8 f(x+h) - f(x+2h)) / 12h
STENCIL_OFFSETS = (-2.0, -1.0, 1.0, 2.0)
STENCIL_WEIGHTS = np.array([1.0, -8.0, 8.0, -1.0]) / 12.0

CallKey = tuple[Any, ...]


@dataclass
class Plan:
    seed: int
    calls: list[dict[str, Any]] = field(default_factory=list)
    arrays: list[np.ndarray] = field(default_factory=list)
    keys: dict[CallKey, int] = field(default_factory=dict)
    cases: dict[str, list[Case]] = field(default_factory=dict)
    expected: dict[CallKey, dict[str, np.ndarray]] = field(default_factory=dict)
    array_ids: dict[int, int] = field(default_factory=dict)
    bounds: dict[tuple[CallKey, str, float, float], np.ndarray | None] = field(default_factory=dict)

    def tolerance_bound(self, key: CallKey, name: str, rtol: float, atol: float) -> np.ndarray | None:
        """How far each of an output's values may be from the expected one (`np.allclose`'s test:
        atol + rtol * |expected|), or None where an expected value is not finite; the same for
        every submission, so computed once per plan."""
        slot = (key, name, rtol, atol)
        if slot not in self.bounds:
            expected = self.expected[key][name]
            self.bounds[slot] = atol + rtol * np.abs(expected) if np.isfinite(expected).all() else None
        return self.bounds[slot]


def case_rng(seed: int, case_set: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(case_set.encode())])


class Planner:
    def __init__(self, assignment: Assignment, seed: int) -> None:
        self.assignment = assignment
        self.plan = Plan(seed=seed)

    def build(self) -> Plan:
        for problem in self.assignment.rubric.problems:
            for check in problem.checks:
                self.add_check(check)
        return self.plan

    def cases(self, name: str) -> list[Case]:
        if name not in self.plan.cases:
            generated = self.assignment.case_sets[name](case_rng(self.plan.seed, name))
            for case in generated:
                for value in case.values():
                    if isinstance(value, np.ndarray):
                        value.setflags(write=False)
            self.plan.cases[name] = generated
        return self.plan.cases[name]

    def add_check(self, check: CheckSpec) -> None:
        cases = self.cases(check.cases)
        for i in range(len(cases)):
            if check.kind == "match":
                assert check.function is not None
                self.ensure_call(check.function, check.cases, i)
            else:
                assert check.forward is not None
                self.ensure_call(check.forward, check.cases, i)
                if check.backward:
                    self.ensure_call(check.backward, check.cases, i)
                for param in check.wrt:
                    self.ensure_perturbed(check, i, param)

    def function(self, name: str) -> Function:
        return self.assignment.functions[name]

    def array_ref(self, value: np.ndarray) -> dict[str, Any]:
        key = id(value)
        if key not in self.plan.array_ids:
            self.plan.array_ids[key] = len(self.plan.arrays)
            self.plan.arrays.append(value)
        return {"a": self.plan.array_ids[key]}

    def value_ref(self, value: Any) -> dict[str, Any]:
        if isinstance(value, np.ndarray):
            return self.array_ref(value)
        if isinstance(value, (int, float, np.integer, np.floating)):
            return {"v": value.item() if isinstance(value, np.generic) else value}
        raise TypeError(f"case values must be arrays or numbers, not {type(value).__name__}")

    def wire_call(self, function: Function, case_set: str, i: int) -> dict[str, Any]:
        case = self.cases(case_set)[i]
        args = []
        for param in function.params:
            cache = function.cache
            if cache is not None and param == cache.param:
                producer = self.ensure_call(cache.forward, case_set, i)
                forward = self.function(cache.forward)
                documented = cache.documented
                fallback = (
                    self.value_ref(case[documented])
                    if isinstance(documented, str)
                    else {"tuple": [self.value_ref(case[name]) for name in documented]}
                )
                index = None if forward.bare else forward.returns.index(cache.output)
                args.append({"from": producer, "index": index, "fallback": fallback})
            else:
                args.append(self.value_ref(case[param]))
        return {
            "fn": function.name,
            "args": args,
            "arity": None if function.bare else len(function.returns),
            "returns": list(function.returns),
            "send": function.sent,
        }

    def ensure_call(self, name: str, case_set: str, i: int) -> int:
        key: CallKey = (name, case_set, i)
        if key not in self.plan.keys:
            function = self.function(name)
            call = self.wire_call(function, case_set, i)
            self.plan.keys[key] = len(self.plan.calls)
            self.plan.calls.append(call)
            self.plan.expected[key] = self.reference_outputs(function, self.cases(case_set)[i])
        return self.plan.keys[key]

    def ensure_perturbed(self, check: CheckSpec, i: int, param: str) -> int:
        assert check.forward is not None and check.output is not None
        key: CallKey = ("perturb", check.forward, check.cases, i, param, check.output, check.step)
        if key not in self.plan.keys:
            function = self.function(check.forward)
            call = self.wire_call(function, check.cases, i)
            call["perturb"] = {
                "arg": function.params.index(param),
                "offsets": [o * check.step for o in STENCIL_OFFSETS],
                "output": function.returns.index(check.output),
            }
            self.plan.keys[key] = len(self.plan.calls)
            self.plan.calls.append(call)
        return self.plan.keys[key]

    def reference_outputs(self, function: Function, case: Case) -> dict[str, np.ndarray]:
        implementation = getattr(self.assignment.reference, function.name)
        returned = function.named_returns(implementation(*function.call_args(case)))
        return {
            name: np.asarray(value, dtype=np.float64)
            for name, value in returned.items()
            if name not in function.keep
        }


def build_plan(assignment: Assignment, seed: int) -> Plan:
    return Planner(assignment, seed).build()
