"""The HTTP API through TestClient: every endpoint, every error shape, auth, uploads, regrades, callbacks."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from fastapi.testclient import TestClient

from grader.engine.grading import Grader
from grader.service import create_app
from grader.service.auth import session_value
from tests.conftest import EXAMPLES
from tests.intake_fixtures import blackboard_entries, zip_bytes
from tests.queue_support import wait_for
from tests.service_helpers import ResponseLike, post_asgi, service_client, settings_for, wait_for_batch

PROBLEM = "application/problem+json"


@pytest.fixture
def client(grader: Grader, tmp_path: Path) -> Iterator[TestClient]:
    with service_client(grader, tmp_path) as test_client:
        yield test_client


def upload(name: str, content: bytes | None = None) -> dict[str, tuple[str, bytes]]:
    return {"file": (name, content if content is not None else (EXAMPLES / name).read_bytes())}


def assert_problem(response: ResponseLike, status: int, *words: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status and body["title"] and body["type"]
    for word in words:
        assert word in body["detail"], body["detail"]
    return body


# --- health, docs, metrics ---------------------------------------------------------------------------


def test_healthz_reports_layers_and_version(client: TestClient, grader: Grader) -> None:
    body = client.get("/healthz").json()
    assert body["status"] == "ok"
    assert body["version"] == "0.1.0"
    assert body["layers"] == grader.layers and body["layers"]["no_network"] is True
    assert body["rubric_version"] == grader.assignment.rubric.version


def test_healthz_answers_head_for_load_balancers(client: TestClient) -> None:
    response = client.head("/healthz")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert "/healthz" in client.get("/openapi.json").json()["paths"]  # documented once, as GET


def test_docs_are_served_without_any_outside_host(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert "http://" not in page.text and "https://" not in page.text
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    assert client.get("/docs-assets/swagger-ui.css").status_code == 200
    redoc = client.get("/redoc")
    assert redoc.status_code == 200 and "fonts.googleapis" not in redoc.text
    schema = client.get("/openapi.json").json()
    assert "/api/v1/batches/{batch_id}/grades.csv" in schema["paths"]


def test_openapi_documents_what_the_web_page_needs(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    student = schemas["BatchStudent"]["properties"]
    for field in ("submission_id", "student", "name", "late", "score", "max_score", "problems", "status",
                  "limits_hit", "errors", "policy_violation"):
        assert field in student
    summary = set(schemas["BatchSummary"]["properties"])
    assert {"id", "created_at", "filename", "layout", "status", "progress"} <= summary
    assert "source" in schemas["SubmissionDetail"]["properties"]


def test_metrics_count_requests_gradings_and_limits(client: TestClient) -> None:
    assert client.post("/api/v1/grade", files=upload("memory_blowup_in_l2.py")).status_code == 200
    text = client.get("/metrics").text
    assert 'grader_http_requests_total{method="POST",route="/api/v1/grade",status="200"} 1.0' in text
    assert "grader_grading_duration_seconds_count 1.0" in text
    assert 'grader_sandbox_limits_hit_total{limit="memory"} 1.0' in text
    assert "grader_queue_depth 0.0" in text


# --- grading one file --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["correct.py", "typo_arange.py", "syntax_error.py", "forbidden_torch.py"])
def test_grade_returns_the_cli_json_plus_an_id(client: TestClient, grader: Grader, name: str,
                                               expected_examples: dict[str, dict[str, object]]) -> None:
    response = client.post("/api/v1/grade", files=upload(name))
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body.pop("id"), int)
    cli = grader.grade((EXAMPLES / name).read_bytes(), student=Path(name).stem).model_dump(mode="json")
    body.pop("seconds"), cli.pop("seconds")
    assert body == cli
    assert body["score"] == expected_examples[name]["score"]


def test_graded_file_is_stored_with_its_hash_source_and_result(client: TestClient) -> None:
    source = (EXAMPLES / "l2_missing_half.py").read_bytes()
    graded = client.post("/api/v1/grade", files=upload("l2_missing_half.py"), data={"student": "ada"}).json()
    stored = client.get(f"/api/v1/submissions/{graded['id']}").json()
    assert stored["sha256"] == hashlib.sha256(source).hexdigest()
    assert stored["source"] == source.decode()
    assert stored["student"] == "ada" and stored["status"] == "graded"
    assert stored["result"]["score"] == graded["score"] == 8.5
    assert stored["result"]["rubric_version"] and stored["result"]["seed"] == 4391
    assert [h["generation"] for h in stored["history"]] == [1]


@pytest.mark.parametrize(
    ("content", "status", "words"),
    [
        (b"", 422, ["empty"]),
        (b"   \n\n", 422, ["empty"]),
        (b"\x7fELF\x02\x01\x01\x00\x00\x00binary", 415, ["binary"]),
        (b"x = '\xff\xfe caf\xe9'\n", 422, ["UTF-8"]),
        (b"PK\x03\x04" + b"\x00" * 40, 422, ["zip"]),
    ],
)
def test_unusable_files_get_a_4xx_saying_why(client: TestClient, content: bytes, status: int,
                                             words: list[str]) -> None:
    assert_problem(client.post("/api/v1/grade", files=upload("layers.py", content)), status, *words)


def test_grade_accepts_one_students_zip(client: TestClient) -> None:
    archive = zip_bytes({
        "homework5_programming/neuralnet/layers.py": (EXAMPLES / "relu_backward_no_mask.py").read_bytes(),
        "homework5_programming/neuralnet/utils.py": b"import numpy as np\n",
        "__MACOSX/homework5_programming/neuralnet/._layers.py": b"\x00\x05junk",
    })
    graded = client.post("/api/v1/grade", files=upload("ada-hw5.zip", archive))
    assert graded.status_code == 200, graded.text
    assert graded.json()["score"] == 9 and graded.json()["student"] == "ada-hw5"
    stored = client.get(f"/api/v1/submissions/{graded.json()['id']}").json()
    assert stored["source"] == (EXAMPLES / "relu_backward_no_mask.py").read_text()


def test_grade_refuses_class_zips_and_zips_without_the_file(client: TestClient) -> None:
    two = zip_bytes({"ada/layers.py": b"x = 1\n", "bob/layers.py": b"x = 2\n"})
    assert_problem(client.post("/api/v1/grade", files=upload("class.zip", two)), 422, "/api/v1/batches")
    nothing = zip_bytes({"notes/readme.txt": b"hello"})
    assert_problem(client.post("/api/v1/grade", files=upload("ada.zip", nothing)), 422, "Nothing to grade")


def test_a_file_named_like_a_zip_must_be_one(client: TestClient, tmp_path: Path) -> None:
    """As the command line and a batch refuse it: graded as Python it would only score 0."""
    for name in ("ada.zip", "ADA.ZIP"):
        assert_problem(client.post("/api/v1/grade", files=upload(name, b"this is not a zip\n")), 422,
                       name, "not a readable zip archive")
    assert_problem(client.post("/api/v1/batches", files=upload("class.zip", b"this is not a zip\n")), 422,
                   "not a readable zip archive")
    assert not _stored_uploads(tmp_path)


def test_a_form_with_two_files_is_refused(client: TestClient) -> None:
    """The route's `file` would see only the last of them: grading one of two silently is refused."""
    correct, starter = (EXAMPLES / "correct.py").read_bytes(), (EXAMPLES / "starter.py").read_bytes()
    two = [("file", ("correct.py", correct)), ("file", ("starter.py", starter))]
    for path in ("/api/v1/grade", "/api/v1/batches"):
        body = assert_problem(client.post(path, files=two), 422, "one file", "has 2")
        assert body["type"] == "urn:hw-grader:problem:several-files"
    assert client.get("/api/v1/batches").json()["batches"] == []  # nothing was stored either


