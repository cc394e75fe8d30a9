"""The PostgreSQL path against the real server on 127.0.0.1:5432, in a database of the test's own."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from grader.engine.grading import Grader
from grader.service.jobs import GradeWork, GradingJobs
from grader.store.database import Database, open_database
from tests.conftest import EXAMPLES
from tests.queue_support import grader_env, postgres_database
from tests.service_helpers import service_client, wait_for_batch
from tests.store_support import add_batch, assert_schema_matches_models, result_counts


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A database of the test's own on the GRADER_TEST_POSTGRES server (default postgres@127.0.0.1:5432)."""
    with postgres_database() as url:
        yield url


@pytest.fixture
def pg_database(postgres_url: str) -> Iterator[Database]:
    database = open_database(postgres_url)
    yield database
    database.dispose()


def test_postgres_migrates_to_the_models(pg_database: Database) -> None:
    assert pg_database.engine.dialect.driver == "psycopg"
    assert_schema_matches_models(pg_database)


def test_postgres_concurrent_duplicates_grade_once(pg_database: Database, grader: Grader) -> None:
    ids = add_batch(pg_database, ["correct.py", "typo_arange.py"])
    jobs = GradingJobs(pg_database, grader)
    threads = [threading.Thread(target=jobs.run, args=(GradeWork(i, 1),)) for i in ids for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert result_counts(pg_database) == {(i, 1): 1 for i in ids}


def test_service_on_postgres(postgres_url: str, grader: Grader, tmp_path: Path) -> None:
    client: TestClient
    with service_client(grader, tmp_path, database_url=postgres_url) as client:
        correct = (EXAMPLES / "correct.py").read_bytes()
        graded = client.post("/api/v1/grade", files={"file": ("layers.py", correct)})
        assert graded.status_code == 200 and graded.json()["score"] == 10
        location = client.post("/api/v1/batches", files={
            "file": ("l2.py", (EXAMPLES / "l2_missing_half.py").read_bytes())}).headers["location"]
        batch = wait_for_batch(client, location)
        assert batch["status"] == "done" and batch["submissions"][0]["score"] == 8.5
        stored = client.get(f"/api/v1/submissions/{graded.json()['id']}").json()
        assert stored["result"]["score"] == 10 and stored["source"] == correct.decode()


def test_concurrent_starts_migrate_once(postgres_url: str) -> None:
    # the API and the workers start together against one database: the advisory lock serializes them
    code = "import sys; from grader.store.database import open_database; open_database(sys.argv[1]).dispose()"
    env = grader_env()
    starts = [subprocess.Popen([sys.executable, "-c", code, postgres_url], env=env, stderr=subprocess.PIPE)
              for _ in range(4)]
    failures = [p.stderr.read().decode() for p in starts if p.wait(60) != 0 and p.stderr is not None]
    assert failures == []
    database = open_database(postgres_url)
    assert_schema_matches_models(database)
    database.dispose()


def test_postgres_says_when_a_result_was_already_recorded(pg_database: Database) -> None:
    """The idempotence signal itself: a second record of one generation reports False (psycopg gave
    -1 as the row count of every INSERT ... ON CONFLICT DO NOTHING, which read as an insert)."""
    from grader.store import repository

    new = repository.NewSubmission(student="ada", source=b"x = 1\n")
    with pg_database.transaction() as connection:
        claimed = repository.create_claimed(connection, new)
    report = {"score": 1.0, "max_score": 10.0}
    with pg_database.transaction() as connection:
        assert repository.record_result(connection, claimed, report) is True
    with pg_database.transaction() as connection:
        assert repository.record_result(connection, claimed, report) is False
    with pg_database.session() as session:
        assert repository.record_result(session, claimed, report) is False
    assert result_counts(pg_database) == {(claimed.submission_id, 1): 1}
