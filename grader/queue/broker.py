"""The Redis broker both sides share: queue names, message format, and how dead workers are noticed.

Dramatiq's Redis broker keeps a message in the fetching worker's acknowledgement set until the work
is done, and any broker call may run a maintenance step that hands the unacknowledged messages of a
worker silent for `heartbeat_timeout` back to the queue. `reap` forces that step, so a killed worker's
work is picked up within seconds instead of on a random later call.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis
from dramatiq import Message
from dramatiq.brokers.redis import MAINTENANCE_SCALE, RedisBroker
from dramatiq.common import dq_name
from dramatiq.middleware import Retries

if TYPE_CHECKING:
    from grader.service.jobs import GradeWork
    from grader.settings import Settings

log = logging.getLogger(__name__)

# Single files (an LMS waiting on a callback) go ahead of the students of a batch.
QUEUE_SINGLE = "grading-single"
QUEUE_BATCH = "grading-batch"
QUEUES = (QUEUE_SINGLE, QUEUE_BATCH)
ACTOR_SINGLE = "grade_single"
ACTOR_BATCH = "grade_batch"
PRIORITIES = {ACTOR_SINGLE: 0, ACTOR_BATCH: 10}  # lower runs first among a worker's prefetched messages
MAX_RETRIES = 100  # grading failures stop at GradingJobs' own attempt limit; this bounds outages

DEFAULT_NAMESPACE = "grader"
DEFAULT_HEARTBEAT_TIMEOUT = 15.0


@dataclass(frozen=True)
class QueueConfig:
    """Where the queue is: a redis:// URL, a key prefix, and how long a silent worker counts as alive."""

    url: str
    namespace: str = DEFAULT_NAMESPACE
    heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT

    @classmethod
    def from_settings(cls, settings: Settings) -> QueueConfig:
        if not settings.queue_url:
            raise ValueError("GRADER_QUEUE_URL is not set")
        return cls(
            url=settings.queue_url,
            namespace=settings.queue_namespace,
            heartbeat_timeout=settings.queue_heartbeat_timeout,
        )

    @property
    def safe_url(self) -> str:
        """The URL without its password, for logs and error messages."""
        return safe_redis_url(self.url)


def safe_redis_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user + ':' if user else ''}***@{host}"


def make_broker(config: QueueConfig, *, maintenance_chance: int | None = None) -> RedisBroker:
    """A broker on `config`; short socket timeouts so an outage shows up as an error, not a hang."""
    client = redis.Redis.from_url(
        config.url,
        socket_connect_timeout=5,
        socket_timeout=30,
        socket_keepalive=True,
        health_check_interval=15,
    )
    options = {} if maintenance_chance is None else {"maintenance_chance": maintenance_chance}
    broker = RedisBroker(
        client=client,
        namespace=config.namespace,
        heartbeat_timeout=int(config.heartbeat_timeout * 1000),
        middleware=[Retries(max_retries=MAX_RETRIES, min_backoff=1_000, max_backoff=60_000)],
        **options,
    )
    for queue_name in QUEUES:
        broker.declare_queue(queue_name)
    return broker


def message_for(work: GradeWork) -> Message:
    """The message for one work item: JSON arguments, nothing pickled."""
    single = work.batch_id is None
    return Message(
        queue_name=QUEUE_SINGLE if single else QUEUE_BATCH,
        actor_name=ACTOR_SINGLE if single else ACTOR_BATCH,
        args=(work.submission_id, work.batch_id),
        kwargs={},
        options={},
    )


def make_reaper(config: QueueConfig) -> RedisBroker:
    """A broker whose every call runs maintenance: `reap(reaper)` requeues the work of dead workers."""
    return make_broker(config, maintenance_chance=MAINTENANCE_SCALE)


def reap(reaper: RedisBroker) -> None:
    for queue_name in QUEUES:
        reaper.do_qsize(queue_name)
        reaper.do_qsize(dq_name(queue_name))


def queue_depth(broker: RedisBroker) -> int:
    """Work items in Redis that no worker has fetched yet, retries waiting out their delay included."""
    client = broker.client
    ns = broker.namespace
    total = 0
    for queue_name in QUEUES:
        total += int(client.llen(f"{ns}:{queue_name}"))
        total += int(client.hlen(f"{ns}:{dq_name(queue_name)}.msgs"))
    return total
