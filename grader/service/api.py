"""The HTTP routes: thin wrappers that check input, call the store and the job queue, and shape JSON."""

from __future__ import annotations

import io
from pathlib import Path as FilePath
from pathlib import PurePath
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import httpx
import orjson
from anyio import to_thread
from fastapi import APIRouter, Depends, File, Form, Path, Query, Request, UploadFile
from fastapi.responses import JSONResponse, RedirectResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.orm import Session

import grader
from grader.engine.report import SubmissionReport
from grader.export.feedback import feedback_zip
from grader.export.gradebook import blackboard_csv, canvas_csv, class_csv, other_lms_warning
from grader.export.similarity import DEFAULT_THRESHOLD, default_starter, find_similar
from grader.intake import Intake, IntakeError, StudentResult, read_inputs
from grader.intake import Submission as IntakeSubmission
from grader.intake.archive import is_zip
from grader.intake.results import result_for
from grader.intake.tree import is_zip_name
from grader.service.auth import COOKIE_NAME, require_token, session_value, token_is_valid
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
from grader.service.uploads import check_source, safe_filename, staged_upload
from grader.store import repository
from grader.store.models import Batch, Submission

# Ids are 32-bit on every backend (PostgreSQL INTEGER); anything outside is refused as invalid input.
BatchId = Annotated[int, Path(ge=1, le=2**31 - 1, description="a batch id")]
SubmissionId = Annotated[int, Path(ge=1, le=2**31 - 1, description="a submission id")]

Layout = Literal["auto", "files", "student", "students", "blackboard", "canvas"]

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "content": {"application/problem+json": {}}}
    for code in (400, 401, 404, 409, 413, 415, 422, 503)
}


async def service(request: Request) -> ServiceContext:
    # async: a plain `def` dependency would cost every request a hop to a worker thread
    context: ServiceContext = request.app.state.service
    return context


Service = Annotated[ServiceContext, Depends(service)]

public = APIRouter()
API_PREFIX = "/api/v1"
GRADE_PATH = f"{API_PREFIX}/grade"
STUDENT_MAX_LENGTH = 255
api = APIRouter(prefix=API_PREFIX, dependencies=[Depends(require_token)], responses=ERRORS)


# --- health, metrics, login ------------------------------------------------------------------------


@public.get("/healthz", response_model=Health, tags=["service"], responses={503: ERRORS[503]})
def healthz(ctx: Service) -> Health:
    """Ready to grade: which sandbox layers hold, and which grader and rubric answer. 503 while the
    database cannot be reached (nothing could be stored or read)."""
    ctx.database.ping()  # an outage raises, and is answered as one (problems.py)
    rubric = ctx.grader.assignment.rubric
    return Health(
        version=grader.__version__,
        assignment=rubric.assignment,
        rubric_version=rubric.version,
        layers=ctx.grader.layers,
        queue_depth=ctx.queue.depth(),
    )


@public.head("/healthz", response_model=Health, include_in_schema=False)
def healthz_head(ctx: Service) -> Health:
    """GET's answer without its body (the server drops it), for load balancers that check with HEAD."""
    return healthz(ctx)


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


def local_path(target: str) -> str:
    # Only paths on this site: "//host" and "/\host" would send the browser elsewhere.
    if not target.startswith("/") or target.startswith("//") or target.startswith("/\\"):
        return "/"
    return target