def test_refused_uploads_leave_nothing_in_the_data_folder(client: TestClient, tmp_path: Path) -> None:
    refused = [
        ("/api/v1/batches", upload("corrupt.zip", b"PK\x03\x04" + b"\x00" * 40)),
        ("/api/v1/batches", upload("notes.txt", b"hello")),
        ("/api/v1/batches", upload("layers.py", b"")),
        ("/api/v1/batches", upload("empty.zip", zip_bytes({}))),
        ("/api/v1/grade", upload("ada.zip", zip_bytes({"notes/readme.txt": b"hello"}))),
        ("/api/v1/grade", upload("two.zip", zip_bytes({"ada/layers.py": b"x = 1\n", "bob/layers.py": b"x = 2\n"}))),
        ("/api/v1/grade", upload("binary.zip", zip_bytes({"ada/layers.py": b"\x7fELF\x00\x01"}))),
    ]
    for path, files in refused:
        assert client.post(path, files=files).status_code in (415, 422), (path, files)
    one = upload("ada.zip", zip_bytes({"ada/layers.py": (EXAMPLES / "correct.py").read_bytes()}))
    for callback in ("ftp://example.org/x", "http://127.0.0.1:9/x"):  # not http(s); callbacks off here
        assert client.post("/api/v1/grade", files=one, data={"callback_url": callback}).status_code == 422
    assert not _stored_uploads(tmp_path)
    # what is accepted is kept, under its hash, for the audit
    archive = zip_bytes({"ada/layers.py": (EXAMPLES / "correct.py").read_bytes(), "bob/layers.py": b"x = 1\n"})
    assert client.post("/api/v1/batches", files=upload("class.zip", archive)).status_code == 202
    assert _stored_uploads(tmp_path) == [f"{hashlib.sha256(archive).hexdigest()}/class.zip"]


