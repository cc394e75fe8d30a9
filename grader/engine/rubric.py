"""The rubric file: problems, their checks and points, and the assignment's policies.

A course edits this TOML file to change weights, tolerances, limits or hints, or to add a check of a
known kind over a case set, without touching code.
"""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Hints(BaseModel):
    """Feedback added to a failed check, by what went wrong."""

    model_config = ConfigDict(extra="forbid")
    shape: str = ""
    nonfinite: str = ""
    mismatch: str = ""
    none: str = ""
    error: str = ""
    zero: str = ""


class CheckSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    points: float = Field(ge=0)
    kind: Literal["match", "gradcheck"]
    cases: str
    # match
    function: str | None = None
    outputs: list[str] = Field(default_factory=list)
    # gradcheck
    forward: str | None = None
    output: str | None = None
    backward: str | None = None
    wrt: dict[str, str] = Field(default_factory=dict)
    upstream: str = "grad_out"
    tolerance: float = 1e-9
    step: float = 1e-3
    # match
    rtol: float = 1e-6
    atol: float = 1e-8
    hints: Hints = Field(default_factory=Hints)
    description: str = ""

    @model_validator(mode="after")
    def _complete(self) -> CheckSpec:
        if self.kind == "match" and (not self.function or not self.outputs):
            raise ValueError(f"check {self.name!r}: a match check needs `function` and `outputs`")
        if self.kind == "gradcheck" and (not self.forward or not self.output or not self.wrt):
            raise ValueError(f"check {self.name!r}: a gradcheck needs `forward`, `output` and `wrt`")
        return self


class ProblemSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    number: int
    title: str
    checks: list[CheckSpec] = Field(alias="check")

    @property
    def max_score(self) -> float:
        return sum(c.points for c in self.checks)


class LimitSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    time_limit: float = Field(default=3.0, gt=0)
    import_time_limit: float = Field(default=10.0, gt=0)
    memory_limit_mb: int = Field(default=512, gt=16)


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    forbidden_imports: list[str] = Field(default_factory=list)
    forbidden_action: Literal["zero", "warn"] = "zero"


class Rubric(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    assignment: str
    title: str
    filename: str
    seed: int = 0
    version: str = ""
    limits: LimitSpec = Field(default_factory=LimitSpec)
    policy: Policy = Field(default_factory=Policy)
    problems: list[ProblemSpec] = Field(alias="problem")

    @property
    def max_score(self) -> float:
        return sum(c.points for p in self.problems for c in p.checks)


def load_rubric(path: Path) -> Rubric:
    raw = path.read_bytes()
    rubric = Rubric.model_validate(tomllib.loads(raw.decode()))
    if not rubric.version:
        # the rubric's own hash: a stored grade names exactly the rubric that produced it
        rubric.version = hashlib.sha256(raw).hexdigest()[:12]
    return rubric