@public.post(
    "/login",
    tags=["auth"],
    status_code=303,
    response_class=RedirectResponse,
    responses={303: {"description": "token accepted; cookie set"},
               **{code: ERRORS[code] for code in (400, 401, 413, 422)}},
)
def login(
    request: Request,
    token: Annotated[str, Form(min_length=1, max_length=4096, description="an API token")],
    next_url: Annotated[str, Form(alias="next", max_length=2048, description="where to go afterwards")] = "/",
) -> RedirectResponse:
    """Exchange a valid token for the `grader_token` cookie (HttpOnly, SameSite=Strict) for the web page."""
    tokens: list[str] = request.app.state.tokens
    if tokens and not token_is_valid(token, tokens):
        if "text/html" in request.headers.get("accept", ""):
            again = urlencode({"error": "invalid", "next": local_path(next_url)})
            return RedirectResponse(f"/login?{again}", status_code=303)  # the page's form, shown again
        raise ProblemError(401, "The API token is not valid.", kind="unauthorized")
    response = RedirectResponse(local_path(next_url), status_code=303)
    if tokens:
        response.set_cookie(
            COOKIE_NAME, session_value(token), httponly=True, samesite="strict", secure=request.url.scheme == "https",
            path="/",
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
    student: Annotated[
        str | None, Form(max_length=STUDENT_MAX_LENGTH, description="default: the file name without .py")
    ] = None,
    callback_url: Annotated[str | None, Form(max_length=2048, description="grade later; POST the result here")] = None,
) -> Any:
    """Grade one file now and return its report; with `callback_url`, answer 202 and POST the report later.

    The plain synchronous case usually does not get here: `GradeShortcut` (shortcut.py) answers it
    with the functions below."""
    await one_file_only(request, "one student's .py or zip; a class goes to /api/v1/batches")
    target = _callback_url(callback_url, ctx)  # before a zip is opened (and kept)
    filename = safe_filename(file.filename, ctx.grader.assignment.rubric.filename)
    content = await file.read()
    origin = filename
    if is_zip(content[:4]):  # the file found in it is checked there, before the zip is kept
        content, origin = await to_thread.run_sync(_one_student_zip, ctx, content, filename, limiter=ctx.limiter)
    elif is_zip_name(filename):  # as the command line and a batch refuse it, instead of grading it as Python
        raise ProblemError(
            422, f"The upload cannot be graded: {filename} is not a readable zip archive (it may be truncated or "
            "corrupt).", kind="unreadable-upload",
        )
    else:
        check_source(content, filename)
    new = new_single(student, filename, content, origin=origin)

    if target is not None:

        def store() -> int:
            with ctx.database.session() as session:
                return repository.create_submission(session, new, callback_url=target).id

        submission_id = await to_thread.run_sync(store, limiter=ctx.limiter)
        ctx.queue.submit(GradeWork(submission_id))
        url = str(request.url_for("get_submission", submission_id=submission_id).path)
        accepted = Accepted(id=submission_id, status="queued", url=url, callback_url=target)
        return JSONResponse(accepted.model_dump(), status_code=202, headers={"Location": url})
    submission_id, report = await to_thread.run_sync(grade_single, ctx, new, limiter=ctx.limiter)
    return grade_response(submission_id, report)


def new_single(student: str | None, filename: str, content: bytes, *, origin: str) -> repository.NewSubmission:
    """A single file to store, under the student named in the form or else its file name without .py."""
    return repository.NewSubmission(student=(student or "").strip() or PurePath(filename).stem, source=content,
                                    origin=origin)


def grade_response(submission_id: int, report: dict[str, Any]) -> Response:
    # built by hand: the report is already validated (and dumped once, to be stored), and this is the hot path
    return Response(orjson.dumps({**report, "id": submission_id}), media_type="application/json")


async def one_file_only(request: Request, what: str) -> None:
    """422 for a form with more than one `file` part (the route's parameter would see the last alone)."""
    files = len((await request.form()).getlist("file"))  # the form FastAPI parsed already
    if files > 1:
        raise ProblemError(422, f"Send one file per request in `file` ({what}); this request has {files}.",
                           kind="several-files")