def _stored_uploads(data_dir: Path) -> list[str]:
    """Every file (and any leftover staging folder) under the service's uploads folder."""
    folder = data_dir / "uploads"
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() or p.name.startswith("."))


def test_missing_or_malformed_form_is_a_422(client: TestClient) -> None:
    body = assert_problem(client.post("/api/v1/grade", data={"student": "x"}), 422, "file")
    assert body["errors"]
    assert_problem(client.post("/api/v1/grade", content=b"{}", headers={"content-type": "application/json"}), 422)
    assert_problem(client.post("/api/v1/grade", content=b"--x\r\ngarbage",
                               headers={"content-type": "multipart/form-data; boundary=x"}), 422)


def test_oversized_uploads_get_413_by_length_and_while_streaming(grader: Grader, tmp_path: Path) -> None:
    with service_client(grader, tmp_path, max_upload_mb=0.05) as small:
        too_big = b"# padding\n" * 10_000  # 100 kB > 50 kB
        assert_problem(small.post("/api/v1/grade", files=upload("layers.py", too_big)), 413, "0.05 MB")
        assert_problem(small.post("/api/v1/batches", files=upload("layers.py", too_big)), 413)

        def chunks() -> Iterator[bytes]:
            for _ in range(100):
                yield b"#" * 4096

        # chunked, no Content-Length: the byte count trips (test_service_live checks it stops reading early)
        streamed = small.post("/api/v1/grade", content=chunks(),
                              headers={"content-type": "multipart/form-data; boundary=b"})
        assert "content-length" not in streamed.request.headers
        assert_problem(streamed, 413)
        assert small.post("/api/v1/grade", files=upload("correct.py")).status_code == 200


