"""The store: migrations match the models, work items are idempotent, regrades keep one final record."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from grader.engine.grading import Grader
from grader.service.jobs import GradeWork, GradingJobs
from grader.store import database as database_module
from grader.store import repository
from grader.store.database import Database, alembic_config, migrate, normalize_url, open_database
from grader.store.models import Blob, Submission
from tests.store_support import add_batch, assert_schema_matches_models, result_counts


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    db = open_database(f"sqlite:///{tmp_path / 'grader.db'}")
    yield db
    db.dispose()


def test_migrations_build_exactly_the_models(database: Database) -> None:
    assert_schema_matches_models(database)
    migrate(database.engine)  # a second start is a no-op
    assert len(ScriptDirectory.from_config(alembic_config(database.engine)).get_heads()) == 1


def test_postgres_urls_use_psycopg_3() -> None:
    assert normalize_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("sqlite:///x.db") == "sqlite:///x.db"


def test_same_bytes_are_stored_once(database: Database) -> None:
    ids = add_batch(database, ["correct.py", "correct.py", "starter.py"])
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(Blob)) == 2
        shas = [session.get(Submission, i).source_sha256 for i in ids]  # type: ignore[union-attr]
    assert shas[0] == shas[1] != shas[2]


def test_a_report_stored_with_infinity_is_still_read(database: Database) -> None:
    """The standard encoder wrote a non-finite `measured` (a gradient check whose difference
    overflowed) as Infinity, which orjson does not read: such rows must still load (once, the
    submission, its batch and its exports answered 500), and new ones store null."""
    (submission_id,) = add_batch(database, ["correct.py"])
    with database.session() as session:
        work = repository.claim(session, submission_id)
        assert work is not None
        repository.record_result(session, work, {"score": 9.5, "max_score": 10.0, "measured": float("inf")})
    with database.engine.begin() as connection:
        stored = connection.exec_driver_sql("SELECT report FROM results").scalar_one()
        assert stored == '{"score":9.5,"max_score":10.0,"measured":null}'
        connection.exec_driver_sql(
            "UPDATE results SET report = ?", ('{"score": 9.5, "max_score": 10.0, "measured": Infinity}',))
    with database.session() as session:
        submission = session.get(Submission, submission_id)
        assert submission is not None
        result = repository.current_result(submission)
        assert result is not None and result.report["measured"] == float("inf")


def test_a_writer_waits_for_the_write_lock_no_longer_than_sqlite_would(database: Database,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A thread waiting behind another of its process's transactions gives up after SQLite's own
    busy timeout with SQLite's own error (once, it could wait that long twice: on this process's lock,
    then in SQLite's busy handler)."""
    monkeypatch.setattr(database_module, "BUSY_SECONDS", 0.2)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with database.session():
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(10)
    started = time.monotonic()
    try:
        with pytest.raises(OperationalError, match="database is locked"), database.session():
            pass
        waited = time.monotonic() - started
    finally:
        release.set()
        holder.join()
    assert 0.2 <= waited < 5
    with database.session() as session:  # the lock is free again
        assert session.scalar(select(func.count()).select_from(Blob)) == 0


def test_a_work_item_run_twice_grades_once(database: Database, grader: Grader) -> None:
    (submission_id,) = add_batch(database, ["grad_b_keepdims.py"])
    jobs = GradingJobs(database, grader)
    first = jobs.run(GradeWork(submission_id, 1))
    second = jobs.run(GradeWork(submission_id, 1))
    assert first.recorded and first.report is not None and first.report.score == 9
    assert second.report is None and not second.recorded  # nothing left to do: not graded again
    assert result_counts(database) == {(submission_id, 1): 1}


