"""One row per student after grading: the report, or why there is none. The CLI and the service share it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from grader.engine.report import SubmissionReport
from grader.intake.collect import OK, Intake, Submission

if TYPE_CHECKING:
    from grader.engine.grading import Grader

GRADED = "graded"  # StudentResult.status when a report exists; otherwise the intake's reason


@dataclass
class StudentResult:
    """A student's outcome: `report` is None exactly when there was nothing to grade (see `status`)."""

    key: str
    name: str | None
    status: str
    detail: str
    late: bool
    report: SubmissionReport | None
    max_score: float
    attempt: str | None = None
    origin: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def score(self) -> float | None:
        return self.report.score if self.report is not None else None

    def summary(self) -> str:
        """One line for a gradebook: the report's summary, or why nothing was graded."""
        return self.report.summary() if self.report is not None else self.detail or self.status

    def as_json(self) -> dict[str, Any]:
        """The report object plus who it belongs to; `score` is null when there was nothing to grade."""
        if self.report is not None:
            payload = self.report.model_dump(mode="json")
        else:
            payload = {"score": None, "max_score": self.max_score, "problems": [], "errors": [],
                       "warnings": list(self.warnings), "limits_hit": []}
        payload.update(student=self.key, name=self.name, status=self.status, detail=self.detail,
                       late=self.late, attempt=self.attempt, origin=self.origin)
        return payload


def result_for(submission: Submission, report: SubmissionReport | None, max_score: float) -> StudentResult:
    """Combine what intake found with what grading produced; intake notes become report warnings."""
    if report is not None:
        report.student = submission.key
        report.warnings[:0] = [w for w in submission.warnings if w not in report.warnings]
    return StudentResult(
        key=submission.key,
        name=submission.name,
        status=GRADED if report is not None else submission.status,
        detail=submission.detail,
        late=submission.late,
        report=report,
        max_score=max_score,
        attempt=submission.attempt,
        origin=submission.origin,
        warnings=list(submission.warnings),
    )


def grade_intake(
    grader: Grader,
    intake: Intake,
    progress: Callable[[int, int, StudentResult], None] | None = None,
) -> list[StudentResult]:
    """Grade every gradable student in parallel; students with nothing to grade get a row too, in order.

    `progress(done, total, result)` is called once per student, from the calling thread.
    """
    max_score = grader.assignment.rubric.max_score
    total = len(intake.submissions)
    done = 0
    results: dict[str, StudentResult] = {}
    for submission in intake.submissions:
        if submission.status != OK or submission.source is None:
            results[submission.key] = result_for(submission, None, max_score)
            done += 1
            if progress is not None:
                progress(done, total, results[submission.key])
    gradable = {s.key: s for s in intake.submissions if s.status == OK and s.source is not None}

    def graded(_: int, __: int, report: SubmissionReport) -> None:
        nonlocal done
        key = report.student or ""
        results[key] = result_for(gradable[key], report, max_score)
        done += 1
        if progress is not None:
            progress(done, total, results[key])

    grader.grade_many([(key, s.source) for key, s in gradable.items() if s.source is not None], graded)
    return [results[s.key] for s in intake.submissions]