def test_not_found_and_wrong_method_are_problems(client: TestClient) -> None:
    assert_problem(client.get("/no/such/page"), 404)
    assert_problem(client.get("/api/v1/submissions/999"), 404, "999")
    assert_problem(client.get("/api/v1/batches/999"), 404, "999")
    assert_problem(client.get("/api/v1/batches/999/grades.csv"), 404)
    assert_problem(client.post("/api/v1/batches/999/regrade"), 404)
    assert_problem(client.post("/api/v1/submissions/999/regrade"), 404)
    assert_problem(client.delete("/api/v1/grade"), 405)
    assert_problem(client.get("/api/v1/submissions/abc"), 422)
    assert_problem(client.get("/api/v1/submissions/99999999999999999999"), 422)
    assert_problem(client.get("/api/v1/batches?limit=0"), 422, "limit")


def test_an_internal_error_is_a_problem_not_a_traceback(grader: Grader, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from grader.store import repository

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(repository, "list_batches", broken)
    with service_client(grader, tmp_path, raise_server_exceptions=False) as client:
        response = client.get("/api/v1/batches")
    assert_problem(response, 500, "internal error")
    assert "Traceback" not in response.text and "secret internals" not in response.text


# --- auth ----------------------------------------------------------------------------------------------


@pytest.fixture
def locked(grader: Grader, tmp_path: Path) -> Iterator[TestClient]:
    with service_client(grader, tmp_path, api_tokens="alpha-token, beta-token") as test_client:
        yield test_client


def test_tokens_are_required_when_configured(locked: TestClient) -> None:
    body = assert_problem(locked.get("/api/v1/batches"), 401, "Bearer")
    assert "alpha" not in json.dumps(body)
    assert locked.get("/api/v1/batches").headers["www-authenticate"].startswith("Bearer")
    assert_problem(locked.get("/api/v1/batches", headers={"Authorization": "Bearer alpha"}), 401, "not valid")
    assert_problem(locked.get("/api/v1/batches", headers={"Authorization": "Basic alpha-token"}), 401)
    assert_problem(locked.post("/api/v1/grade", files=upload("correct.py")), 401)
    assert_problem(locked.get("/metrics"), 401)
    for token in ("alpha-token", "beta-token"):
        assert locked.get("/api/v1/batches", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert locked.get("/healthz").status_code == 200
    assert locked.get("/openapi.json").status_code == 200


def test_an_upload_without_a_valid_token_is_refused_before_its_body_is_read(locked: TestClient) -> None:
    form = [(b"content-type", b"multipart/form-data; boundary=x"), (b"content-length", b"9000000")]

    def post(path: str, headers: list[tuple[bytes, bytes]], root_path: str = "") -> tuple[int, bytes]:
        return anyio.run(post_asgi, locked.app, path, [*form, *headers], None, root_path)

    for path in ("/api/v1/batches", "/api/v1/grade", "/api/v1/submissions/1/regrade"):
        for headers in ([], [(b"authorization", b"Bearer alpha")], [(b"cookie", b"grader_token=beta")]):
            status, body = post(path, headers)
            assert status == 401, (path, headers)
            problem = json.loads(body)
            assert problem["status"] == 401 and problem["instance"] == path and "token" in problem["detail"]
    # served under a root path (behind a proxy that keeps the prefix), as routing sees the path
    status, body = post("/grader/api/v1/batches", [], "/grader")
    assert status == 401 and json.loads(body)["instance"] == "/grader/api/v1/batches"
    # counted under the route each refused request named, as before the gate
    metrics = locked.get("/metrics", headers={"Authorization": "Bearer alpha-token"}).text
    assert 'grader_http_requests_total{method="POST",route="/api/v1/batches",status="401"} 4.0' in metrics
    assert 'route="/api/v1/submissions/{submission_id}/regrade",status="401"} 3.0' in metrics


def test_cookie_login_for_the_web_page(locked: TestClient) -> None:
    refused = locked.post("/login", data={"token": "wrong"}, follow_redirects=False)
    assert_problem(refused, 401)
    assert "set-cookie" not in refused.headers
    accepted = locked.post("/login", data={"token": "beta-token", "next": "/api/v1/batches"}, follow_redirects=False)
    assert accepted.status_code == 303 and accepted.headers["location"] == "/api/v1/batches"
    cookie = accepted.headers["set-cookie"]
    assert cookie.startswith(f"grader_token={session_value('beta-token')};")  # derived: the token itself never
    assert "beta-token" not in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie  # reaches a browser
    assert locked.get("/api/v1/batches").status_code == 200  # the client now sends the cookie
    assert locked.get("/").status_code == 200  # and the page takes it
    # a cookie holding the token itself, or another token's session, is no session
    for value in ("beta-token", session_value("gamma-token")):
        locked.cookies.clear()
        locked.cookies.set("grader_token", value)
        assert locked.get("/api/v1/batches").status_code == 401
    offsite = locked.post("/login", data={"token": "beta-token", "next": "//evil.example/x"}, follow_redirects=False)
    assert offsite.headers["location"] == "/"
    locked.post("/logout", follow_redirects=False)
    locked.cookies.clear()
    assert locked.get("/api/v1/batches").status_code == 401


def test_login_reads_no_large_body(locked: TestClient) -> None:
    """The one form that takes no token is capped small: nobody can make the service read and
    spool a large upload there, by its length or by streaming."""
    big = {"junk": ("junk.bin", b"A" * 100_000)}
    assert_problem(locked.post("/login", data={"token": "wrong"}, files=big), 413, "bytes")

    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b"token=" + b"A" * 4096

    streamed = locked.post("/login", content=chunks(), headers={"content-type": "application/x-www-form-urlencoded"})
    assert "content-length" not in streamed.request.headers
    assert_problem(streamed, 413)
    long_token = locked.post("/login", data={"token": "b" * 4096, "next": "/" + "x" * 2000}, follow_redirects=False)
    assert_problem(long_token, 401)  # the largest form the route accepts still gets its answer


def test_an_open_service_answers_only_requests_addressed_to_this_machine(grader: Grader, tmp_path: Path) -> None:
    """Open (no tokens) as `grader serve` runs it on loopback: a page of another site can neither read
    it through a name resolved to 127.0.0.1 (DNS rebinding) nor post work to it."""
    app = create_app(settings_for(tmp_path), grader_instance=grader, local_names=["grader-box"])
    with TestClient(app, base_url="http://127.0.0.1:8000") as local:
        for host in ("127.0.0.1:8000", "localhost:8000", "[::1]:8000", "grader-box:8000", "127.0.0.2"):
            assert local.get("/api/v1/batches", headers={"host": host}).status_code == 200, host
        for host in ("evil.example:8000", "127.0.0.1.nip.io", "[::1", "0x7f000001"):
            body = assert_problem(local.get("/api/v1/batches", headers={"host": host}), 403, "localhost")
            assert body["type"] == "urn:hw-grader:problem:not-local"
        own = local.post("/api/v1/grade", files=upload("correct.py"), headers={"origin": "http://127.0.0.1:8000"})
        assert own.status_code == 200 and own.json()["score"] == 10  # the web page's own requests
        # another site, a sandboxed page, another port of this machine (a notebook server, say), and
        # another name for it than the request was sent to
        for origin in ("https://evil.example", "null", "http://127.0.0.1:8888", "http://localhost:8000"):
            assert_problem(local.post("/api/v1/grade", files=upload("correct.py"), headers={"origin": origin}),
                           403, "another site")
        again = local.post("/api/v1/grade", files=upload("correct.py"), headers={"origin": "http://127.0.0.1:8000"})
        assert again.json()["id"] == own.json()["id"] + 1  # the refused ones stored nothing
        # with tokens, every request needs one instead (and the page's cookie is SameSite=Strict)
        app.state.tokens = ["a-long-enough-token"]
        auth = {"authorization": "Bearer a-long-enough-token"}
        assert local.get("/api/v1/batches", headers={**auth, "host": "grader.example.edu"}).status_code == 200
    # the TestClient apps of the other tests run without the check (no local_names)
    with service_client(grader, tmp_path / "other") as unchecked:
        assert unchecked.get("/api/v1/batches", headers={"host": "evil.example"}).status_code == 200


def test_token_comparison_accepts_only_exact_tokens() -> None:
    from grader.service.auth import token_is_valid

    assert token_is_valid("abc", ["zzz", "abc"])
    assert not token_is_valid("ab", ["abc"]) and not token_is_valid("abcd", ["abc"]) and not token_is_valid("", ["a"])


# --- batches --------------------------------------------------------------------------------------------


def test_batch_is_accepted_then_graded_with_progress_and_csv(client: TestClient) -> None:
    response = client.post("/api/v1/batches", files=upload("typo_arange.py"))
    assert response.status_code == 202, response.text
    location = response.headers["location"]
    accepted = response.json()
    assert location == f"/api/v1/batches/{accepted['id']}"
    assert accepted["status"] in ("queued", "running", "done") and accepted["progress"]["total"] == 1
    batch = wait_for_batch(client, location)
    assert batch["status"] == "done" and batch["progress"] == {"done": 1, "total": 1}
    (row,) = batch["submissions"]
    assert row["student"] == "typo_arange" and row["status"] == "graded" and row["score"] == 7
    assert [p["score"] for p in row["problems"]] == [3, 2, 0, 2]
    assert row["limits_hit"] == [] and row["policy_violation"] is False and row["late"] is False
    detail = client.get(f"/api/v1/submissions/{row['submission_id']}").json()
    assert detail["batch_id"] == accepted["id"] and "np.arange" in detail["source"].replace("arrange", "arange")
    grades = client.get(f"{location}/grades.csv")
    assert grades.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(grades.text)))
    assert rows[0]["student"] == "typo_arange" and float(rows[0]["total"]) == 7


