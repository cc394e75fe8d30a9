"""What grading produces: the JSON a TA, a student, the API and the exports all read."""

from __future__ import annotations

from pydantic import BaseModel, Field


class CheckResult(BaseModel):
    name: str
    score: float
    max_score: float
    passed: bool
    message: str = ""
    hint: str = ""
    measured: float | None = Field(default=None, description="gradient checks: the largest difference found")


class ProblemResult(BaseModel):
    number: int
    title: str
    score: float
    max_score: float
    checks: list[CheckResult]


class SubmissionReport(BaseModel):
    score: float
    max_score: float
    problems: list[ProblemResult]
    errors: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    limits_hit: list[str] = Field(default_factory=list, description="limits the submission ran into")
    policy_violation: bool = False
    assignment: str = ""
    rubric_version: str = ""
    grader_version: str = ""
    seed: int = 0
    seconds: float = 0.0
    student: str | None = None

    def problem_scores(self) -> dict[int, float]:
        return {p.number: p.score for p in self.problems}

    def summary(self) -> str:
        """One line for a gradebook: the first error, else the failed checks."""
        if self.errors:
            return self.errors[0]
        failed = [f"P{p.number} {c.name}" for p in self.problems for c in p.checks if not c.passed]
        if not failed:
            return "all checks passed"
        return "failed: " + ", ".join(failed)
