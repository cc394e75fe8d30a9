"""The HTTP routes: thin wrappers that check input, call the store and the job queue, and shape JSON."""

from __future__ import annotations

import csv
import io
from pathlib import PurePath
from typing import Annotated, Any

import httpx
from anyio import to_thread
from fastapi import APIRouter, Depends, File, Form, Path, Query, Request, UploadFile
from fastapi.responses import JSONResponse, RedirectResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import grader
from grader.engine.report import SubmissionReport
from grader.intake import IntakeError, read_inputs
from grader.service.auth import COOKIE_NAME, require_token, token_is_valid
from grader.service.context import ServiceContext
from grader.service.jobs import GradeWork
from grader.service.problems import Problem, ProblemError
from grader.service.schemas import (
    Accepted,
    BatchDetail,
    BatchList,
    BatchStudent,
    BatchSummary,
    CallbackState,
    GradeResult,
    Health,
    HistoryEntry,
    ProblemScore,
    Progress,
    SubmissionDetail,
)
from grader.service.uploads import check_source, safe_filename, save_upload
from grader.store import repository
from grader.store.models import Batch, Submission

# Ids are 32-bit on every backend (PostgreSQL INTEGER); anything outside is refused as invalid input.
BatchId = Annotated[int, Path(ge=1, le=2**31 - 1, description="a batch id")]
SubmissionId = Annotated[int, Path(ge=1, le=2**31 - 1, description="a submission id")]

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "content": {"application/problem+json": {}}}
    for code in (401, 404, 409, 413, 415, 422, 503)
}


def service(request: Request) -> ServiceContext:
    context: ServiceContext = request.app.state.service
    return context


Service = Annotated[ServiceContext, Depends(service)]

public = APIRouter()
api = APIRouter(prefix="/api/v1", dependencies=[Depends(require_token)], responses=ERRORS)


# --- health, metrics, login ------------------------------------------------------------------------


@public.get("/healthz", response_model=Health, tags=["service"])
def healthz(ctx: Service) -> Health:
    """Ready to grade: which sandbox layers hold, and which grader and rubric answer."""
    rubric = ctx.grader.assignment.rubric
    return Health(
        version=grader.__version__,
        assignment=rubric.assignment,
        rubric_version=rubric.version,
        layers=ctx.grader.layers,
        queue_depth=ctx.queue.depth(),
    )


@public.get(
    "/metrics",
    tags=["service"],
    dependencies=[Depends(require_token)],
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, 401: ERRORS[401]},
)
def metrics(ctx: Service) -> Response:
    """Prometheus metrics: requests, grading durations, queue depth, sandbox limits hit."""
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _local_path(target: str) -> str:
    # Only paths on this site: "//host" and "/\host" would send the browser elsewhere.
    if not target.startswith("/") or target.startswith("//") or target.startswith("/\\"):
        return "/"
    return target


@public.post(
    "/login",
    tags=["auth"],
    status_code=303,
    response_class=RedirectResponse,
    responses={303: {"description": "token accepted; cookie set"}, 401: ERRORS[401], 422: ERRORS[422]},
)
def login(
    request: Request,
    token: Annotated[str, Form(max_length=4096, description="an API token")],
    next_url: Annotated[str, Form(alias="next", max_length=2048, description="where to go afterwards")] = "/",
) -> RedirectResponse:
    """Exchange a valid token for the `grader_token` cookie (HttpOnly, SameSite=Strict) for the web page."""
    tokens: list[str] = request.app.state.tokens
    if tokens and not token_is_valid(token, tokens):
        raise ProblemError(401, "The API token is not valid.", kind="unauthorized")
    response = RedirectResponse(_local_path(next_url), status_code=303)
    if tokens:
        response.set_cookie(
            COOKIE_NAME, token, httponly=True, samesite="strict", secure=request.url.scheme == "https", path="/"
        )
    return response


@public.post("/logout", tags=["auth"], status_code=303, response_class=RedirectResponse)
def logout() -> RedirectResponse:
    """Forget the `grader_token` cookie."""
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict")
    return response


# --- grading one file ------------------------------------------------------------------------------


