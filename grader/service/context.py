"""What the running service holds: settings, database, grader, job queue, metrics, callback dispatcher."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from anyio import CapacityLimiter

from grader.engine.assignment import load_assignment
from grader.engine.grading import Grader
from grader.service.callbacks import CallbackDispatcher
from grader.service.jobs import GradingJobs, InProcessQueue, JobQueue, Outcome
from grader.service.metrics import ServiceMetrics
from grader.settings import Settings
from grader.store.database import Database, open_database

log = logging.getLogger(__name__)

QueueFactory = Callable[[GradingJobs], JobQueue]


def in_process_queue(jobs: GradingJobs) -> JobQueue:
    return InProcessQueue(jobs.run, workers=jobs.grader.pool.size)


def default_queue(settings: Settings) -> QueueFactory:
    """The embedded in-process pool, or the Redis queue that `grader worker` processes consume
    when GRADER_QUEUE_URL is set."""
    if not settings.queue_url:
        return in_process_queue
    from grader.queue.broker import QueueConfig
    from grader.queue.redis_queue import redis_queue_factory

    return redis_queue_factory(QueueConfig.from_settings(settings))


class ServiceContext:
    """Built at start-up (database migrated, sandbox up, unfinished work resumed), torn down at stop."""

    def __init__(
        self,
        settings: Settings,
        *,
        grader: Grader | None = None,
        make_queue: QueueFactory = in_process_queue,
        dispatcher_options: dict[str, object] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = ServiceMetrics()
        self._given_grader = grader
        self._make_queue = make_queue
        self._dispatcher_options = dispatcher_options or {}
        self._database: Database | None = None
        self._grader: Grader | None = grader
        self._jobs: GradingJobs | None = None
        self._queue: JobQueue | None = None
        self.dispatcher: CallbackDispatcher | None = None
        self.limiter = CapacityLimiter(4)

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    @property
    def uploads_dir(self) -> Path:
        return self.settings.data_dir / "uploads"

    @property
    def database(self) -> Database:
        assert self._database is not None, "the service has not started"
        return self._database

    @property
    def grader(self) -> Grader:
        assert self._grader is not None, "the service has not started"
        return self._grader

    @property
    def jobs(self) -> GradingJobs:
        assert self._jobs is not None, "the service has not started"
        return self._jobs

    @property
    def queue(self) -> JobQueue:
        assert self._queue is not None, "the service has not started"
        return self._queue

    def start(self) -> None:
        """Open everything; idempotent, so `grader serve` can start it early and report failures plainly."""
        if self._jobs is not None:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._database = open_database(self.settings.sqlalchemy_url)
        if self._grader is None:
            self._grader = Grader(
                load_assignment(self.settings.assignment_dir),
                workers=self.settings.workers or None,
                allow_insecure=self.settings.insecure_no_sandbox,
            )
        self.limiter = CapacityLimiter(max(4, 2 * self._grader.pool.size))
        self.dispatcher = CallbackDispatcher(self._database, self.settings.callback_secret,
                                             **self._dispatcher_options)  # type: ignore[arg-type]
        self._jobs = GradingJobs(self._database, self._grader, on_outcome=self._on_outcome)
        self._queue = self._make_queue(self._jobs)
        depth = self._queue.depth
        active = getattr(self._queue, "active", lambda: 0)
        self.metrics.watch_queue(depth, active)
        resumed = self._jobs.pending()
        for work in resumed:
            self._queue.submit(work)
        if resumed:
            log.info("resumed %d accepted submissions that were not graded before the last stop", len(resumed))

    def _on_outcome(self, outcome: Outcome) -> None:
        self.metrics.observe(outcome)
        if outcome.recorded and outcome.callback and self.dispatcher is not None:
            self.dispatcher.wake()  # only a result with a callback gives the dispatcher anything to do

    def stop(self) -> None:
        """Close what start opened; a later start opens it all again (an app may be served twice)."""
        if self._queue is not None:
            self._queue.close()
        if self._grader is not None and self._given_grader is None:
            self._grader.close()
            self._grader = None
        if self._database is not None:
            self._database.dispose()
        self._queue = self._jobs = self._database = None
        self.dispatcher = None
