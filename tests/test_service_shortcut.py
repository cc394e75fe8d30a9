"""The shortcut for a plain `POST /api/v1/grade`: it answers that request itself, and hands every
other one to the full app with the body intact (so every error keeps the route's own wording)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from fastapi.testclient import TestClient
from starlette.exceptions import HTTPException
from starlette.types import Receive, Scope, Send

from grader.engine.grading import Grader
from grader.service.api import GRADE_PATH, api
from grader.service.auth import session_value
from grader.service.context import ServiceContext
from grader.service.problems import ProblemError
from grader.service.shortcut import MAX_BYTES, GradeShortcut, grade_route
from tests.conftest import EXAMPLES
from tests.intake_fixtures import zip_bytes
from tests.service_helpers import post_asgi, service_client, settings_for

TOKEN = "gamma-token"
BOUNDARY = "b0undary"
CORRECT = (EXAMPLES / "correct.py").read_bytes()


def form(*parts: tuple[str, str | None, bytes], boundary: str = BOUNDARY) -> bytes:
    """A multipart body of (name, file name or None for a plain field, content) parts."""
    body = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


FORM = f"multipart/form-data; boundary={BOUNDARY}"


def headers(token: str | None = TOKEN, content_type: str = FORM) -> dict[str, str]:
    sent = {"content-type": content_type}
    if token is not None:
        sent["authorization"] = f"Bearer {token}"
    return sent


class FullApp:
    """Stands in for FastAPI: records the body each request it is handed carries, and in how many messages."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.messages: list[int] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        count = 0
        with anyio.fail_after(10):  # a body the shortcut swallowed would never come: fail, not hang
            while True:
                message = await receive()
                count += 1
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
        self.bodies.append(body)
        self.messages.append(count)
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b"the full app"})


@pytest.fixture
def context(grader: Grader, tmp_path: Path) -> Iterator[ServiceContext]:
    started = ServiceContext(settings_for(tmp_path, api_tokens=TOKEN), grader=grader)
    started.start()
    yield started
    started.stop()


@pytest.fixture
def full() -> FullApp:
    return FullApp()


@pytest.fixture
def client(context: ServiceContext, full: FullApp) -> Iterator[TestClient]:
    shortcut = GradeShortcut(full, context=context, tokens=lambda: [TOKEN], route=grade_route(api.routes))
    yield TestClient(shortcut)  # not entered: the stand-in has no lifespan to run


def test_a_plain_upload_is_graded_and_stored_without_the_full_app(client: TestClient, full: FullApp,
                                                                  context: ServiceContext) -> None:
    response = client.post("/api/v1/grade", content=form(("file", "layers.py", CORRECT), ("student", None, b"ada")),
                           headers=headers())
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["score"] == 10.0 and body["student"] == "ada" and isinstance(body["id"], int)
    assert full.bodies == []
    from grader.store import repository

    with context.database.session() as session:
        stored = repository.get_submission(session, body["id"])
        assert stored is not None and stored.student == "ada" and stored.origin == "layers.py"
        result = repository.current_result(stored)
        assert result is not None and result.report["score"] == 10.0


def test_the_student_defaults_to_the_file_name(client: TestClient, full: FullApp) -> None:
    for student in ([], [("student", None, b"  ")]):
        body = client.post("/api/v1/grade", content=form(("file", "dir/typo_arange.py", CORRECT), *student),
                           headers=headers()).json()
        assert body["student"] == "typo_arange"
    assert full.bodies == []