def _callback_url(value: str | None, ctx: ServiceContext) -> str | None:
    if value is None or not value.strip():
        return None
    try:
        url = httpx.URL(value.strip())
    except httpx.InvalidURL as error:
        raise ProblemError(422, f"callback_url is not a valid URL: {error}.", kind="invalid-callback") from error
    if url.scheme not in ("http", "https") or not url.host:
        raise ProblemError(422, "callback_url must be an absolute http:// or https:// URL.", kind="invalid-callback")
    if not ctx.settings.callback_secret:
        raise ProblemError(
            422,
            "Callbacks are off on this service: set GRADER_CALLBACK_SECRET so results can be signed.",
            kind="callbacks-disabled",
        )
    return str(url)


@api.post(
    "/grade",
    tags=["grading"],
    response_model=GradeResult,
    responses={202: {"model": Accepted, "description": "accepted; the result will be POSTed to callback_url"}},
)
async def grade(
    request: Request,
    ctx: Service,
    file: Annotated[UploadFile, File(description="the student's .py file")],
    student: Annotated[str | None, Form(max_length=255, description="default: the file name without .py")] = None,
    callback_url: Annotated[str | None, Form(max_length=2048, description="grade later; POST the result here")] = None,
) -> Any:
    """Grade one file now and return its report; with `callback_url`, answer 202 and POST the report later."""
    filename = safe_filename(file.filename, ctx.grader.assignment.rubric.filename)
    content = await file.read()
    check_source(content, filename)
    target = _callback_url(callback_url, ctx)
    new = repository.NewSubmission(student=(student or "").strip() or PurePath(filename).stem, source=content,
                                   origin=filename)

    def store() -> int:
        with ctx.database.session() as session:
            return repository.create_submission(session, new, callback_url=target).id

    submission_id = await to_thread.run_sync(store, limiter=ctx.limiter)
    if target is not None:
        ctx.queue.submit(GradeWork(submission_id))
        url = str(request.url_for("get_submission", submission_id=submission_id).path)
        accepted = Accepted(id=submission_id, status="queued", url=url, callback_url=target)
        return JSONResponse(accepted.model_dump(), status_code=202, headers={"Location": url})
    report = await to_thread.run_sync(_grade_now, ctx, submission_id, limiter=ctx.limiter)
    return GradeResult(**report.model_dump(), id=submission_id)


def _grade_now(ctx: ServiceContext, submission_id: int) -> SubmissionReport:
    work = GradeWork(submission_id)
    outcome = ctx.jobs.run(work)
    while outcome.retry:
        outcome = ctx.jobs.run(work)
    if outcome.report is not None and outcome.recorded:
        return outcome.report
    with ctx.database.session() as session:
        submission = repository.get_submission(session, submission_id)
        result = repository.current_result(submission) if submission is not None else None
        if result is not None:
            return SubmissionReport.model_validate(result.report)
    raise ProblemError(
        503, "Grading failed inside the grader and was logged; try again shortly.", kind="grading-failed"
    )


# --- batches ---------------------------------------------------------------------------------------


@api.post("/batches", tags=["batches"], status_code=202, response_model=BatchDetail)
async def create_batch(
    request: Request,
    ctx: Service,
    file: Annotated[UploadFile, File(description="a class archive (or a single .py file)")],
) -> JSONResponse:
    """Accept a class upload: every student is stored before the 202, then graded in the background."""
    filename = safe_filename(file.filename, "upload")
    batch_id, work = await to_thread.run_sync(_store_batch, ctx, file, filename, limiter=ctx.limiter)
    for item in work:
        ctx.queue.submit(item)
    detail = await to_thread.run_sync(_batch_detail, ctx, batch_id)
    location = str(request.url_for("get_batch", batch_id=batch_id).path)
    return JSONResponse(detail.model_dump(mode="json"), status_code=202, headers={"Location": location})


