"""A batch survives the service being killed mid-way: it resumes on restart, each student graded once."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx

from tests.conftest import EXAMPLES
from tests.intake_fixtures import zip_bytes
from tests.queue_support import wait_for
from tests.service_helpers import LiveServer, wait_for_batch


def batch_progress(server: LiveServer, location: str) -> dict[str, int]:
    response = httpx.get(f"{server.url}{location}", timeout=10)
    assert response.status_code == 200, response.text
    progress = response.json()["progress"]
    assert isinstance(progress, dict)
    return progress


def test_killed_mid_batch_resumes_and_grades_each_student_once(tmp_path: Path) -> None:
    correct = (EXAMPLES / "correct.py").read_bytes()
    hang = (EXAMPLES / "hang_in_relu_forward.py").read_bytes()  # about 3 s each: keeps the batch busy
    students = {f"slow{i}/layers.py": hang for i in range(4)}
    students.update({f"fast{i}/layers.py": correct + f"\n# student {i}\n".encode() for i in range(8)})
    data = tmp_path / "data"
    server = LiveServer(data, tmp_path / "server.log", GRADER_WORKERS="2").start()
    try:
        accepted = httpx.post(f"{server.url}/api/v1/batches", files={"file": ("class.zip", zip_bytes(students))},
                              timeout=30)
        assert accepted.status_code == 202, accepted.text
        location = accepted.headers["location"]
        progress = wait_for(lambda: batch_progress(server, location), 60, "the batch to start",
                            interval=0.05, until=lambda progress: progress["done"] >= 1)
        server.kill()  # SIGKILL, mid-batch: no chance to clean up
        assert progress["done"] < progress["total"] == 12, "the batch finished before the kill; make it slower"
        server.start()
        with httpx.Client(base_url=server.url, timeout=10) as client:
            state = wait_for_batch(client, location, timeout=120)
    finally:
        server.stop()
    assert state["status"] == "done" and state["progress"] == {"done": 12, "total": 12}
    rows = state["submissions"]
    assert isinstance(rows, list)
    scores = {row["student"]: row["score"] for row in rows}
    assert scores == {**{f"slow{i}": 8.5 for i in range(4)}, **{f"fast{i}": 10 for i in range(8)}}
    with sqlite3.connect(data / "grader.db") as db:
        results = db.execute("SELECT submission_id, generation, COUNT(*) FROM results GROUP BY 1, 2").fetchall()
        submissions = db.execute("SELECT COUNT(*) FROM submissions").fetchone()[0]
    assert submissions == 12  # accepted once, nothing duplicated by the restart
    assert len(results) == 12 and all(generation == 1 and count == 1 for _, generation, count in results)
    assert "resumed" in server.log()
