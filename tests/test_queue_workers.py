"""Two real `grader worker` processes share a batch submitted to a live `grader serve` on the real Redis
and PostgreSQL; one is SIGKILLed mid-job and the batch still comes back complete, each student graded once."""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import redis
from sqlalchemy import create_engine, text

from tests.queue_support import (
    build_class_zip,
    grader_env,
    postgres_database,
    redis_namespace,
    start_grader,
    stop_process,
    wait_for,
)
from tests.service_helpers import LiveServer

pytestmark = pytest.mark.timeout(240)

BROKER_ID = re.compile(r"broker id ([0-9a-f-]{36})")


def _worker_broker_id(log: Path) -> str | None:
    match = BROKER_ID.search(log.read_text(errors="replace")) if log.exists() else None
    return match.group(1) if match else None


def test_batch_survives_a_worker_killed_mid_job(tmp_path: Path) -> None:
    with redis_namespace() as (redis_url, namespace), postgres_database() as database_url:
        shared = {
            "GRADER_QUEUE_URL": redis_url,
            "GRADER_QUEUE_NAMESPACE": namespace,
            "GRADER_QUEUE_HEARTBEAT_TIMEOUT": "3",
            "GRADER_DATABASE_URL": database_url,
            "GRADER_WORKERS": "1",
        }
        env = grader_env(GRADER_DATA_DIR=str(tmp_path / "data"), **shared)
        logs = [tmp_path / "worker0.log", tmp_path / "worker1.log"]
        api = LiveServer(tmp_path / "data", tmp_path / "api.log", **shared)
        workers = [
            start_grader(["worker", "--heartbeat-file", str(tmp_path / f"w{i}.beat")], env, logs[i]) for i in range(2)
        ]
        client = redis.Redis.from_url(redis_url)
        try:
            api.start(timeout=90)  # the workers start meanwhile
            broker_ids = [wait_for(cast("Callable[[], str | None]", lambda log=log: _worker_broker_id(log)), 90,
                                   f"{log.name} to start") for log in logs]

            # 3 copies of every sample: the hanging ones keep a worker busy for seconds at a time
            archive = tmp_path / "class.zip"
            expected = build_class_zip(archive, copies=3)
            response = httpx.post(f"{api.url}/api/v1/batches", files={"file": ("class.zip", archive.read_bytes())},
                                  timeout=60)
            assert response.status_code == 202, response.text
            batch_id = response.json()["id"]
            time.sleep(1.0)

            # Kill worker 0 while it holds work it has claimed in the database and not yet recorded.
            engine = create_engine(database_url)
            acks = f"{namespace}:__acks__.{broker_ids[0]}.grading-batch"

            def held_running() -> tuple[set[int], set[int]] | None:
                held = set()
                for message_id in client.smembers(acks):
                    data = client.hget(f"{namespace}:grading-batch.msgs", message_id)
                    if data is not None:
                        held.add(int(json.loads(data)["args"][0]))
                if not held:
                    return None
                with engine.connect() as connection:
                    running = {row[0] for row in connection.execute(
                        text("SELECT id FROM submissions WHERE state = 'running' AND id = ANY(:ids)"),
                        {"ids": list(held)})}
                return (held, running) if running else None

            # Freeze the worker first and look again: between a look and a kill it could finish the
            # submission it held, which would then rightly never be claimed a second time.
            for _ in range(20):
                held, _ = wait_for(held_running, 20, "worker 0 to be in the middle of a submission")
                workers[0].send_signal(signal.SIGSTOP)
                time.sleep(0.2)  # a commit already on its way lands now, or never
                frozen = held_running()
                if frozen is not None:
                    held, interrupted = frozen
                    break
                workers[0].send_signal(signal.SIGCONT)
            else:
                pytest.fail("worker 0 was never caught in the middle of a submission")
            workers[0].send_signal(signal.SIGKILL)
            workers[0].wait(10)

            def finished() -> dict[str, Any] | None:
                detail = httpx.get(f"{api.url}/api/v1/batches/{batch_id}", timeout=10).json()
                return detail if detail["status"] in ("done", "failed") else None

            detail = wait_for(finished, 120, "the batch to finish after the kill", interval=0.5)

            assert detail["status"] == "done"
            assert detail["progress"] == {"done": len(expected), "total": len(expected)}
            scores = {row["student"]: row["score"] for row in detail["submissions"]}
            assert scores == pytest.approx(expected)
            assert all(row["status"] == "graded" for row in detail["submissions"])

            with engine.connect() as connection:
                rows = connection.execute(text(
                    "SELECT s.id, s.attempts, count(r.id) FROM submissions s "
                    "LEFT JOIN results r ON r.submission_id = s.id AND r.generation = s.generation "
                    "WHERE s.batch_id = :batch GROUP BY s.id, s.attempts"), {"batch": batch_id}).all()
            engine.dispose()
            assert len(rows) == len(expected)
            assert all(count == 1 for _, _, count in rows), "every submission has exactly one final record"
            attempts = {submission_id: tries for submission_id, tries, _ in rows}
            # what the killed worker was grading was claimed again, by the survivor, and recorded once
            assert all(attempts[s] >= 2 for s in interrupted)
            assert held <= set(attempts)
            assert not client.exists(acks), "the killed worker's unacknowledged work was handed back"
            survivor_log = logs[1].read_text(errors="replace")
            assert "Traceback" not in survivor_log
        finally:
            for process in workers:
                stop_process(process)
            api.stop()
            client.close()