def _store_batch(ctx: ServiceContext, file: UploadFile, filename: str) -> tuple[int, list[GradeWork]]:
    file.file.seek(0)
    digest, path, size = save_upload(file.file, ctx.uploads_dir, filename)
    if size == 0:
        raise ProblemError(422, f"The uploaded file {filename!r} is empty.", kind="empty-upload")
    try:
        intake = read_inputs([path], filename=ctx.grader.assignment.rubric.filename)
    except IntakeError as error:
        # intake names the saved path; the client only knows the name it uploaded
        message = str(error).replace(str(path), filename).rstrip(".")
        raise ProblemError(422, f"The upload cannot be graded: {message}.", kind="unreadable-upload") from error
    if not intake.submissions:
        raise ProblemError(422, f"No submissions were found in {filename!r}.", kind="empty-batch")
    students = [
        repository.NewSubmission(
            student=s.key, source=s.source, name=s.name, late=s.late, origin=s.origin.replace(str(path), filename),
            intake_status=s.status, detail=s.detail,
        )
        for s in intake.submissions
    ]
    with ctx.database.session() as session:
        batch = repository.create_batch(
            session, filename=filename, layout=intake.layout, upload_sha256=digest, upload_path=str(path),
            warnings=list(intake.warnings), students=students,
        )
        return batch.id, [GradeWork(s.id, batch.id) for s in batch.submissions if s.state == repository.QUEUED]


@api.get("/batches", tags=["batches"], response_model=BatchList)
def list_batches(
    ctx: Service,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> BatchList:
    """Past batches, newest first."""
    with ctx.database.session() as session:
        batches = repository.list_batches(session, limit=limit, offset=offset)
        states = repository.progress(session, [b.id for b in batches])
        return BatchList(batches=[_summary(b, states[b.id]) for b in batches])


def _summary(batch: Batch, state: repository.Progress) -> BatchSummary:
    return BatchSummary(
        id=batch.id,
        created_at=batch.created_at,
        filename=batch.filename,
        layout=batch.layout,
        status=state.status,  # type: ignore[arg-type]
        progress=Progress(done=state.done, total=state.total),
    )




@api.get("/batches/{batch_id}", tags=["batches"], response_model=BatchDetail)
def get_batch(ctx: Service, batch_id: BatchId) -> BatchDetail:
    """A batch's status, progress, and one row per student."""
    return _batch_detail(ctx, batch_id)


def _batch_detail(ctx: ServiceContext, batch_id: int) -> BatchDetail:
    with ctx.database.session() as session:
        batch = repository.get_batch(session, batch_id)
        if batch is None:
            raise ProblemError(404, f"There is no batch {batch_id}.", kind="not-found")
        state = repository.progress(session, [batch.id])[batch.id]
        summary = _summary(batch, state)
        return BatchDetail(
            **summary.model_dump(),
            warnings=list(batch.warnings or []),
            error=batch.error,
            submissions=[_student_row(ctx, s) for s in batch.submissions],
        )


def _status(submission: Submission) -> str:
    if submission.state == repository.SKIPPED:
        return submission.intake_status if submission.intake_status != "ok" else repository.SKIPPED
    return submission.state


def _student_row(ctx: ServiceContext, submission: Submission) -> BatchStudent:
    result = repository.current_result(submission)
    report: dict[str, Any] = result.report if result is not None else {}
    return BatchStudent(
        submission_id=submission.id,
        student=submission.student,
        name=submission.name,
        late=submission.late,
        status=_status(submission),
        detail=submission.error or submission.detail,
        score=result.score if result is not None else None,
        max_score=result.max_score if result is not None else ctx.grader.assignment.rubric.max_score,
        problems=[
            ProblemScore(number=p["number"], title=p["title"], score=p["score"], max_score=p["max_score"])
            for p in report.get("problems", [])
        ],
        limits_hit=list(report.get("limits_hit", [])),
        errors=list(report.get("errors", [])),
        policy_violation=bool(report.get("policy_violation", False)),
    )


def _csv_cell(value: object) -> str:
    text = "" if value is None else str(value)
    # spreadsheet programs run cells that start with these as formulas
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@api.get(
    "/batches/{batch_id}/grades.csv",
    tags=["batches"],
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}, "description": "one row per student"}},
)
def batch_csv(ctx: Service, batch_id: BatchId) -> Response:
    """The gradebook: one row per student with the total and each problem's score."""
    detail = _batch_detail(ctx, batch_id)
    problems = [(p.number, p.title) for p in ctx.grader.assignment.rubric.problems]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["student", "name", "score", "max_score", *[f"P{n} {t}" for n, t in problems], "status", "late",
                     "errors"])
    for row in detail.submissions:
        scores = {p.number: p.score for p in row.problems}
        writer.writerow([_csv_cell(v) for v in (
            row.student, row.name, row.score, row.max_score, *[scores.get(n) for n, _ in problems], row.status,
            "yes" if row.late else "", "; ".join(row.errors) or row.detail,
        )])
    name = f"batch-{batch_id}-grades.csv"
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


