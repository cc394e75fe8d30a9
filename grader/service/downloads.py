"""A batch's files for the TA: LMS gradebook imports, students' feedback, the similarity report.

These reuse the command line's exporters on the stored results, so a download from the page and a
file written by `grader grade --export/--feedback` are the same.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query
from fastapi.responses import JSONResponse, Response

from grader.engine.report import SubmissionReport
from grader.export.feedback import feedback_zip
from grader.export.gradebook import blackboard_csv, canvas_csv
from grader.export.similarity import default_starter, find_similar
from grader.intake.results import GRADED, StudentResult
from grader.service.api import BatchId, Service, api
from grader.service.context import ServiceContext
from grader.service.problems import ProblemError
from grader.store import repository
from grader.store.models import Submission


def student_results(ctx: ServiceContext, batch_id: int) -> tuple[str, list[StudentResult], dict[str, bytes]]:
    """The batch's file name, a StudentResult per student, and the sources that were graded."""
    max_score = ctx.grader.assignment.rubric.max_score
    with ctx.database.session() as session:
        batch = repository.get_batch(session, batch_id)
        if batch is None:
            raise ProblemError(404, f"There is no batch {batch_id}.", kind="not-found")
        results = []
        sources = {}
        for submission in batch.submissions:
            results.append(_student_result(submission, max_score))
            source = repository.get_source(session, submission)
            if source is not None:
                sources[submission.student] = source
        return batch.filename, results, sources


def _student_result(submission: Submission, max_score: float) -> StudentResult:
    result = repository.current_result(submission)
    report = SubmissionReport.model_validate(result.report) if result is not None else None
    status = GRADED if report is not None else (
        submission.intake_status if submission.intake_status != "ok" else submission.state
    )
    return StudentResult(
        key=submission.student,
        name=submission.name,
        status=status,
        detail=submission.error or submission.detail,
        late=submission.late,
        report=report,
        max_score=max_score,
        origin=submission.origin,
    )


def _attachment(content: str | bytes, filename: str, media_type: str) -> Response:
    disposition = f'attachment; filename="{filename}"'
    return Response(content, media_type=media_type, headers={"Content-Disposition": disposition})


CSV_RESPONSE: dict[int | str, dict[str, Any]] = {200: {"content": {"text/csv": {}}, "description": "a CSV file"}}


@api.get("/batches/{batch_id}/export/blackboard.csv", tags=["batches"], response_class=Response,
         responses=CSV_RESPONSE)
def blackboard_export(
    ctx: Service,
    batch_id: BatchId,
    column_id: Annotated[str | None, Query(max_length=32, pattern=r"^[0-9A-Za-z_]*$")] = None,
    assignment: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """Blackboard Grade Center upload keyed by Username; with `column_id` grades land in that column."""
    _, results, _ = student_results(ctx, batch_id)
    rubric = ctx.grader.assignment.rubric
    text = blackboard_csv(results, assignment=assignment or rubric.title, max_score=rubric.max_score,
                          column_id=column_id or None)
    return _attachment(text, f"batch-{batch_id}-blackboard.csv", "text/csv; charset=utf-8")


@api.get("/batches/{batch_id}/export/canvas.csv", tags=["batches"], response_class=Response, responses=CSV_RESPONSE)
def canvas_export(
    ctx: Service,
    batch_id: BatchId,
    assignment_id: Annotated[str | None, Query(max_length=32, pattern=r"^[0-9]*$")] = None,
    assignment: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """Canvas gradebook import; with `assignment_id` Canvas updates that assignment's column."""
    _, results, _ = student_results(ctx, batch_id)
    rubric = ctx.grader.assignment.rubric
    text = canvas_csv(results, assignment=assignment or rubric.title, max_score=rubric.max_score,
                      assignment_id=assignment_id or None)
    return _attachment(text, f"batch-{batch_id}-canvas.csv", "text/csv; charset=utf-8")


@api.get("/batches/{batch_id}/feedback.zip", tags=["batches"], response_class=Response,
         responses={200: {"content": {"application/zip": {}}, "description": "one Markdown file per student"}})
def feedback_download(ctx: Service, batch_id: BatchId) -> Response:
    """One Markdown feedback file per student, to hand back."""
    _, results, _ = student_results(ctx, batch_id)
    content = feedback_zip(results, title=ctx.grader.assignment.rubric.title)
    return _attachment(content, f"batch-{batch_id}-feedback.zip", "application/zip")


def similarity_report(ctx: ServiceContext, batch_id: int) -> tuple[str, dict[str, Any]]:
    filename, _, sources = student_results(ctx, batch_id)
    starter_path = default_starter()
    starter = starter_path.read_bytes() if starter_path is not None else None
    report = find_similar(sources, starter=starter, starter_name=starter_path.name if starter_path else None)
    return filename, report.as_json()


@api.get("/batches/{batch_id}/similarity", tags=["batches"])
def similarity(ctx: Service, batch_id: BatchId) -> JSONResponse:
    """Pairs of students whose code is suspiciously alike (names, comments, layout and starter code ignored)."""
    return JSONResponse(similarity_report(ctx, batch_id)[1])