def _one_student_zip(ctx: ServiceContext, content: bytes, filename: str) -> tuple[bytes, str]:
    """The file to grade inside one student's zip, found the way a class batch finds it. The zip is
    kept among the uploads only when it holds something to grade."""
    with staged_upload(io.BytesIO(content), ctx.uploads_dir, filename) as upload:
        intake = _read_upload(ctx, upload.path, filename)
        if len(intake.submissions) != 1:
            raise ProblemError(
                422,
                f"{filename!r} holds {len(intake.submissions)} students' work; upload it to /api/v1/batches "
                "instead.",
                kind="several-students",
            )
        (found,) = intake.submissions
        if found.source is None or found.status != "ok":
            reason = found.detail or found.status.replace("_", " ")
            raise ProblemError(422, f"Nothing to grade in {filename!r}: {reason}.", kind="nothing-to-grade")
        check_source(found.source, filename)
        origin = _client_path(found.origin, upload.path, filename)
        upload.keep()
    return found.source, origin


def _read_upload(ctx: ServiceContext, path: FilePath, filename: str, layout: str | None = None) -> Intake:
    try:
        return read_inputs([path], filename=ctx.grader.assignment.rubric.filename, layout=layout)
    except IntakeError as error:
        # intake names the saved path; the client only knows the name it uploaded
        message = _client_path(str(error), path, filename).rstrip(".")
        raise ProblemError(422, f"The upload cannot be graded: {message}.", kind="unreadable-upload") from error


def _client_path(text: str, path: FilePath, filename: str) -> str:
    return text.replace(str(path), filename)


def grade_single(ctx: ServiceContext, new: repository.NewSubmission) -> tuple[int, dict[str, Any]]:
    """Store, grade and record one file on this thread; a failed run is retried like a queued one.
    Returns the id and the report as JSON-ready data."""
    outcome = ctx.jobs.grade_new(new)
    submission_id = outcome.work.submission_id
    while outcome.retry:
        outcome = ctx.jobs.run(outcome.work)
    if outcome.report_json is not None and outcome.recorded:
        return submission_id, outcome.report_json
    with ctx.database.session() as session:
        submission = repository.get_submission(session, submission_id)
        result = repository.current_result(submission) if submission is not None else None
        if result is not None:
            return submission_id, SubmissionReport.model_validate(result.report).model_dump(mode="json")
    raise ProblemError(
        503, "Grading failed inside the grader and was logged; try again shortly.", kind="grading-failed"
    )


# --- batches ---------------------------------------------------------------------------------------


@api.post("/batches", tags=["batches"], status_code=202, response_model=BatchDetail)
async def create_batch(
    request: Request,
    ctx: Service,
    file: Annotated[UploadFile, File(description="a class archive (or a single .py file)")],
    layout: Annotated[Layout, Form(description="how the archive is laid out; detected unless given")] = "auto",
) -> JSONResponse:
    """Accept a class upload: every student is stored before the 202, then graded in the background."""
    await one_file_only(request, "the class's zip, or one .py")
    filename = safe_filename(file.filename, "upload")
    forced = None if layout == "auto" else layout
    batch_id, work = await to_thread.run_sync(_store_batch, ctx, file, filename, forced, limiter=ctx.limiter)
    for item in work:
        ctx.queue.submit(item)
    detail = await to_thread.run_sync(_batch_detail, ctx, batch_id)
    location = str(request.url_for("get_batch", batch_id=batch_id).path)
    return JSONResponse(detail.model_dump(mode="json"), status_code=202, headers={"Location": location})


