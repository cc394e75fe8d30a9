"""Redis and PostgreSQL going away under a running queue: work waits, retries with clear log lines,
and every submission still ends with exactly one correct final record."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from grader.engine.grading import Grader
from grader.queue.broker import QueueConfig, queue_depth
from grader.queue.redis_queue import RedisJobQueue
from grader.queue.worker import QueueWorker
from grader.service.jobs import GradeWork, GradingJobs
from grader.settings import Settings
from grader.store import repository
from grader.store.database import Database, open_database
from tests.conftest import EXAMPLES
from tests.queue_support import (
    RedisServer,
    TcpProxy,
    postgres_database,
    redis_namespace,
    sample_students,
    wait_for,
)

pytestmark = pytest.mark.timeout(180)

# the slow samples (a hang, a memory blow-up) add nothing to an outage test
SLOW = ("hang_in_relu_forward.py", "memory_blowup_in_l2.py")


def _store_batch(database: Database, copies: int) -> tuple[int, list[GradeWork], dict[str, float]]:
    samples = sample_students(copies, skip=SLOW)
    students = [repository.NewSubmission(student=student, source=(EXAMPLES / name).read_bytes())
                for student, (name, _) in samples.items()]
    with database.session() as session:
        batch = repository.create_batch(session, filename="class.zip", layout="students", upload_sha256="0" * 64,
                                        upload_path="class.zip", warnings=[], students=students)
        return batch.id, [GradeWork(s.id, batch.id) for s in batch.submissions], {
            student: score for student, (_, score) in samples.items()}


def _final_records(database: Database, batch_id: int) -> dict[str, list[float]]:
    """student -> the scores recorded for the current generation (exactly one when all went well)."""
    with database.engine.connect() as connection:
        rows = connection.execute(text(
            "SELECT s.student, r.score FROM submissions s JOIN results r "
            "ON r.submission_id = s.id AND r.generation = s.generation WHERE s.batch_id = :batch"),
            {"batch": batch_id}).all()
    records: dict[str, list[float]] = {}
    for student, score in rows:
        records.setdefault(student, []).append(float(score))
    return records


@contextmanager
def running_worker(settings: Settings, config: QueueConfig, grader: Grader, tmp_path: Path) -> Iterator[QueueWorker]:
    worker = QueueWorker(settings, config, grader=grader, heartbeat_file=tmp_path / "beat")
    worker.start()
    loop = threading.Thread(target=worker.maintain_until_stopped, daemon=True)
    loop.start()
    try:
        yield worker
    finally:
        worker.stopping.set()
        loop.join(10)
        worker.stop()


def test_redis_killed_and_restarted_empty_mid_batch(tmp_path: Path, grader: Grader,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    server = RedisServer(tmp_path)
    server.start()
    database = open_database(f"sqlite:///{tmp_path / 'grader.db'}")
    config = QueueConfig(url=server.url, namespace="grader-outage", heartbeat_timeout=3)
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'grader.db'}", queue_url=server.url)
    jobs = GradingJobs(database, grader)
    queue = RedisJobQueue(config, pending=jobs.pending, check_interval=0.5)
    try:
        batch_id, work, expected = _store_batch(database, copies=4)
        first, rest = work[: len(work) // 2], work[len(work) // 2 :]
        for item in first:
            queue.submit(item)
        assert queue.flush(10)
        with running_worker(settings, config, grader, tmp_path):
            wait_for(lambda: len(_final_records(database, batch_id)) >= 5, 30, "the first submissions to be graded")
            wait_for((tmp_path / "beat").exists, 10, "the worker's first heartbeat")
            server.kill()
            for item in rest:  # accepted while Redis is down: they wait in the service
                queue.submit(item)
            time.sleep(1.5)
            assert queue.depth() >= len(rest)
            # the worker's healthcheck fails while it cannot take work (its beat stops)
            beat = (tmp_path / "beat").stat().st_mtime
            time.sleep(1.5)
            assert (tmp_path / "beat").stat().st_mtime == beat
            server.start()  # back, and empty
            records = wait_for(lambda: (r := _final_records(database, batch_id)) and len(r) == len(expected) and r,
                               90, "every submission to be graded after the Redis restart", interval=0.2)
        assert records == {s: [v] for s, v in expected.items()}
        assert (tmp_path / "beat").stat().st_mtime > beat  # beating again
        messages = caplog.text
        assert f"Redis at {server.url} is unavailable" in messages
        assert "came back without its queue" in messages
        assert "reachable again" in messages
    finally:
        queue.close(timeout=2)
        server.kill()
        database.dispose()


def test_postgres_connection_lost_mid_batch(tmp_path: Path, grader: Grader, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with redis_namespace() as (redis_url, namespace), postgres_database() as database_url:
        direct = open_database(database_url)
        target = make_url(database_url)
        proxy = TcpProxy((target.host or "127.0.0.1", target.port or 5432))
        proxy.start()
        via_proxy = target.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        config = QueueConfig(url=redis_url, namespace=namespace, heartbeat_timeout=3)
        settings = Settings(database_url=via_proxy, queue_url=redis_url)
        queue = RedisJobQueue(config)
        try:
            batch_id, work, expected = _store_batch(direct, copies=3)
            for item in work:
                queue.submit(item)
            assert queue.flush(10)
            with running_worker(settings, config, grader, tmp_path):
                wait_for(lambda: len(_final_records(direct, batch_id)) >= 5, 30, "the first submissions to be graded")
                proxy.cut()  # every connection dropped, new ones refused: PostgreSQL is restarting
                time.sleep(3)
                proxy.restore()
                records = wait_for(lambda: (r := _final_records(direct, batch_id)) and len(r) == len(expected) and r,
                                   90, "every submission to be graded after the outage", interval=0.2)
                wait_for(lambda: queue_depth(queue.broker) == 0, 10, "the queue to drain")
            assert records == {s: [v] for s, v in expected.items()}
            assert "database unavailable while grading submission" in caplog.text
        finally:
            queue.close(timeout=2)
            proxy.cut()
            direct.dispose()