NOT_PLAIN = [
    ("a callback", form(("file", "layers.py", CORRECT), ("callback_url", None, b"http://127.0.0.1:9/x")),
     headers()),
    ("another field", form(("file", "layers.py", CORRECT), ("notes", None, b"hi")), headers()),
    ("a name given twice", form(("file", "a.py", CORRECT), ("file", "b.py", CORRECT)), headers()),
    ("no file name", form(("file", None, CORRECT)), headers()),
    ("an empty file name", form(("file", "", CORRECT)), headers()),
    ("a student name too long", form(("file", "layers.py", CORRECT), ("student", None, b"s" * 256)), headers()),
    ("a student that is a file", form(("file", "layers.py", CORRECT), ("student", "s.txt", b"ada")), headers()),
    ("one student's zip", form(("file", "ada.zip", zip_bytes({"ada/layers.py": CORRECT}))), headers()),
    ("an empty file", form(("file", "layers.py", b"  \n")), headers()),
    ("a binary file", form(("file", "layers.py", b"\x7fELF\x00\x00")), headers()),
    ("undecodable text", form(("file", "layers.py", b"x = '\xff'\n")), headers()),
    ("no token", form(("file", "layers.py", CORRECT)), headers(token=None)),
    ("a wrong token", form(("file", "layers.py", CORRECT)), headers(token="gamma")),
    ("a form the parser refuses", b"--b0undary\r\ngarbage", headers()),
    ("no boundary", form(("file", "layers.py", CORRECT)), headers(content_type="multipart/form-data")),
    ("another charset", form(("file", "layers.py", CORRECT)),
     headers(content_type=f"multipart/form-data; boundary={BOUNDARY}; charset=latin-1")),
    ("not a form", b'{"file": "x"}', headers(content_type="application/json")),
    ("too large for the shortcut", form(("file", "layers.py", CORRECT + b"#" * MAX_BYTES)), headers()),
    ("a form cut short", form(("file", "layers.py", CORRECT))[:500], headers()),
    ("a closing boundary missing", form(("file", "layers.py", CORRECT))[: -len(f"--{BOUNDARY}--\r\n")], headers()),
    ("a student part cut short", form(("file", "layers.py", CORRECT), ("student", None, b"mallory"))[:-20],
     headers()),
    ("a boundary the parser refuses", form(("file", "layers.py", CORRECT), boundary="x" * 257),
     headers(content_type=f"multipart/form-data; boundary={'x' * 257}")),
]


@pytest.mark.parametrize(("why", "body", "sent"), NOT_PLAIN, ids=[case[0] for case in NOT_PLAIN])
def test_anything_else_reaches_the_full_app_with_its_body(client: TestClient, full: FullApp, why: str,
                                                          body: bytes, sent: dict[str, str]) -> None:
    response = client.post("/api/v1/grade", content=body, headers=sent)
    assert (response.status_code, response.text) == (299, "the full app"), why
    assert full.bodies == [body], why


def test_other_paths_and_methods_reach_the_full_app(client: TestClient, full: FullApp) -> None:
    body = form(("file", "layers.py", CORRECT))
    assert client.post("/api/v1/batches", content=body, headers=headers()).status_code == 299
    assert client.put("/api/v1/grade", content=body, headers=headers()).status_code == 299
    assert client.post("/api/v1/grade/", content=body, headers=headers()).status_code == 299
    assert full.bodies == [body] * 3


def test_a_failed_grading_is_a_problem(client: TestClient, full: FullApp, monkeypatch: pytest.MonkeyPatch) -> None:
    import grader.service.shortcut as shortcut

    def failing(*args: object) -> None:
        raise ProblemError(503, "Grading failed inside the grader and was logged; try again shortly.",
                           kind="grading-failed")

    monkeypatch.setattr(shortcut, "grade_single", failing)
    response = client.post("/api/v1/grade", content=form(("file", "layers.py", CORRECT)), headers=headers())
    assert response.status_code == 503 and response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "urn:hw-grader:problem:grading-failed" and problem["instance"] == "/api/v1/grade"
    assert full.bodies == []