@api.post("/batches/{batch_id}/regrade", tags=["batches"], status_code=202, response_model=BatchDetail)
def regrade_batch(request: Request, ctx: Service, batch_id: BatchId) -> JSONResponse:
    """Grade every student of the batch again with the rubric now loaded (after a rubric fix)."""
    with ctx.database.session() as session:
        batch = repository.get_batch(session, batch_id)
        if batch is None:
            raise ProblemError(404, f"There is no batch {batch_id}.", kind="not-found")
        ids = repository.request_regrade(session, list(batch.submissions))
    for submission_id in ids:
        ctx.queue.submit(GradeWork(submission_id, batch_id))
    detail = _batch_detail(ctx, batch_id)
    location = str(request.url_for("get_batch", batch_id=batch_id).path)
    return JSONResponse(detail.model_dump(mode="json"), status_code=202, headers={"Location": location})


# --- submissions -----------------------------------------------------------------------------------


@api.get("/submissions/{submission_id}", tags=["submissions"], response_model=SubmissionDetail)
def get_submission(ctx: Service, submission_id: SubmissionId) -> SubmissionDetail:
    """One stored submission: its source, the final result, earlier results, and callback delivery."""
    return _submission_detail(ctx, submission_id)


def _submission_detail(ctx: ServiceContext, submission_id: int) -> SubmissionDetail:
    with ctx.database.session() as session:
        submission = repository.get_submission(session, submission_id)
        if submission is None:
            raise ProblemError(404, f"There is no submission {submission_id}.", kind="not-found")
        source = repository.get_source(session, submission)
        result = repository.current_result(submission)
        delivery = repository.delivery_for(session, submission)
        return SubmissionDetail(
            id=submission.id,
            batch_id=submission.batch_id,
            student=submission.student,
            name=submission.name,
            late=submission.late,
            status=_status(submission),
            detail=submission.error or submission.detail,
            sha256=submission.source_sha256,
            source=source.decode("utf-8", errors="replace") if source is not None else None,
            created_at=submission.created_at,
            result=SubmissionReport.model_validate(result.report) if result is not None else None,
            history=[
                HistoryEntry(
                    generation=r.generation, created_at=r.created_at, score=r.score, max_score=r.max_score,
                    rubric_version=r.rubric_version, grader_version=r.grader_version, seed=r.seed,
                )
                for r in submission.results
            ],
            callback=CallbackState(
                url=delivery.url, state=delivery.state, attempts=delivery.attempts,  # type: ignore[arg-type]
                last_status=delivery.last_status, last_error=delivery.last_error, delivered_at=delivery.delivered_at,
            ) if delivery is not None else None,
        )


@api.post("/submissions/{submission_id}/regrade", tags=["submissions"], status_code=202,
          response_model=SubmissionDetail)
def regrade_submission(request: Request, ctx: Service, submission_id: SubmissionId) -> JSONResponse:
    """Grade one stored submission again with the rubric now loaded; the new result becomes the final one."""
    with ctx.database.session() as session:
        submission = repository.get_submission(session, submission_id)
        if submission is None:
            raise ProblemError(404, f"There is no submission {submission_id}.", kind="not-found")
        if submission.source_sha256 is None:
            raise ProblemError(409, f"Submission {submission_id} has no file to grade.", kind="nothing-to-grade")
        batch_id = submission.batch_id
        repository.request_regrade(session, [submission])
    ctx.queue.submit(GradeWork(submission_id, batch_id))
    detail = _submission_detail(ctx, submission_id)
    location = str(request.url_for("get_submission", submission_id=submission_id).path)
    return JSONResponse(detail.model_dump(mode="json"), status_code=202, headers={"Location": location})