def test_blackboard_class_zip_batch(client: TestClient) -> None:
    stamp = "2024-10-01-12-00-00"
    archive = zip_bytes(blackboard_entries("Homework 5", [
        ("alovelace", "Ada Lovelace", stamp, {"layers.py": (EXAMPLES / "correct.py").read_bytes()}),
        ("cbabbage", "Charles Babbage", stamp, {"layers.py": (EXAMPLES / "hang_in_relu_forward.py").read_bytes()}),
        ("ghopper", "Grace Hopper", stamp, {"layers.py": (EXAMPLES / "forbidden_torch.py").read_bytes()}),
        ("aturing", "Alan Turing", stamp, {}),  # a receipt with no file attached
    ]))
    response = client.post("/api/v1/batches", files=upload("gradebook_hw5.zip", archive))
    assert response.status_code == 202, response.text
    assert response.json()["layout"] == "blackboard" and response.json()["progress"]["total"] == 4
    batch = wait_for_batch(client, response.headers["location"])
    rows = {row["student"]: row for row in batch["submissions"]}
    assert batch["status"] == "done" and batch["progress"] == {"done": 4, "total": 4}
    assert rows["alovelace"]["name"] == "Ada Lovelace" and rows["alovelace"]["score"] == 10
    assert rows["cbabbage"]["score"] == 8.5 and rows["cbabbage"]["limits_hit"] == ["time"]
    assert rows["ghopper"]["score"] == 0 and rows["ghopper"]["policy_violation"] is True
    assert rows["aturing"]["score"] is None and rows["aturing"]["status"] == "no_files"
    assert all(row["max_score"] == 10 for row in rows.values())
    location = response.headers["location"]
    grades = list(csv.DictReader(io.StringIO(client.get(f"{location}/grades.csv").text)))
    assert {(g["student"], g["total"]) for g in grades} == {
        ("alovelace", "10"), ("cbabbage", "8.5"), ("ghopper", "0"), ("aturing", "")}
    blackboard_file = client.get(f"{location}/grades-blackboard.csv?column_id=123456")
    blackboard = blackboard_file.text.splitlines()
    assert blackboard[0].endswith("\"Homework 5 [Total Pts: 10 Score] |123456\"")  # every field quoted
    assert "\"Lovelace\",\"Ada\",\"alovelace\",\"10\"" in blackboard
    assert "grader-warning" not in blackboard_file.headers
    canvas_file = client.get(f"{location}/grades-canvas.csv")
    canvas = canvas_file.text.splitlines()
    assert canvas[1].startswith("Points Possible") and "Ada Lovelace,alovelace,,,,10" in canvas
    # the file is made, but Canvas will not know Blackboard's usernames: said in a header, and on the page
    assert "Blackboard download" in canvas_file.headers["grader-warning"]
    page = client.get(f"/batches/{response.json()['id']}").text
    assert "Canvas will not recognise" in page and "Blackboard will not recognise" not in page
    feedback = zipfile.ZipFile(io.BytesIO(client.get(f"{location}/feedback.zip").content))
    assert len(feedback.namelist()) == 4
    similarity = client.get(f"{location}/similarity").json()
    assert similarity["compared"] >= 2 and isinstance(similarity["pairs"], list)