def test_the_service_answers_the_same_with_and_without_the_shortcut(grader: Grader, tmp_path: Path) -> None:
    """The same upload through the shortcut (a bearer token) and through the route (the login cookie)."""
    with service_client(grader, tmp_path, api_tokens=TOKEN) as service:
        body = form(("file", "typo_arange.py", (EXAMPLES / "typo_arange.py").read_bytes()), ("student", None, b"bo"))
        short = service.post("/api/v1/grade", content=body, headers=headers())
        service.cookies.set("grader_token", session_value(TOKEN))
        routed = service.post("/api/v1/grade", content=body, headers=headers(token=None))
        metrics = service.get("/metrics").text
    assert short.status_code == routed.status_code == 200
    first, second = short.json(), routed.json()
    assert second["id"] == first["id"] + 1
    for answer in (first, second):
        answer.pop("id"), answer.pop("seconds")
    assert first == second and first["student"] == "bo"
    # both counted under the route's template, as routing labels it
    assert 'grader_http_requests_total{method="POST",route="/api/v1/grade",status="200"} 2.0' in metrics


def test_the_first_authorization_header_counts_as_in_the_full_app(client: TestClient, full: FullApp) -> None:
    body = form(("file", "layers.py", CORRECT))
    sent = [("content-type", FORM), ("authorization", "Bearer wrong"), ("authorization", f"Bearer {TOKEN}")]
    assert client.post("/api/v1/grade", content=body, headers=sent).status_code == 299
    assert full.bodies == [body]


def _send_raw(app: GradeShortcut, headers: list[tuple[bytes, bytes]], chunks: list[bytes]) -> int:
    """Call the shortcut as a server would, the body in `chunks` (one message each); the status."""
    return anyio.run(post_asgi, app, GRADE_PATH, headers, chunks)[0]


def test_a_huge_length_without_a_token_is_not_read(context: ServiceContext, full: FullApp) -> None:
    """The token is checked first; a Content-Length of 5,000 digits is never even converted."""
    shortcut = GradeShortcut(full, context=context, tokens=lambda: [TOKEN], route=grade_route(api.routes))
    sent = [(b"content-type", FORM.encode()), (b"content-length", b"0" * 5000 + b"1")]
    assert _send_raw(shortcut, sent, [b"x"]) == 299
    with_token = [*sent, (b"authorization", f"Bearer {TOKEN}".encode())]
    assert _send_raw(shortcut, with_token, [b"x"]) == 299
    assert full.bodies == [b"x", b"x"]


def test_a_body_in_many_pieces_reaches_the_full_app_whole_in_one_message(context: ServiceContext,
                                                                        full: FullApp) -> None:
    """What the shortcut holds for a replay is the body itself, not every message it came in."""
    shortcut = GradeShortcut(full, context=context, tokens=lambda: [TOKEN], route=grade_route(api.routes))
    body = form(("file", "layers.py", CORRECT), ("notes", None, b"not plain"))
    sent = [(b"content-type", FORM.encode()), (b"content-length", str(len(body)).encode()),
            (b"authorization", f"Bearer {TOKEN}".encode())]
    assert _send_raw(shortcut, sent, [body[i : i + 1] for i in range(len(body))]) == 299
    assert full.bodies == [body] and full.messages == [1]


def test_any_http_error_from_grading_is_a_problem(client: TestClient, full: FullApp,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import grader.service.shortcut as shortcut

    def conflicting(*args: object) -> None:
        raise HTTPException(409, "busy")

    monkeypatch.setattr(shortcut, "grade_single", conflicting)
    response = client.post("/api/v1/grade", content=form(("file", "layers.py", CORRECT)), headers=headers())
    assert response.status_code == 409 and response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == "busy" and full.bodies == []


def test_the_shortcut_reads_the_tokens_the_app_has_now(grader: Grader, tmp_path: Path) -> None:
    with service_client(grader, tmp_path, api_tokens=TOKEN) as service:
        body = form(("file", "layers.py", CORRECT))
        assert service.post("/api/v1/grade", content=body, headers=headers()).status_code == 200
        service.app.state.tokens = ["delta-token"]  # type: ignore[attr-defined]
        assert service.post("/api/v1/grade", content=body, headers=headers()).status_code == 401
        assert service.post("/api/v1/grade", content=body, headers=headers("delta-token")).status_code == 200
