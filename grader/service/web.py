"""The TA's web page: server-rendered with Jinja2, a little JavaScript, every asset served here.

Pages read the store directly and the browser's JavaScript talks to the JSON API for uploads and
live progress. With tokens configured, every page first asks for one (kept in an HttpOnly cookie).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

import grader
from grader.engine.policy import decode_python_source
from grader.export.gradebook import other_lms_warning
from grader.service.api import batch_similarity, local_path
from grader.service.auth import credentials_valid
from grader.service.charts import problem_means, score_histogram
from grader.service.context import ServiceContext
from grader.store import repository
from grader.store.models import Batch, Submission

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.filters["points"] = lambda value: f"{float(value):g}"
router = APIRouter(include_in_schema=False)

LINE_REFERENCE = re.compile(r"\(line (\d+)\)")
STATE_TEXT = {
    "queued": "waiting",
    "running": "grading",
    "graded": "graded",
    "error": "grading failed",
    "skipped": "nothing to grade",
}


class LoginRequired(Exception):
    """Raised by a page when tokens are configured and the browser has not presented a valid one."""


class PageNotFound(Exception):
    """Raised by a page whose batch or submission does not exist; shown as the not-found page."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


def page_access(request: Request) -> None:
    tokens: list[str] = request.app.state.tokens
    if tokens and not credentials_valid(request, tokens):
        raise LoginRequired


def service(request: Request) -> ServiceContext:
    context: ServiceContext = request.app.state.service
    return context


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    grader_ = service(request).grader
    layers = grader_.layers
    tokens: list[str] = request.app.state.tokens
    context.update(
        version=grader.__version__,
        assignment_title=grader_.assignment.rubric.title,
        layers_summary=", ".join(name for name, on in layers.items() if on) or "none",
        signed_in=bool(tokens) and bool(credentials_valid(request, tokens)),
    )
    return templates.TemplateResponse(request, template, context, status_code=status_code)


def when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else ""


@dataclass
class StudentRow:
    student: str
    name: str | None
    score: float | None
    problem_scores: list[float | None]
    status: str
    status_text: str
    submission_id: int | None
    flags: list[str] = field(default_factory=list)


def student_row(submission: Submission, problem_numbers: list[int]) -> StudentRow:
    result = repository.current_result(submission)
    report: dict[str, Any] = result.report if result is not None else {}
    scores = {p["number"]: p["score"] for p in report.get("problems", [])}
    flags = [f"{limit} limit" for limit in report.get("limits_hit", [])]
    if report.get("policy_violation"):
        flags.append("policy")
    if report.get("errors") and not report.get("policy_violation"):
        flags.append("error")
    if submission.state == "error":
        flags.append("grading failed")
    if submission.late:
        flags.append("late")
    status_text = STATE_TEXT.get(submission.state, submission.state)
    if submission.state == "skipped":
        status_text = submission.detail or status_text
        if submission.intake_status != "ok":  # unreadable, not found, too large, no files
            flags.append(submission.intake_status.replace("_", " "))
    return StudentRow(
        student=submission.student,
        name=submission.name,
        score=result.score if result is not None else None,
        problem_scores=[scores.get(n) if result is not None else None for n in problem_numbers],
        status=submission.state,
        status_text=status_text,
        submission_id=submission.id if submission.source_sha256 else None,
        flags=flags,
    )


def results_context(request: Request, batch: Batch) -> dict[str, Any]:
    rubric = service(request).grader.assignment.rubric
    numbers = [p.number for p in rubric.problems]
    rows = [student_row(s, numbers) for s in batch.submissions]
    graded = [r for r in rows if r.score is not None]
    columns = [
        {"label": "Student", "numeric": False},
        {"label": "Name", "numeric": False},
        {"label": "Total", "numeric": True},
        *({"label": f"P{n}", "numeric": True} for n in numbers),
        {"label": "Status", "numeric": False},
    ]
    means = []
    for index, problem in enumerate(rubric.problems):
        values = [r.problem_scores[index] or 0.0 for r in graded]
        top = problem.max_score
        means.append((f"P{problem.number}", sum(values) / len(values) if values else 0.0, top))
    scores = [r.score for r in graded if r.score is not None]
    return {
        "rows": rows,
        "columns": columns,
        "graded_count": len(graded),
        # a late student, or one who sent nothing, stands out in the table but needs no look at their work
        "flagged_count": sum(1 for r in rows if set(r.flags) - {"late", "no files"}),
        "mean_score": sum(scores) / len(scores) if scores else 0.0,
        "max_score": rubric.max_score,
        "histogram_svg": score_histogram(scores, rubric.max_score) if scores else "",
        "means_svg": problem_means(means) if scores else "",
    }