def _store_batch(
    ctx: ServiceContext, file: UploadFile, filename: str, layout: str | None
) -> tuple[int, list[GradeWork]]:
    file.file.seek(0)
    with staged_upload(file.file, ctx.uploads_dir, filename) as upload:
        if upload.size == 0:
            raise ProblemError(422, f"The uploaded file {filename!r} is empty.", kind="empty-upload")
        intake = _read_upload(ctx, upload.path, filename, layout)
        if not intake.submissions:
            raise ProblemError(422, f"No submissions were found in {filename!r}.", kind="empty-batch")
        students = [
            repository.NewSubmission(
                student=s.key, source=s.source, name=s.name, late=s.late,
                origin=_client_path(s.origin, upload.path, filename), intake_status=s.status, detail=s.detail,
                attempt=s.attempt, warnings=list(s.warnings),
            )
            for s in intake.submissions
        ]
        warnings = [_client_path(w, upload.path, filename) for w in intake.warnings]
        path = upload.keep()
    with ctx.database.session() as session:
        batch = repository.create_batch(
            session, filename=filename, layout=intake.layout, upload_sha256=upload.digest, upload_path=str(path),
            warnings=warnings, students=students, assignment_name=intake.assignment,
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


def _batch_or_404(session: Session, batch_id: int) -> Batch:
    """The batch with its submissions and their results loaded (`repository.get_batch`), or a 404 problem."""
    batch = repository.get_batch(session, batch_id)
    if batch is None:
        raise ProblemError(404, f"There is no batch {batch_id}.", kind="not-found")
    return batch


def _submission_or_404(session: Session, submission_id: int) -> Submission:
    """The submission (`repository.get_submission`), or a 404 problem."""
    submission = repository.get_submission(session, submission_id)
    if submission is None:
        raise ProblemError(404, f"There is no submission {submission_id}.", kind="not-found")
    return submission


@api.get("/batches/{batch_id}", tags=["batches"], response_model=BatchDetail)
def get_batch(ctx: Service, batch_id: BatchId) -> BatchDetail:
    """A batch's status, progress, and one row per student."""
    return _batch_detail(ctx, batch_id)


def _batch_detail(ctx: ServiceContext, batch_id: int) -> BatchDetail:
    with ctx.database.session() as session:
        batch = _batch_or_404(session, batch_id)
        # counted from the rows loaded above, so the status never runs ahead of the scores shown
        state = repository.loaded_progress(batch)
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
        attempt=submission.attempt,
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
        warnings=[*submission.warnings, *report.get("warnings", [])],
        policy_violation=bool(report.get("policy_violation", False)),
    )


def stored_results(batch: Batch, max_score: float) -> list[StudentResult]:
    """The batch as the exporters see it: one StudentResult per student, from the final records."""
    results = []
    for row in batch.submissions:
        result = repository.current_result(row)
        report = SubmissionReport.model_validate(result.report) if result is not None else None
        found = IntakeSubmission(key=row.student, source=None, name=row.name, status=row.intake_status,
                                 detail=row.error or row.detail, late=row.late, origin=row.origin,
                                 attempt=row.attempt, warnings=list(row.warnings or []))
        student = result_for(found, report, max_score)
        if report is None and row.state != repository.SKIPPED:
            student.status = _status(row)  # not graded yet (or grading failed), not "nothing to grade"
        results.append(student)
    return results


def _export(ctx: ServiceContext, batch_id: int) -> tuple[Batch, list[StudentResult]]:
    with ctx.database.session() as session:
        batch = _batch_or_404(session, batch_id)
        return batch, stored_results(batch, ctx.grader.assignment.rubric.max_score)


WARNING_HEADER = "Grader-Warning"


def _download(content: str | bytes, filename: str, media_type: str, warning: str | None = None) -> Response:
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    if warning is not None:  # a file that is well formed but likely not what the caller wants
        headers[WARNING_HEADER] = warning
    return Response(content, media_type=media_type, headers=headers)


CSV = "text/csv; charset=utf-8"
MissingAsZero = Annotated[bool, Query(description="give students with nothing to grade 0 instead of a blank")]
ColumnId = Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_-]*$")]


@api.get(
    "/batches/{batch_id}/grades.csv",
    tags=["exports"],
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}, "description": "one row per student"}},
)
def batch_csv(ctx: Service, batch_id: BatchId) -> Response:
    """The class gradebook: student, name, total, each problem's score, status, late, a one-line summary."""
    _, results = _export(ctx, batch_id)
    return _download(class_csv(results, ctx.grader.assignment.rubric), f"batch-{batch_id}-grades.csv", CSV)