def test_concurrent_duplicates_leave_one_final_record(database: Database, grader: Grader) -> None:
    ids = add_batch(database, ["correct.py", "relu_ge_zero.py", "l2_missing_half.py"])
    jobs = GradingJobs(database, grader)
    barrier = threading.Barrier(6)

    def run(submission_id: int) -> None:
        barrier.wait()
        jobs.run(GradeWork(submission_id, 1))

    threads = [threading.Thread(target=run, args=(i,)) for i in ids for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert result_counts(database) == {(i, 1): 1 for i in ids}
    with database.session() as session:
        assert {session.get(Submission, i).state for i in ids} == {"graded"}  # type: ignore[union-attr]


def test_regrade_adds_a_generation_and_a_stale_run_cannot_overwrite_it(database: Database, grader: Grader) -> None:
    (submission_id,) = add_batch(database, ["l2_missing_half.py"])
    jobs = GradingJobs(database, grader)
    with database.session() as session:
        stale = repository.claim(session, submission_id)  # a run of generation 1 that is slow to finish
    assert stale is not None and stale.generation == 1
    with database.session() as session:
        submission = repository.get_submission(session, submission_id)
        assert submission is not None
        assert repository.request_regrade(session, [submission]) == [submission_id]
    report = grader.grade(stale.source, student=stale.student)
    with database.session() as session:
        assert repository.record_result(session, stale, report.model_dump(mode="json"))
        submission = repository.get_submission(session, submission_id)
        assert submission is not None and submission.state == "queued"  # generation 2 still to grade
        assert repository.current_result(submission) is None
    assert jobs.run(GradeWork(submission_id, 1)).recorded
    with database.session() as session:
        submission = repository.get_submission(session, submission_id)
        assert submission is not None and submission.state == "graded"
        current = repository.current_result(submission)
        assert current is not None and current.generation == 2 and current.score == 8.5
    assert result_counts(database) == {(submission_id, 1): 1, (submission_id, 2): 1}


def test_interrupted_runs_are_resumed(database: Database) -> None:
    ids = add_batch(database, ["correct.py", "starter.py", "typo_arange.py"])
    with database.session() as session:
        repository.claim(session, ids[0])  # was running when the process stopped
    with database.session() as session:
        assert repository.pending_work(session) == [(i, 1) for i in ids]
        assert {s.state for s in session.scalars(select(Submission))} == {"queued"}


def test_nothing_to_grade_is_skipped_and_counts_as_done(database: Database) -> None:
    students = [repository.NewSubmission(student="ghost", source=None, intake_status="no_file", detail="no file"),
                repository.NewSubmission(student="ada", source=b"x = 1\n")]
    with database.session() as session:
        batch = repository.create_batch(session, filename="c.zip", layout="blackboard", upload_sha256="0" * 64,
                                        upload_path="/x", warnings=[], students=students)
        progress = repository.progress(session, [batch.id])[batch.id]
        assert [s.state for s in batch.submissions] == ["skipped", "queued"]
        assert repository.claim(session, batch.submissions[0].id) is None
    assert (progress.done, progress.total, progress.status) == (1, 2, "queued")


@pytest.mark.parametrize(
    ("states", "status"),
    [
        ({"queued": 3}, "queued"),
        ({"queued": 2, "running": 1}, "running"),
        ({"queued": 2, "graded": 1}, "running"),
        ({"graded": 2, "skipped": 1}, "done"),
        ({"graded": 2, "error": 1}, "failed"),
        ({}, "done"),
    ],
)
def test_batch_status_follows_its_students(states: dict[str, int], status: str) -> None:
    assert repository.batch_progress(Counter(states)).status == status


def test_a_plain_transaction_commits_on_success_and_rolls_back_on_error(database: Database) -> None:
    new = repository.NewSubmission(student="ada", source=b"x = 1\n")
    with database.transaction() as connection:
        claimed = repository.create_claimed(connection, new)
    with pytest.raises(RuntimeError), database.transaction() as connection:
        repository.record_result(connection, claimed, {"score": 1.0, "max_score": 10.0})
        raise RuntimeError("after the writes")
    with database.session() as session:
        stored = repository.get_submission(session, claimed.submission_id)
        assert stored is not None and stored.student == "ada" and stored.state == "running"
        assert repository.current_result(stored) is None
    with database.transaction() as connection:
        assert repository.record_result(connection, claimed, {"score": 1.0, "max_score": 10.0})
    with database.session() as session:
        stored = repository.get_submission(session, claimed.submission_id)
        assert stored is not None and stored.state == "graded"
        result = repository.current_result(stored)
        assert result is not None and result.score == 1.0
