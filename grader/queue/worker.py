"""`grader worker`: take work items off the Redis queue, grade them in the sandbox, record them in the database.

One process per machine (or container) grades on one thread per sandbox zygote. A message is
acknowledged only after its result is committed, so a worker killed at any point leaves its work to
be requeued (see `grader.queue.broker`); the unique (submission, generation) result row makes the
second run a no-op. Database outages are waited out inside the job, with one log line per retry.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from grader.engine.assignment import load_assignment
from grader.engine.grading import Grader
from grader.queue.broker import (
    ACTOR_BATCH,
    ACTOR_SINGLE,
    MAX_RETRIES,
    PRIORITIES,
    QUEUE_BATCH,
    QUEUE_SINGLE,
    QueueConfig,
    make_broker,
    make_reaper,
    reap,
)
from grader.service.jobs import GradeWork, GradingJobs, Outcome
from grader.settings import Settings
from grader.store.database import Database, DatabaseError, database_unavailable, one_line, open_database, safe_url

log = logging.getLogger(__name__)

HEARTBEAT_FILE = Path("/tmp/grader-worker.heartbeat")  # noqa: S108 (read by the container healthcheck)
HEARTBEAT_MAX_AGE = 60.0
DB_RETRY_WINDOW = 120.0  # seconds a job waits for the database before it goes back to the queue
MAX_DB_DELAY = 15.0
SUMMARY_INTERVAL = 30.0
# Two grading threads per sandbox process: while one waits on the database (claim, record: a few
# commits), the other keeps the sandbox busy. The pool itself never runs more than one job per process.
THREADS_PER_SANDBOX = 2
PREFETCH_PER_THREAD = 4  # messages a worker holds per grading thread; all of them are requeued if it dies
WORKER_POLL_MS = 200  # longest pause of an idle consumer between looks at the queue


class QueueWorker:
    """Runs until `stop()` (SIGTERM or SIGINT in `run_forever`); what it had not started goes back to Redis."""

    def __init__(
        self,
        settings: Settings,
        config: QueueConfig,
        *,
        sandboxes: int | None = None,
        grader: Grader | None = None,
        heartbeat_file: Path | None = HEARTBEAT_FILE,
    ) -> None:
        self.settings = settings
        self.config = config
        self.sandboxes = sandboxes
        self.heartbeat_file = heartbeat_file
        self.stopping = threading.Event()
        self._given_grader = grader
        self._grader = grader
        self._database: Database | None = None
        self._jobs: GradingJobs | None = None
        self._broker: RedisBroker | None = None
        self._reaper: RedisBroker | None = None
        self._worker: dramatiq.Worker | None = None
        self._counts = {"graded": 0, "duplicate": 0, "failed": 0}
        self._counts_lock = threading.Lock()

    # -- start and stop ---------------------------------------------------------------------------

    def start(self) -> None:
        self._database = self._open_database()
        if self._grader is None:
            self._grader = Grader(
                load_assignment(self.settings.assignment_dir),
                workers=self.sandboxes or self.settings.workers or None,
                allow_insecure=self.settings.insecure_no_sandbox,
            )
        threads = THREADS_PER_SANDBOX * self._grader.pool.size
        self._jobs = GradingJobs(self._database, self._grader, on_outcome=self._count)
        self._broker = make_broker(self.config)
        self._reaper = make_reaper(self.config)
        for actor_name, queue_name in ((ACTOR_SINGLE, QUEUE_SINGLE), (ACTOR_BATCH, QUEUE_BATCH)):
            dramatiq.actor(
                broker=self._broker,
                actor_name=actor_name,
                queue_name=queue_name,
                priority=PRIORITIES[actor_name],
                max_retries=MAX_RETRIES,
            )(self._grade)
        # Dramatiq's consumer fetches only when fewer than `prefetch` messages are in hand and then backs
        # off for up to `worker_timeout`: its default (2 per thread, 1 s) leaves a thread idle for most of
        # that pause after a run of ~50 ms gradings. A deeper prefetch and a short poll keep it busy.
        self._worker = dramatiq.Worker(self._broker, worker_threads=threads, worker_timeout=WORKER_POLL_MS)
        self._worker.queue_prefetch = PREFETCH_PER_THREAD * threads
        self._worker.start()
        layers = ", ".join(name for name, on in self._grader.layers.items() if on)
        log.info("worker %s (broker id %s) grading with %d sandbox processes (%d threads) from %s (namespace %r); "
                 "database %s; sandbox layers: %s", os.getpid(), self._broker.broker_id, self._grader.pool.size,
                 threads, self.config.safe_url,
                 self.config.namespace, self._safe_database_url(), layers)

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the submissions being graded, hand prefetched ones back to Redis, close the sandbox."""
        self.stopping.set()
        if self._worker is not None:
            self._worker.stop(timeout=int(timeout * 1000))
            self._worker = None
        for broker in (self._broker, self._reaper):
            if broker is not None:
                broker.close()
        if self._grader is not None and self._given_grader is None:
            self._grader.close()
        if self._database is not None:
            self._database.dispose()
        log.info("worker %s stopped (%s)", os.getpid(), self._summary())

    def run_forever(self) -> None:
        """Start, then reap dead workers and beat until SIGTERM or SIGINT."""
        previous: dict[int, Callable[[int, FrameType | None], object] | int | None] = {}

        def request_stop(signum: int, _frame: FrameType | None) -> None:
            log.info("worker %s received %s; finishing the submissions in hand", os.getpid(),
                     signal.Signals(signum).name)
            self.stopping.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, request_stop)
        try:
            self.start()
            self.maintain_until_stopped()
        except DatabaseError:
            if not self.stopping.is_set():
                raise
            log.info("worker %s stopped while waiting for the database", os.getpid())  # no traceback: asked to
        finally:
            self.stop()
            for restored, handler in previous.items():
                signal.signal(restored, handler)

    def maintain_until_stopped(self) -> None:
        """Every few seconds: requeue the work of workers that stopped beating, and beat for the healthcheck."""
        interval = max(0.5, min(5.0, self.config.heartbeat_timeout / 3))
        next_summary = time.monotonic() + SUMMARY_INTERVAL
        redis_down_since: float | None = None
        while not self.stopping.wait(interval):
            try:
                assert self._reaper is not None
                reap(self._reaper)
                if redis_down_since is not None:
                    log.info("Redis at %s is reachable again after %.0f s", self.config.safe_url,
                             time.monotonic() - redis_down_since)
                    redis_down_since = None
            except redis.RedisError as error:
                if redis_down_since is None:
                    redis_down_since = time.monotonic()
                log.warning("Redis at %s is unavailable (%s); graded results are still recorded, "
                            "new work resumes when it is back", self.config.safe_url, one_line(error))
            else:
                self._beat()  # healthy means able to take work: not while Redis is out of reach
            if time.monotonic() >= next_summary:
                next_summary = time.monotonic() + SUMMARY_INTERVAL
                log.info("worker %s: %s", os.getpid(), self._summary())

    # -- one work item ----------------------------------------------------------------------------

    def _grade(self, submission_id: int, batch_id: int | None) -> None:
        """The actor: run one work item, waiting out a database outage for up to DB_RETRY_WINDOW."""
        assert self._jobs is not None
        work = GradeWork(submission_id, batch_id)
        deadline = time.monotonic() + DB_RETRY_WINDOW
        delay = 1.0
        failed_at: float | None = None  # the first failure: how long the outage lasted for this item
        while True:
            try:
                outcome = self._jobs.run(work)
                if failed_at is not None:
                    log.info("database reachable again after %.0f s; submission %s is recorded",
                             time.monotonic() - failed_at, submission_id)
                break
            except Exception as error:
                if not database_unavailable(error):
                    raise
                if failed_at is None:
                    failed_at = time.monotonic()
                if self.stopping.is_set() or time.monotonic() + delay > deadline:
                    log.warning("database still unavailable (%s); submission %s goes back to the queue",
                                one_line(error), submission_id)
                    raise dramatiq.Retry("database unavailable", delay=int(MAX_DB_DELAY * 1000)) from None
                log.warning("database unavailable while grading submission %s (%s); retrying in %.0f s",
                            submission_id, one_line(error), delay)
                self.stopping.wait(delay)
                delay = min(delay * 2, MAX_DB_DELAY)
        if outcome.retry:
            raise dramatiq.Retry(f"grading submission {submission_id} failed: {outcome.error}", delay=2_000)

    def _count(self, outcome: Outcome) -> None:
        key = "failed" if outcome.error else "graded" if outcome.recorded else "duplicate"
        with self._counts_lock:
            self._counts[key] += 1

    def _summary(self) -> str:
        with self._counts_lock:
            counts = dict(self._counts)
        return (f"{counts['graded']} graded, {counts['duplicate']} already graded elsewhere, "
                f"{counts['failed']} failed so far")

    # -- helpers ----------------------------------------------------------------------------------

    def _open_database(self) -> Database:
        """Open (and migrate) the database, waiting for it to come up: workers often start first."""
        delay = 1.0
        while True:
            try:
                return open_database(self.settings.sqlalchemy_url)
            except DatabaseError as error:
                if self.stopping.is_set():
                    raise
                log.warning("%s; retrying in %.0f s", error, delay)
                self.stopping.wait(delay)
                delay = min(delay * 2, MAX_DB_DELAY)

    def _safe_database_url(self) -> str:
        return safe_url(self.settings.sqlalchemy_url)

    def _beat(self) -> None:
        if self.heartbeat_file is None:
            return
        try:
            self.heartbeat_file.touch()
        except OSError as error:
            log.warning("cannot write the heartbeat file %s: %s", self.heartbeat_file, error)


class _BrokerOutageNoise(logging.Filter):
    """Dramatiq's consumers report a Redis outage at CRITICAL, from every consumer thread, every few
    seconds, and each restart at INFO; the worker reports the outage itself, once, as a warning, and
    says when Redis is back."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("dramatiq.worker.ConsumerThread"):
            return True
        return not record.getMessage().startswith(("Consumer encountered a connection error", "Restarting consumer"))


def quiet_broker_outages() -> None:
    """Drop Dramatiq's per-thread outage messages from the log (the handlers of the root logger)."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(_BrokerOutageNoise())


def heartbeat_is_fresh(path: Path = HEARTBEAT_FILE, max_age: float = HEARTBEAT_MAX_AGE) -> bool:
    """True when a worker on this machine ran its maintenance loop in the last `max_age` seconds."""
    try:
        return time.time() - path.stat().st_mtime < max_age
    except OSError:
        return False