@api.get(
    "/batches/{batch_id}/grades-blackboard.csv",
    tags=["exports"],
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}, "description": "Blackboard Grade Center upload"}},
)
def batch_blackboard(ctx: Service, batch_id: BatchId, column_id: ColumnId = None,
                     missing_as_zero: MissingAsZero = False) -> Response:
    """Blackboard Grade Center upload; with `column_id` (the number after `|`) grades land in that column."""
    batch, results = _export(ctx, batch_id)
    rubric = ctx.grader.assignment.rubric
    text = blackboard_csv(results, assignment=batch.assignment_name or rubric.title, max_score=rubric.max_score,
                          column_id=column_id or None, missing_as_zero=missing_as_zero)
    return _download(text, f"batch-{batch_id}-blackboard.csv", CSV, other_lms_warning(batch.layout, "blackboard"))


@api.get(
    "/batches/{batch_id}/grades-canvas.csv",
    tags=["exports"],
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}, "description": "Canvas gradebook import"}},
)
def batch_canvas(ctx: Service, batch_id: BatchId, assignment_id: ColumnId = None,
                 missing_as_zero: MissingAsZero = False) -> Response:
    """Canvas gradebook import; with `assignment_id` Canvas updates that assignment's column."""
    batch, results = _export(ctx, batch_id)
    rubric = ctx.grader.assignment.rubric
    text = canvas_csv(results, assignment=batch.assignment_name or rubric.title, max_score=rubric.max_score,
                      assignment_id=assignment_id or None, missing_as_zero=missing_as_zero)
    return _download(text, f"batch-{batch_id}-canvas.csv", CSV, other_lms_warning(batch.layout, "canvas"))


@api.get(
    "/batches/{batch_id}/feedback.zip",
    tags=["exports"],
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}, "description": "one Markdown file per student"}},
)
def batch_feedback(ctx: Service, batch_id: BatchId) -> Response:
    """Feedback to hand back: a zip with one Markdown file per student."""
    batch, results = _export(ctx, batch_id)
    title = f"{batch.assignment_name or ctx.grader.assignment.rubric.title}: feedback"
    return _download(feedback_zip(results, title=title), f"batch-{batch_id}-feedback.zip", "application/zip")


@api.get("/batches/{batch_id}/similarity", tags=["exports"], response_model=dict[str, Any])
def batch_similarity(
    ctx: Service,
    batch_id: BatchId,
    threshold: Annotated[float, Query(gt=0, le=1)] = DEFAULT_THRESHOLD,
) -> dict[str, Any]:
    """Pairs of students whose code (starter code excluded) is alike, most alike first, with line ranges."""
    with ctx.database.session() as session:
        batch = _batch_or_404(session, batch_id)
        sources = {}
        for row in batch.submissions:
            source = repository.get_source(session, row)
            if source is not None:
                sources[row.student] = source
    starter = default_starter()
    report = find_similar(sources, starter=starter.read_bytes() if starter else None, threshold=threshold,
                          starter_name=starter.name if starter else None)
    return report.as_json()


@api.post("/batches/{batch_id}/regrade", tags=["batches"], status_code=202, response_model=BatchDetail)
def regrade_batch(request: Request, ctx: Service, batch_id: BatchId) -> JSONResponse:
    """Grade every student of the batch again with the rubric now loaded (after a rubric fix)."""
    with ctx.database.session() as session:
        batch = _batch_or_404(session, batch_id)
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
        submission = _submission_or_404(session, submission_id)
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
        submission = _submission_or_404(session, submission_id)
        if submission.source_sha256 is None:
            raise ProblemError(409, f"Submission {submission_id} has no file to grade.", kind="nothing-to-grade")
        batch_id = submission.batch_id
        repository.request_regrade(session, [submission])
    ctx.queue.submit(GradeWork(submission_id, batch_id))
    detail = _submission_detail(ctx, submission_id)
    location = str(request.url_for("get_submission", submission_id=submission_id).path)
    return JSONResponse(detail.model_dump(mode="json"), status_code=202, headers={"Location": location})
