"""The API's response bodies, as they appear in the OpenAPI schema."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from grader.engine.report import SubmissionReport

BatchStatus = Literal["queued", "running", "done", "failed"]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str
    assignment: str
    rubric_version: str
    layers: dict[str, bool] = Field(description="sandbox isolation layers in force")
    queue_depth: int


class GradeResult(SubmissionReport):
    """`grader grade FILE --format json`, plus the id the submission is stored under."""

    id: int


class Accepted(BaseModel):
    """A single file accepted for grading later; the result is POSTed to `callback_url`."""

    id: int
    status: str
    url: str = Field(description="where the stored result can be fetched")
    callback_url: str


class Progress(BaseModel):
    done: int
    total: int


class ProblemScore(BaseModel):
    number: int
    title: str
    score: float
    max_score: float


class BatchStudent(BaseModel):
    """One student of a batch; `score` is null until graded, and stays null when there was nothing to grade."""

    submission_id: int
    student: str
    name: str | None
    late: bool
    attempt: str | None = Field(default=None, description="the LMS attempt graded (the latest one)")
    status: str = Field(description="queued, running, graded, error, or why there was nothing to grade")
    detail: str = ""
    score: float | None
    max_score: float
    problems: list[ProblemScore]
    limits_hit: list[str]
    errors: list[str]
    warnings: list[str]
    policy_violation: bool


class BatchSummary(BaseModel):
    id: int
    created_at: datetime
    filename: str
    layout: str
    status: BatchStatus
    progress: Progress


class BatchDetail(BatchSummary):
    warnings: list[str]
    error: str | None = None
    submissions: list[BatchStudent]


class BatchList(BaseModel):
    batches: list[BatchSummary] = Field(description="newest first")


class HistoryEntry(BaseModel):
    """An earlier or current grading of the same stored file, for auditing a grade."""

    generation: int
    created_at: datetime
    score: float
    max_score: float
    rubric_version: str
    grader_version: str
    seed: int


class CallbackState(BaseModel):
    url: str
    state: Literal["pending", "delivered", "failed"]
    attempts: int
    last_status: int | None
    last_error: str | None
    delivered_at: datetime | None


class SubmissionDetail(BaseModel):
    """A stored submission: its source, where grading stands, the current result and earlier ones."""

    id: int
    batch_id: int | None
    student: str
    name: str | None
    late: bool
    status: str
    detail: str
    sha256: str | None = Field(description="SHA-256 of the stored source")
    source: str | None = Field(description="the student's file as text (undecodable bytes replaced)")
    created_at: datetime
    result: SubmissionReport | None = Field(description="the final record: the current generation's report")
    history: list[HistoryEntry]
    callback: CallbackState | None = None
