"""Grading jobs: a work item names one stored submission, and running it twice leaves one final record.

`JobQueue` is the seam between accepting work and doing it. `InProcessQueue` runs items on threads
in this process (one per sandbox zygote); a queue on an external broker only has to deliver the same
`GradeWork` items to `GradingJobs.run` in a worker process that shares the database.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from grader.engine.grading import Grader
from grader.engine.report import SubmissionReport
from grader.store import repository
from grader.store.database import Database

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3


@dataclass(frozen=True, order=True)
class GradeWork:
    """Grade stored submission `submission_id` (of batch `batch_id`, None for a single file)."""

    submission_id: int
    batch_id: int | None = None


@dataclass
class Outcome:
    """What running one work item did: graded and recorded, found nothing to do, or failed."""

    work: GradeWork
    report: SubmissionReport | None = None
    report_json: dict[str, Any] | None = None  # the report as stored (and as the API returns it)
    recorded: bool = False
    callback: bool = False  # the recorded result has a callback to deliver
    error: str | None = None
    retry: bool = False


class JobQueue(Protocol):
    """Where accepted work goes; implementations must deliver each item at least once."""

    def submit(self, work: GradeWork) -> None: ...

    def depth(self) -> int:
        """Items accepted and not yet started."""
        ...

    def close(self) -> None: ...


class GradingJobs:
    """Runs work items: claim the submission, grade it in the sandbox, record the result."""

    def __init__(
        self,
        database: Database,
        grader: Grader,
        *,
        max_attempts: int = MAX_ATTEMPTS,
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> None:
        self.database = database
        self.grader = grader
        self.max_attempts = max_attempts
        self.on_outcome = on_outcome

    def run(self, work: GradeWork) -> Outcome:
        with self.database.session() as session:
            claimed = repository.claim(session, work.submission_id)
        if claimed is None:
            return self._finish(Outcome(work))
        return self.grade_claimed(work, claimed)

    def grade_new(self, new: repository.NewSubmission) -> Outcome:
        """Store a single file and grade it at once: one transaction before grading, one after."""
        with self.database.transaction() as connection:
            claimed = repository.create_claimed(connection, new)
        return self.grade_claimed(GradeWork(claimed.submission_id), claimed)

    def grade_claimed(self, work: GradeWork, claimed: repository.ClaimedWork) -> Outcome:
        try:
            report = self.grader.grade(claimed.source, student=claimed.student)
        except Exception as error:
            final = claimed.attempts >= self.max_attempts
            log.exception("grading submission %s failed (attempt %s)", work.submission_id, claimed.attempts)
            message = f"grading failed: {error.__class__.__name__}: {error}"
            with self.database.session() as session:
                repository.record_failure(session, claimed, message, final=final)
            return self._finish(Outcome(work, error=message, retry=not final))
        stored = report.model_dump(mode="json")
        with self.database.transaction() as connection:
            recorded = repository.record_result(connection, claimed, stored)
        return self._finish(
            Outcome(work, report=report, report_json=stored, recorded=recorded,
                    callback=claimed.callback_url is not None)
        )

    def _finish(self, outcome: Outcome) -> Outcome:
        if self.on_outcome is not None:
            try:
                self.on_outcome(outcome)
            except Exception:
                log.exception("outcome listener failed for submission %s", outcome.work.submission_id)
        return outcome

    def pending(self) -> list[GradeWork]:
        """Everything accepted and not graded, for resuming after a stop."""
        with self.database.session() as session:
            return [GradeWork(submission_id, batch_id) for submission_id, batch_id in repository.pending_work(session)]


class InProcessQueue:
    """Worker threads in this process, one per zygote; single files go ahead of batch students."""

    def __init__(self, run: Callable[[GradeWork], Outcome], workers: int) -> None:
        self._run = run
        self._items: queue.PriorityQueue[tuple[int, int, GradeWork | None]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._waiting: set[GradeWork] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._active = 0
        self._threads = [
            threading.Thread(target=self._work, name=f"grading-{i}", daemon=True) for i in range(max(1, workers))
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, work: GradeWork) -> None:
        with self._lock:
            if self._closed or work in self._waiting:
                return  # already waiting: a second copy would find nothing to do
            self._waiting.add(work)
        priority = 0 if work.batch_id is None else 1
        self._items.put((priority, next(self._order), work))

    def depth(self) -> int:
        with self._lock:
            return len(self._waiting)

    def active(self) -> int:
        with self._lock:
            return self._active

    def _work(self) -> None:
        while True:
            _, _, work = self._items.get()
            if work is None:
                return
            with self._lock:
                self._waiting.discard(work)
                if self._closed:
                    continue  # left queued in the database; the next start resumes it
                self._active += 1
            try:
                outcome = self._run(work)
            except Exception:
                log.exception("work item %s failed", work)
                outcome = Outcome(work, error="internal error", retry=False)
            finally:
                with self._lock:
                    self._active -= 1
            if outcome.retry:
                self.submit(work)

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking items; running ones finish, waiting ones stay queued in the database."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for _ in self._threads:
            self._items.put((-1, next(self._order), None))
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