def test_batch_layout_can_be_forced(client: TestClient) -> None:
    archive = zip_bytes({"ada/layers.py": (EXAMPLES / "correct.py").read_bytes(),
                         "bob/layers.py": (EXAMPLES / "starter.py").read_bytes()})
    detected = client.post("/api/v1/batches", files=upload("class.zip", archive)).json()
    assert detected["layout"] == "students" and detected["progress"]["total"] == 2
    forced = client.post("/api/v1/batches", files=upload("class.zip", archive), data={"layout": "student"}).json()
    assert forced["layout"] == "student" and forced["progress"]["total"] == 1
    assert_problem(client.post("/api/v1/batches", files=upload("class.zip", archive), data={"layout": "moodle"}),
                   422, "layout")


def test_batch_list_is_newest_first(client: TestClient) -> None:
    ids = [client.post("/api/v1/batches", files=upload(n)).json()["id"] for n in ("correct.py", "starter.py")]
    listed = client.get("/api/v1/batches").json()["batches"]
    assert [b["id"] for b in listed] == ids[::-1]
    assert {"created_at", "filename", "layout", "status", "progress"} <= set(listed[0])
    assert client.get("/api/v1/batches?limit=1&offset=1").json()["batches"][0]["id"] == ids[0]


def test_unreadable_batch_upload_is_a_4xx(client: TestClient) -> None:
    assert_problem(client.post("/api/v1/batches", files=upload("notes.txt", b"hello")), 422, "notes.txt")
    assert_problem(client.post("/api/v1/batches", files=upload("layers.py", b"")), 422, "empty")


