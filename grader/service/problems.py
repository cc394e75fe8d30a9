"""RFC 9457 problem details: every error the service returns, whatever raised it, has this one shape."""

from __future__ import annotations

import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from grader.store.database import database_unavailable, one_line

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class Problem(BaseModel):
    """An error as RFC 9457 describes it; `errors` lists the fields at fault for a 422."""

    type: str = Field(default="about:blank", description="a URI naming the kind of problem")
    title: str
    status: int
    detail: str = Field(description="one sentence saying what went wrong and what to do")
    instance: str | None = None
    errors: list[dict[str, Any]] | None = None


class ProblemError(StarletteHTTPException):
    """An error a route raises on purpose, with a stable problem type the caller can match on."""

    def __init__(
        self, status: int, detail: str, *, kind: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status_code=status, detail=detail, headers=headers)
        self.kind = kind


def problem_response(
    status: int,
    detail: str,
    *,
    kind: str | None = None,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> JSONResponse:
    problem = Problem(
        type=f"urn:hw-grader:problem:{kind}" if kind else "about:blank",
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        instance=instance,
        errors=errors,
    )
    return JSONResponse(
        problem.model_dump(exclude_none=True), status_code=status, headers=headers, media_type=PROBLEM_JSON
    )


_DEFAULT_DETAIL = {
    404: "There is nothing at this address.",
    405: "This address does not accept that HTTP method.",
}


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    return error_response(error, request.url.path)


def error_response(error: StarletteHTTPException, instance: str) -> JSONResponse:
    """The problem for an HTTP error raised on purpose (a ProblemError) or by Starlette itself."""
    detail = error.detail if isinstance(error.detail, str) else HTTPStatus(error.status_code).phrase
    if detail in ("Not Found", "Method Not Allowed"):
        detail = _DEFAULT_DETAIL.get(error.status_code, detail)
    kind = getattr(error, "kind", None)
    return problem_response(
        error.status_code, detail, kind=kind, instance=instance, headers=getattr(error, "headers", None)
    )


def _describe(error: dict[str, Any]) -> str:
    where = ".".join(str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path"))
    message = str(error.get("msg", "is invalid"))
    if error.get("type") == "missing":
        message = "is required"
    return f"{where} {message}".strip() if where else message


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    errors = [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
        for e in error.errors()
    ]
    detail = "; ".join(_describe(e) for e in error.errors()) or "The request is invalid."
    return problem_response(422, detail[:1000], kind="invalid-request", instance=request.url.path, errors=errors)


async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return problem_response(
        500, "The grader hit an internal error; it has been logged.", kind="internal", instance=request.url.path
    )


DATABASE_RETRY_SECONDS = 5


def database_problem(instance: str) -> JSONResponse:
    return problem_response(
        503, "The grader's database cannot be reached right now; try again shortly.",
        kind="database-unavailable", instance=instance, headers={"Retry-After": str(DATABASE_RETRY_SECONDS)},
    )


async def answer_failure(
    app: ASGIApp, scope: Scope, receive: Receive, send: Send, answer: Callable[[Exception], Response | None]
) -> None:
    """Run `app`; should it raise before starting its response, and `answer` have a response for that
    exception, send the response instead. Once a response has started, or without an answer, the
    exception goes on."""
    started = False

    async def tracking_send(message: Message) -> None:
        nonlocal started
        started = started or message["type"] == "http.response.start"
        await send(message)

    try:
        await app(scope, receive, tracking_send)
    except Exception as error:
        response = None if started else answer(error)
        if response is None:
            raise
        await response(scope, receive, send)


class DatabaseOutageMiddleware:
    """Answers a request that failed because the database is out of reach with 503 database-unavailable
    and one warning line. An exception handler cannot: Starlette's outermost error middleware, which
    runs those for Exception, logs the traceback and re-raises, and the metrics inside it record a 500.
    So this sits just inside the metrics, outside everything that reaches the database."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        def outage(error: Exception) -> Response | None:
            if not database_unavailable(error):
                return None
            path = scope.get("path", "")
            log.warning("%s %s: the database is unavailable (%s)", scope.get("method", ""), path, one_line(error))
            return database_problem(path)

        await answer_failure(self.app, scope, receive, send, outage)


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
