"""A shortcut for the request an LMS sends most: one well-formed synchronous `POST /api/v1/grade`.

FastAPI answers it through its routing, dependency solving, request validation and form parsing
(the file spooled into an `UploadFile`), which on the service benchmark cost about as much of the
service's CPU as storing the file and its result. This middleware recognises the plain case (an
authorised multipart upload, no larger than `MAX_BYTES`, of one file plus at most a `student` field,
and no callback) and grades it with the route's own functions. Anything else is handed to the app
with the bytes read so far replayed, so every other request and every error keeps its one
implementation: a zip (or a file named like one), a callback, a missing or wrong token (or a
cookie), another field, a field given twice, a form the parser refuses, a name the route would
refuse, or a file `check_source` refuses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from anyio import to_thread
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from grader.intake.archive import is_zip
from grader.intake.tree import is_zip_name
from grader.service.api import GRADE_PATH, STUDENT_MAX_LENGTH, grade_response, grade_single, new_single
from grader.service.auth import bearer_token, token_is_valid
from grader.service.context import ServiceContext
from grader.service.problems import ProblemError, error_response
from grader.service.uploads import check_source, safe_filename

MAX_BYTES = 1 << 20  # larger uploads take the full path, which spools them to disk
MAX_PARTS = 2  # `file` and `student`
_HEADERS = frozenset((b"content-type", b"authorization", b"content-length"))


class Part:
    __slots__ = ("data", "disposition", "filename", "name")

    def __init__(self) -> None:
        self.disposition = b""
        self.name: bytes | None = None
        self.filename: bytes | None = None
        self.data = bytearray()


def parse_form(body: bytes, boundary: bytes) -> dict[bytes, Part] | None:
    """The parts of a multipart body by name, or None when it is anything but plain: a parse error
    (the parser's own, or a form cut short: Starlette drops a part that never ended), more than
    MAX_PARTS parts, a part without a name, or a name given twice."""
    parts: list[Part] = []
    ended: list[bool] = []  # [part ended] per part, and one True more at the closing delimiter
    header_name = bytearray()
    header_value = bytearray()

    def on_part_begin() -> None:
        if len(parts) == MAX_PARTS:
            raise _NotPlain
        parts.append(Part())

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_name.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        if header_name.lower() == b"content-disposition":
            parts[-1].disposition = bytes(header_value)
        header_name.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        part = parts[-1]
        _, options = parse_options_header(part.disposition)
        part.name = options.get(b"name")
        part.filename = options.get(b"filename")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1].data.extend(data[start:end])

    def on_part_end() -> None:
        ended.append(True)

    def on_end() -> None:
        ended.append(True)

    try:
        parser = MultipartParser(boundary, {
            "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
            "on_header_end": on_header_end, "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
            "on_part_end": on_part_end, "on_end": on_end,
        })
        parser.write(body)
        parser.finalize()
    except (FormParserError, _NotPlain):
        return None
    if len(ended) != len(parts) + 1:  # cut short: FastAPI drops an unfinished part, so leave it to FastAPI
        return None
    named = {part.name: part for part in parts if part.name is not None}
    if len(named) != len(parts):
        return None
    return named


class _NotPlain(Exception):
    """Stops parsing a form the shortcut leaves to the full app."""


def _decode(raw: bytes) -> str:
    """As Starlette decodes names and fields of a UTF-8 form (Latin-1 where UTF-8 fails)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class GradeShortcut:
    """Answers a plain synchronous single-file grade itself; passes everything else to `app`."""

    def __init__(
        self, app: ASGIApp, context: ServiceContext, tokens: Callable[[], list[str]], route: BaseRoute
    ) -> None:
        self.app = app
        self.context = context
        self.tokens = tokens  # read at every request, from where `require_token` reads them
        self.route = route  # set in the scope, as routing would, so metrics count the request under it

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != GRADE_PATH
                or scope.get("root_path")):
            await self.app(scope, receive, send)
            return
        boundary = self._boundary(scope["headers"])
        if boundary is None:
            await self.app(scope, receive, send)
            return
        body, received = await _read_body(receive, MAX_BYTES)
        form = parse_form(body, boundary) if body is not None else None
        upload = self._upload(form) if form is not None else None
        if upload is None:
            await self.app(scope, _replay(received, receive), send)
            return
        raw_name, content, student = upload
        ctx = self.context
        filename = safe_filename(raw_name, ctx.grader.assignment.rubric.filename)
        try:
            if is_zip(content[:4]) or is_zip_name(filename):
                raise _NotPlain
            check_source(content, filename)
        except (ProblemError, _NotPlain):  # the route says why, or finds the file in the zip
            await self.app(scope, _replay(received, receive), send)
            return
        scope["route"] = self.route
        new = new_single(student, filename, content, origin=filename)
        response: Response
        try:
            submission_id, report = await to_thread.run_sync(grade_single, ctx, new, limiter=ctx.limiter)
        except StarletteHTTPException as error:  # as ExceptionMiddleware would answer it in the route
            response = error_response(error, scope["path"])
        else:
            response = grade_response(submission_id, report)
        await response(scope, receive, send)

    def _boundary(self, headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
        """The form's boundary when the request is authorised, declares a length within MAX_BYTES and
        is a UTF-8 multipart form; else None."""
        seen: dict[bytes, bytes] = {}
        for name, value in headers:
            if name in _HEADERS:
                seen.setdefault(name, value)  # the first of each, as Starlette's Headers.get reads it
        content_type, authorization = seen.get(b"content-type", b""), seen.get(b"authorization", b"")
        tokens = self.tokens()
        if tokens:
            token = bearer_token(authorization.decode("latin-1"))
            if token is None or not token_is_valid(token, tokens):
                return None
        length = seen.get(b"content-length", b"")
        if not (0 < len(length) <= len(str(MAX_BYTES)) and length.isdigit() and int(length) <= MAX_BYTES):
            return None
        kind, options = parse_options_header(content_type)
        if kind != b"multipart/form-data" or options.get(b"charset", b"utf-8").lower() not in (b"utf-8", b"utf8"):
            return None
        return options.get(b"boundary") or None

    @staticmethod
    def _upload(form: dict[bytes, Part]) -> tuple[str, bytes, str | None] | None:
        """(file name, content, student) of a form with a file part `file` and at most a plain
        `student` field that the route would accept; else None."""
        file = form.get(b"file")
        if file is None or not file.filename or set(form) - {b"file", b"student"}:
            return None
        student = None
        if b"student" in form:
            field = form[b"student"]
            if field.filename is not None:
                return None
            student = _decode(bytes(field.data)) or None  # an empty field is an absent one, as in FastAPI
            if student is not None and len(student) > STUDENT_MAX_LENGTH:
                return None
        return _decode(file.filename), bytes(file.data), student


async def _read_body(receive: Receive, limit: int) -> tuple[bytes | None, list[Message]]:
    """The whole body (None when the client disconnected first or it outgrew `limit`), and what a
    replay must give: at most one http.request message, and what ended the read."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None, [{"type": "http.request", "body": bytes(body), "more_body": True}, message]
        body += message.get("body", b"")
        more = message.get("more_body", False)
        if not more or len(body) > limit:
            whole = bytes(body)
            return None if more else whole, [{"type": "http.request", "body": whole, "more_body": more}]


def _replay(received: list[Message], receive: Receive) -> Receive:
    """A receive that gives the messages already read again, then reads on."""
    pending = list(received)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


def grade_route(routes: Iterable[Any]) -> BaseRoute:
    """The app's route for `POST /api/v1/grade`."""
    for route in routes:
        if getattr(route, "path", None) == GRADE_PATH and "POST" in (getattr(route, "methods", None) or ()):
            return route
    raise LookupError(f"no POST route for {GRADE_PATH}")