def test_csv_cells_cannot_run_as_spreadsheet_formulas(client: TestClient) -> None:
    graded = client.post("/api/v1/batches", files=upload("-cmd.py", (EXAMPLES / "correct.py").read_bytes()))
    wait_for_batch(client, graded.headers["location"])
    text = client.get(f"{graded.headers['location']}/grades.csv").text
    assert "\r\n'-cmd," in text


# --- regrading -------------------------------------------------------------------------------------------


def test_regrade_submission_keeps_history_and_one_final_record(client: TestClient) -> None:
    graded = client.post("/api/v1/grade", files=upload("grad_b_keepdims.py")).json()
    again = client.post(f"/api/v1/submissions/{graded['id']}/regrade")
    assert again.status_code == 202 and again.headers["location"] == f"/api/v1/submissions/{graded['id']}"
    detail = wait_for(lambda: client.get(again.headers["location"]).json(), 30, "the regrade to be recorded",
                      interval=0.05, until=lambda body: body["status"] == "graded")
    assert [h["generation"] for h in detail["history"]] == [1, 2]
    assert detail["result"]["score"] == graded["score"] == 9


def test_regrade_batch_grades_every_student_again(client: TestClient) -> None:
    location = client.post("/api/v1/batches", files=upload("relu_ge_zero.py")).headers["location"]
    first = wait_for_batch(client, location)
    response = client.post(f"{location}/regrade")
    assert response.status_code == 202
    second = wait_for_batch(client, location)
    submission = client.get(f"/api/v1/submissions/{second['submissions'][0]['submission_id']}").json()
    assert [h["generation"] for h in submission["history"]] == [1, 2]
    assert second["submissions"][0]["score"] == first["submissions"][0]["score"] == 10


