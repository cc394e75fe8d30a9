"""Loading an assignment folder: its functions and case sets (cases.py), reference (solution.py), rubric."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from grader.engine.rubric import Rubric, load_rubric
from grader.engine.spec import CaseGenerator, Function


class AssignmentError(Exception):
    """The assignment folder is incomplete or its rubric refers to things it does not define."""


@dataclass
class Assignment:
    path: Path
    rubric: Rubric
    functions: dict[str, Function]
    case_sets: dict[str, CaseGenerator]
    reference: ModuleType

    @property
    def name(self) -> str:
        return self.rubric.assignment


def default_assignment_dir() -> Path:
    import reference

    return Path(reference.__file__).parent / "hw5"


def _load_module(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise AssignmentError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_assignment(path: Path | str | None = None) -> Assignment:
    folder = Path(path) if path is not None else default_assignment_dir()
    for required in ("rubric.toml", "cases.py", "solution.py"):
        if not (folder / required).is_file():
            raise AssignmentError(f"{folder} is not an assignment folder: {required} is missing")
    key = f"_grader_assignment_{abs(hash(str(folder.resolve())))}"
    cases = _load_module(folder / "cases.py", key + "_cases")
    solution = _load_module(folder / "solution.py", key + "_solution")
    try:
        rubric = load_rubric(folder / "rubric.toml")
    except Exception as error:
        raise AssignmentError(f"{folder / 'rubric.toml'}: {error}") from error
    assignment = Assignment(
        path=folder,
        rubric=rubric,
        functions={f.name: f for f in cases.FUNCTIONS},
        case_sets=dict(cases.CASE_SETS),
        reference=solution,
    )
    _validate(assignment)
    return assignment


def _validate(assignment: Assignment) -> None:
    functions = assignment.functions
    for problem in assignment.rubric.problems:
        for check in problem.checks:
            where = f"problem {problem.number}, check {check.name!r}"
            if check.cases not in assignment.case_sets:
                raise AssignmentError(f"{where}: unknown case set {check.cases!r}")
            names = [check.function] if check.kind == "match" else [check.forward, check.backward]
            for name in names:
                if name is not None and name not in functions:
                    raise AssignmentError(f"{where}: unknown function {name!r}")
                if name is not None and not hasattr(assignment.reference, name):
                    raise AssignmentError(f"{where}: solution.py has no {name}")
            if check.kind == "match":
                assert check.function is not None
                unknown = set(check.outputs) - set(functions[check.function].returns)
                if unknown:
                    raise AssignmentError(f"{where}: {check.function} has no output {sorted(unknown)}")
