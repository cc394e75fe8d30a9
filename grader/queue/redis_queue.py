"""The service's side of the Redis queue: a `JobQueue` that hands work items to `grader worker` processes.

The database is the record of what was accepted; Redis only carries work items. So `submit` never
blocks a request on Redis: items go to an outbox that a publisher thread delivers, holding them
through an outage. If Redis comes back empty (restarted without persistence), the unfinished
submissions are read back from the database and queued again; running an item twice is harmless
because a work item is idempotent.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from collections.abc import Callable

import redis

from grader.queue.broker import QueueConfig, make_broker, message_for, queue_depth
from grader.service.jobs import GradeWork, GradingJobs

log = logging.getLogger(__name__)

CHECK_INTERVAL = 5.0  # seconds between checks that Redis still holds the queue
MAX_RETRY_DELAY = 30.0


class RedisJobQueue:
    """Enqueue work items on Redis for `grader worker` processes on any machine to run."""

    def __init__(
        self,
        config: QueueConfig,
        *,
        pending: Callable[[], list[GradeWork]] | None = None,
        check_interval: float = CHECK_INTERVAL,
    ) -> None:
        self.config = config
        self.broker = make_broker(config)
        self._pending = pending
        self._check_interval = check_interval
        self._marker = f"{config.namespace}:queue-epoch"
        self._outbox: collections.deque[GradeWork] = collections.deque()
        self._condition = threading.Condition()
        self._closed = False
        self._outage_since: float | None = None
        self._epoch_seen = False
        self._publisher = threading.Thread(target=self._publish_loop, name="queue-publisher", daemon=True)
        self._publisher.start()

    def submit(self, work: GradeWork) -> None:
        with self._condition:
            if self._closed:
                return  # still queued in the database: the next start submits it again
            self._outbox.append(work)
            self._condition.notify()

    def depth(self) -> int:
        with self._condition:
            waiting = len(self._outbox)
        try:
            return waiting + queue_depth(self.broker)
        except redis.RedisError:
            return waiting

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every submitted item reached Redis; False when it did not within `timeout`."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while self._outbox and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._condition.wait(min(remaining, 0.1))
            return not self._outbox

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is in the outbox (for up to `timeout`), then stop; the rest stays in the database."""
        self.flush(timeout)
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        self._publisher.join(timeout)
        if self._outbox:
            log.warning("%d work items were not handed to Redis before stopping; they are resumed at the next "
                        "start from the database", len(self._outbox))
        self.broker.close()

    # -- the publisher thread ---------------------------------------------------------------------

    def _publish_loop(self) -> None:
        delay = 1.0
        next_check = 0.0
        while True:
            with self._condition:
                while not self._outbox and not self._closed and time.monotonic() < next_check:
                    self._condition.wait(max(0.0, next_check - time.monotonic()))
                if self._closed:
                    return
                batch = list(self._outbox)
            try:
                if time.monotonic() >= next_check:
                    self._check_epoch()
                    next_check = time.monotonic() + self._check_interval
                self._publish(batch)
            except redis.RedisError as error:
                self._note_outage(error, delay)
                self._sleep(delay)
                delay = min(delay * 2, MAX_RETRY_DELAY)
                continue
            except Exception:
                # e.g. the database is down while re-reading unfinished work: try again shortly
                log.exception("the queue publisher failed; retrying in %.0f s", delay)
                self._sleep(delay)
                delay = min(delay * 2, MAX_RETRY_DELAY)
                continue
            delay = 1.0
            if self._outage_since is not None:
                log.info("Redis at %s is reachable again after %.0f s; queued work is flowing",
                         self.config.safe_url, time.monotonic() - self._outage_since)
                self._outage_since = None

    def _sleep(self, seconds: float) -> None:
        with self._condition:
            if not self._closed:
                self._condition.wait(seconds)

    def _publish(self, batch: list[GradeWork]) -> None:
        for work in batch:
            self.broker.enqueue(message_for(work))
            with self._condition:
                self._outbox.popleft()
                self._condition.notify_all()

    def _check_epoch(self) -> None:
        """Mark the Redis we talk to; finding the mark gone means Redis lost its queue, so refill it."""
        client = self.broker.client
        if client.exists(self._marker):
            self._epoch_seen = True
            return
        if self._epoch_seen and self._pending is not None:
            unfinished = self._pending()
            log.warning("Redis at %s came back without its queue (restarted without persistence?); "
                        "queueing the %d unfinished submissions from the database again",
                        self.config.safe_url, len(unfinished))
            with self._condition:
                self._outbox.extend(unfinished)
        # At the first check the service has just resubmitted its unfinished work itself.
        client.set(self._marker, uuid.uuid4().hex)
        self._epoch_seen = True

    def _note_outage(self, error: redis.RedisError, delay: float) -> None:
        if self._outage_since is None:
            self._outage_since = time.monotonic()
        with self._condition:
            waiting = len(self._outbox)
        log.warning("Redis at %s is unavailable (%s: %s); %d work items wait in the service, retrying in %.0f s",
                    self.config.safe_url, type(error).__name__, error, waiting, delay)


def redis_queue_factory(config: QueueConfig) -> Callable[[GradingJobs], RedisJobQueue]:
    """A `QueueFactory` for the service: the queue re-reads unfinished work through `GradingJobs.pending`."""

    def make(jobs: GradingJobs) -> RedisJobQueue:
        return RedisJobQueue(config, pending=jobs.pending)

    return make