# --- callbacks ---------------------------------------------------------------------------------------------


class Receiver:
    """Plays an LMS endpoint: fails the first attempt, then accepts, remembering what arrived."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.requests: list[httpx.Request] = []
        self.arrived = threading.Event()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if len(self.requests) <= self.failures:
            return httpx.Response(503)
        self.arrived.set()
        return httpx.Response(204)


def test_callback_is_signed_retried_and_recorded(grader: Grader, tmp_path: Path) -> None:
    receiver = Receiver(failures=1)
    options = {"transport": httpx.MockTransport(receiver), "base_delay": 0.05, "poll_seconds": 0.05}
    with service_client(grader, tmp_path, callback_secret="hush", dispatcher_options=options) as test_client:
        response = test_client.post("/api/v1/grade", files=upload("correct.py"),
                                    data={"callback_url": "https://lms.example/hook?x=1"})
        assert response.status_code == 202, response.text
        accepted = response.json()
        assert accepted["status"] == "queued" and response.headers["location"] == accepted["url"]
        assert receiver.arrived.wait(30)
        state = wait_for(lambda: test_client.get(accepted["url"]).json()["callback"], 10,
                         "the callback to be recorded as delivered", interval=0.05,
                         until=lambda callback: callback["state"] == "delivered")
    assert state["attempts"] == 2 and state["last_status"] == 204
    final = receiver.requests[-1]
    assert str(final.url) == "https://lms.example/hook?x=1"
    expected = "sha256=" + hmac.new(b"hush", final.content, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(final.headers["x-grader-signature"], expected)
    body = json.loads(final.content)
    assert body["id"] == accepted["id"] and body["score"] == 10
    assert receiver.requests[0].headers["x-grader-delivery"] == final.headers["x-grader-delivery"]


def test_callback_gives_up_after_the_last_attempt(grader: Grader, tmp_path: Path) -> None:
    receiver = Receiver(failures=100)
    options = {"transport": httpx.MockTransport(receiver), "base_delay": 0.01, "poll_seconds": 0.02,
               "max_attempts": 3}
    with service_client(grader, tmp_path, callback_secret="hush", dispatcher_options=options) as test_client:
        accepted = test_client.post("/api/v1/grade", files=upload("correct.py"),
                                    data={"callback_url": "http://127.0.0.1:9/hook"}).json()
        state = wait_for(lambda: test_client.get(accepted["url"]).json()["callback"] or {}, 20,
                         "the callback to be given up on", interval=0.05,
                         until=lambda callback: callback.get("state") == "failed")
    assert state["attempts"] == 3 and len(receiver.requests) == 3 and "503" in state["last_error"]


def test_callback_needs_a_secret_and_a_real_url(client: TestClient, grader: Grader, tmp_path: Path) -> None:
    assert_problem(client.post("/api/v1/grade", files=upload("correct.py"), data={"callback_url": "https://a.b/c"}),
                   422, "GRADER_CALLBACK_SECRET")
    with service_client(grader, tmp_path / "s", callback_secret="k") as signed:
        for bad in ("ftp://a.b/c", "not a url", "/relative"):
            assert_problem(signed.post("/api/v1/grade", files=upload("correct.py"), data={"callback_url": bad}),
                           422, "callback_url")