def batch_summary(batch: Batch, progress: repository.Progress) -> dict[str, Any]:
    return {
        "id": batch.id,
        "filename": batch.filename,
        "layout": batch.layout,
        "created_at": batch.created_at.isoformat() if batch.created_at else "",
        "created_at_text": when(batch.created_at),
        "status": progress.status,
        "done": progress.done,
        "total": progress.total,
        "warnings": batch.warnings or [],
        "error": batch.error,
        "export_warnings": {lms: other_lms_warning(batch.layout, lms) for lms in ("blackboard", "canvas")},
    }


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, error: str | None = None, next_url: Annotated[str, Query(alias="next")] = "/"
               ) -> Response:
    """The sign-in form; it posts to the service's `POST /login`, which sets the cookie, then goes on
    to `next` (the page that asked for it)."""
    if not request.app.state.tokens:
        return RedirectResponse("/", status_code=303)
    message = "That token is not valid." if error else None
    return render(request, "login.html", status_code=401 if error else 200, error=message,
                  next_path=local_path(next_url))


@router.get("/", response_class=HTMLResponse)
def home(request: Request) -> Response:
    page_access(request)
    with service(request).database.session() as session:
        batches = repository.list_batches(session, limit=100, offset=0)
        progress = repository.progress(session, [b.id for b in batches])
        summaries = [batch_summary(b, progress[b.id]) for b in batches]
    return render(request, "home.html", batches=summaries)


def load_batch(
    request: Request, batch_id: int, *, with_results: bool = True
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A batch's summary and its results context, for a browser allowed to see them.

    With `with_results=False` the results context (rows, charts) is not built and comes back empty.
    """
    page_access(request)
    with service(request).database.session() as session:
        batch = repository.get_batch(session, batch_id)
        if batch is None:
            raise PageNotFound(f"batch {batch_id}")
        # counted from the rows loaded above, so the status never runs ahead of the scores shown
        progress = repository.loaded_progress(batch)
        return batch_summary(batch, progress), (results_context(request, batch) if with_results else {})


@router.get("/batches/{batch_id}", response_class=HTMLResponse)
def batch_page(request: Request, batch_id: int) -> Response:
    summary, results = load_batch(request, batch_id)
    return render(request, "batch.html", batch=summary, **results)


@router.get("/batches/{batch_id}/results", response_class=HTMLResponse)
def batch_results(request: Request, batch_id: int) -> Response:
    """The changing part of a batch page, fetched again by the page while the batch grades."""
    return render(request, "batch_results.html", **load_batch(request, batch_id)[1])


@router.get("/submissions/{submission_id}", response_class=HTMLResponse)
def submission_page(request: Request, submission_id: int) -> Response:
    page_access(request)
    with service(request).database.session() as session:
        submission = repository.get_submission(session, submission_id)
        if submission is None:
            raise PageNotFound(f"submission {submission_id}")
        result = repository.current_result(submission)
        source = repository.get_source(session, submission)
        sub = {
            "student": submission.student,
            "name": submission.name,
            "batch_id": submission.batch_id,
            "sha256": submission.source_sha256 or "",
            "state": submission.state,
            # what intake found: the attempt graded, the late mark, which file and why (several
            # attempts, another name, entries skipped), as the API's `warnings` of the batch row say
            "attempt": submission.attempt,
            "late": submission.late,
            "origin": submission.origin,
            "intake_notes": list(submission.warnings or []),
        }
    if result is None:
        return render(request, "pending.html", sub=sub)
    report = result.report
    try:
        lines = decode_python_source(source).splitlines() if source is not None else []
    except (UnicodeError, SyntaxError, LookupError):
        lines = []
    texts = report.get("errors", []) + [c["message"] for p in report["problems"] for c in p["checks"]]
    marked = {int(n) for text in texts for n in LINE_REFERENCE.findall(text)}
    return render(request, "submission.html", sub=sub, report=report, source_lines=lines, marked_lines=marked)


@router.get("/batches/{batch_id}/similarity", response_class=HTMLResponse)
def similarity_page(request: Request, batch_id: int) -> Response:
    summary, _ = load_batch(request, batch_id, with_results=False)
    report = batch_similarity(service(request), batch_id)
    pairs = [
        {
            "first": pair["a"],
            "second": pair["b"],
            "score": pair["similarity"],
            "regions": "; ".join(
                f"lines {r['a_lines'][0]}-{r['a_lines'][1]} ~ {r['b_lines'][0]}-{r['b_lines'][1]}"
                for r in pair["regions"]
            ),
        }
        for pair in report["pairs"]
    ]
    return render(request, "similarity.html", batch=summary, pairs=pairs, report=report)


def install_web(app: Any) -> None:
    """Mount the pages, their static assets and the login redirect on the service's app."""
    from fastapi.staticfiles import StaticFiles

    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.include_router(router)

    async def to_login(request: Request, exc: Exception) -> Response:
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?{urlencode({'next': here})}", status_code=303)

    app.add_exception_handler(LoginRequired, to_login)

    async def not_found(request: Request, exc: Exception) -> Response:
        what = exc.what if isinstance(exc, PageNotFound) else "such page"
        return render(request, "not_found.html", status_code=404, what=what)

    app.add_exception_handler(PageNotFound, not_found)
