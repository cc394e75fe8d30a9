"""Throughput of grading through the Redis queue: 1,000 submissions with one and two `grader worker`s.

Needs the machine's Redis (127.0.0.1:6379) and PostgreSQL (127.0.0.1:5432, user postgres, trust auth);
each run uses its own key prefix and its own database, dropped afterwards. Run from the repository root:

    python benchmarks/queue_throughput.py [--submissions 1000] [--json results.json]

The batch is stored straight into the database (as `POST /api/v1/batches` would), the work items are
queued, and the clock runs from the first item queued to the last result committed, with the workers
already started. Results go to docs/deploy.md by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import redis  # noqa: E402
from sqlalchemy import text  # noqa: E402

from grader.queue.broker import QueueConfig  # noqa: E402
from grader.queue.redis_queue import RedisJobQueue  # noqa: E402
from grader.service.jobs import GradeWork  # noqa: E402
from grader.store import repository  # noqa: E402
from grader.store.database import open_database  # noqa: E402

EXAMPLES = ROOT / "submissions" / "examples"
SCRATCH = Path(tempfile.mkdtemp(prefix="grader-bench-"))
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/4"
# Honest work and the typical mistakes; a hang (3 s per function) or a memory blow-up are rare in a
# real class and are measured separately below.
SLOW = ("hang_in_relu_forward.py", "memory_blowup_in_l2.py")


def class_mix(count: int) -> list[tuple[str, bytes]]:
    names = sorted(n for n in json.loads((EXAMPLES / "expected.json").read_text()) if n not in SLOW)
    sources = [(EXAMPLES / n).read_bytes() for n in names]
    return [(f"student{i:05d}", sources[i % len(sources)]) for i in range(count)]


def run(workers: int, sandboxes: int, submissions: int) -> dict[str, float]:
    name = f"grader_bench_{uuid.uuid4().hex[:10]}"
    namespace = f"grader-bench-{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    database_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADER_")}
    env.update(PYTHONPATH=str(ROOT), GRADER_DATABASE_URL=database_url, GRADER_QUEUE_URL=REDIS_URL,
               GRADER_QUEUE_NAMESPACE=namespace, GRADER_WORKERS=str(sandboxes), GRADER_DATA_DIR=str(SCRATCH / "data"))
    database = open_database(database_url)
    processes: list[subprocess.Popen[bytes]] = []
    logs = [SCRATCH / f"worker{i}.log" for i in range(workers)]
    queue = RedisJobQueue(QueueConfig(url=REDIS_URL, namespace=namespace))
    try:
        for i in range(workers):
            with open(logs[i], "wb") as log:
                processes.append(subprocess.Popen(
                    [sys.executable, "-m", "grader.cli", "worker", "--heartbeat-file", str(SCRATCH / f"{i}.beat")],
                    env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + 120
        while not all("grading with" in log.read_text(errors="replace") for log in logs):
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                raise RuntimeError(f"a worker did not start; see {SCRATCH}/worker*.log")
            time.sleep(0.2)
        students = [repository.NewSubmission(student=s, source=src) for s, src in class_mix(submissions)]
        with database.session() as session:
            batch = repository.create_batch(session, filename="bench.zip", layout="students", upload_sha256="0" * 64,
                                            upload_path="bench.zip", warnings=[], students=students)
            work = [GradeWork(s.id, batch.id) for s in batch.submissions]
        started = time.monotonic()
        for item in work:
            queue.submit(item)
        queue.flush(60)
        queued = time.monotonic() - started
        done = 0
        while done < submissions:
            time.sleep(0.05)
            with database.engine.connect() as connection:
                done = connection.execute(text("SELECT count(*) FROM results")).scalar_one()
            if time.monotonic() - started > 1800:
                raise RuntimeError(f"only {done} of {submissions} graded after 30 minutes")
        seconds = time.monotonic() - started
        with database.engine.connect() as connection:
            duplicates = connection.execute(text(
                "SELECT count(*) FROM (SELECT submission_id FROM results GROUP BY submission_id, generation "
                "HAVING count(*) > 1) d")).scalar_one()
        return {"workers": workers, "sandboxes_each": sandboxes, "submissions": submissions,
                "seconds": round(seconds, 2), "per_second": round(submissions / seconds, 1),
                "enqueue_seconds": round(queued, 2), "duplicate_records": duplicates}
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        queue.close(timeout=2)
        database.dispose()
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
        if keys:
            client.delete(*keys)
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def in_process(submissions: int, threads: int) -> dict[str, float]:
    """The same class graded by `Grader.grade_many` in one process: no queue, no database."""
    from grader.engine.grading import Grader

    sources = class_mix(submissions)
    with Grader(workers=threads) as grader:
        started = time.monotonic()
        grader.grade_many(sources)
        seconds = time.monotonic() - started
    return {"workers": 0, "sandboxes_each": threads, "submissions": submissions, "seconds": round(seconds, 2),
            "per_second": round(submissions / seconds, 1)}


def slow_submission_seconds() -> dict[str, float]:
    """What one hanging or memory-hungry submission costs a sandbox process."""
    from grader.engine.grading import Grader

    costs = {}
    with Grader(workers=1) as grader:
        for name in SLOW:
            started = time.monotonic()
            grader.grade((EXAMPLES / name).read_bytes())
            costs[name] = round(time.monotonic() - started, 2)
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submissions", type=int, default=1000)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    results: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "in_process": [in_process(args.submissions, 1), in_process(args.submissions, 2)],
        "queue": [run(1, 1, args.submissions), run(2, 1, args.submissions), run(1, 2, args.submissions)],
        "slow_submissions": slow_submission_seconds(),
    }
    results["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    print(f"machine: {results['machine']}; 1-minute load average before and after: {results['load_average']}")
    print("| setup | sandbox processes | submissions | seconds | submissions/s |")
    print("|---|---|---|---|---|")
    for row in results["in_process"]:  # type: ignore[attr-defined]
        print(f"| in process, no queue | {row['sandboxes_each']} | {row['submissions']} | {row['seconds']} "
              f"| {row['per_second']} |")
    for row in results["queue"]:  # type: ignore[attr-defined]
        processes = row["workers"] * row["sandboxes_each"]
        print(f"| {row['workers']} worker(s) x {row['sandboxes_each']} sandbox process(es) | {processes} | "
              f"{row['submissions']} | {row['seconds']} | {row['per_second']} |")
    print("duplicate final records:", [row["duplicate_records"] for row in results["queue"]])  # type: ignore
    print("slow submissions (seconds of one sandbox process):", results["slow_submissions"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
