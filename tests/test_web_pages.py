"""The page routes without a browser: what a missing batch or submission shows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from grader.engine.grading import Grader
from tests.intake_fixtures import example, zip_bytes
from tests.service_helpers import service_client, wait_for_batch


@pytest.mark.parametrize(
    ("path", "what"),
    [("/batches/99", "batch 99"), ("/batches/99/results", "batch 99"), ("/batches/99/similarity", "batch 99"),
     ("/submissions/5", "submission 5")],
)
def test_a_missing_page_is_a_404_that_says_what_is_missing(tmp_path: Path, grader: Grader, path: str,
                                                           what: str) -> None:
    with service_client(grader, tmp_path) as client:
        response = client.get(path)
    assert response.status_code == 404
    assert f"There is no {what} here." in response.text


def test_students_with_nothing_graded_stand_out_and_a_students_page_says_what_intake_found(
    tmp_path: Path, grader: Grader
) -> None:
    archive = zip_bytes(
        {"ada/layers.py": example("correct"), "ada/neuralnet/layers.py": example("typo_arange"),
         "carl/notes.txt": b"see attached", "dan/": b""},
        symlinks={"bob/layers.py": "/etc/passwd"},
    )
    with service_client(grader, tmp_path) as client:
        accepted = client.post("/api/v1/batches", files={"file": ("class.zip", archive)})
        batch = wait_for_batch(client, accepted.headers["location"])
        rows = {row["student"]: row for row in batch["submissions"]}
        # bob's only file was a symbolic link: he is in the results all the same, as unreadable
        assert rows["bob"]["status"] == "unreadable" and "symbolic link" in rows["bob"]["detail"]
        page = client.get(f"/batches/{accepted.json()['id']}").text
        student_page = client.get(f"/submissions/{rows['ada']['submission_id']}").text
    row_class = {student: cls for cls, student in re.findall(r'<tr class="(\w*)">\s*<td data-value="(\w+)"', page)}
    assert row_class == {"ada": "", "bob": "flagged", "carl": "flagged", "dan": "flagged"}
    assert '<span class="badge">unreadable</span>' in page and '<span class="badge">not found</span>' in page
    assert "2 need a look" in page  # bob and carl; dan sent nothing, which the table shows but needs no look
    # which of ada's two files was graded, and why, on her own page
    assert "found 2 copies of layers.py" in student_page and "File graded:" in student_page


def test_the_batch_page_makes_exports_that_fill_an_existing_column(tmp_path: Path, grader: Grader) -> None:
    """The LMS files can carry the column (Blackboard) or assignment (Canvas) id, as the API takes it."""
    archive = zip_bytes({"ada/layers.py": example("correct"), "bob/layers.py": example("starter"),
                         "carl/notes.txt": b"-"})
    with service_client(grader, tmp_path) as client:
        accepted = client.post("/api/v1/batches", files={"file": ("class.zip", archive)})
        wait_for_batch(client, accepted.headers["location"])
        page = client.get(f"/batches/{accepted.json()['id']}").text
        forms = re.findall(r'<form class="export-form" method="get" action="([^"]+)">(.*?)</form>', page, re.S)
        assert [(action.rsplit("/", 1)[1], re.findall(r'name="(\w+)"', body)) for action, body in forms] == [
            ("grades-blackboard.csv", ["column_id", "missing_as_zero"]),
            ("grades-canvas.csv", ["assignment_id", "missing_as_zero"]),
        ]
        # what the Blackboard form sends, as a browser sends it
        csv = client.get(f"{forms[0][0]}?column_id=123456&missing_as_zero=true").text.splitlines()
    assert csv[0].endswith("|123456\"")
    assert [line for line in csv if '"carl"' in line] == ['"","","carl","0"']  # nothing to grade: 0, as asked


def test_signing_in_returns_to_the_page_that_asked_and_signing_out_is_offered(tmp_path: Path, grader: Grader) -> None:
    with service_client(grader, tmp_path, api_tokens="a-token-for-the-ta-0123456789") as client:
        asked = client.get("/batches/7?tab=x", follow_redirects=False)
        assert asked.status_code == 303 and asked.headers["location"] == "/login?next=%2Fbatches%2F7%3Ftab%3Dx"
        form = client.get(asked.headers["location"]).text
        assert '<input type="hidden" name="next" value="/batches/7?tab=x">' in form
        assert "Sign out" not in form
        wrong = client.post("/login", data={"token": "nope", "next": "/batches/7"}, headers={"accept": "text/html"},
                            follow_redirects=False)
        assert wrong.headers["location"] == "/login?error=invalid&next=%2Fbatches%2F7"  # the way back is kept
        assert 'value="/"' in client.get("/login?next=//evil.example/x").text  # only paths on this site
        signed = client.post("/login", data={"token": "a-token-for-the-ta-0123456789", "next": "/batches/7?tab=x"},
                             follow_redirects=False)
        assert signed.headers["location"] == "/batches/7?tab=x"
        home = client.get("/").text
        assert '<form method="post" action="/logout"' in home and "Sign out" in home
        client.post("/logout")
        client.cookies.clear()
        assert client.get("/", follow_redirects=False).status_code == 303
