"""Result callbacks: POST a graded result to the caller's URL, signed, retried with back-off.

Deliveries live in the database (written in the same transaction as the result), so a restart or a
grading worker on another machine never loses one; this dispatcher sends whatever is due.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from datetime import timedelta
from typing import Any

import httpx

import grader
from grader.store import repository
from grader.store.database import Database, database_unavailable, one_line
from grader.store.models import utcnow

log = logging.getLogger(__name__)

OUTAGE_PAUSE_MAX = 15.0  # seconds between looks at the database while it is out of reach

SIGNATURE_HEADER = "X-Grader-Signature"


def sign(secret: str, body: bytes) -> str:
    """The signature header's value: `sha256=` and the hex HMAC-SHA256 of the exact body bytes."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class CallbackDispatcher:
    def __init__(
        self,
        database: Database,
        secret: str,
        *,
        base_delay: float = 2.0,
        max_delay: float = 600.0,
        max_attempts: int = 8,
        poll_seconds: float = 1.0,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.database = database
        self.secret = secret
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.max_attempts = max_attempts
        self.poll_seconds = poll_seconds
        self.timeout = timeout
        self.transport = transport
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="callback-dispatcher")

    async def stop(self) -> None:
        task, loop = self._task, self._loop
        self._task = None
        if task is None or loop is None:
            return
        if loop is asyncio.get_running_loop():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        elif not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)  # started by a server on another event loop

    def wake(self) -> None:
        """Called from grading threads when a result with a callback was recorded."""
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def delay(self, attempts: int) -> float:
        return min(self.base_delay * 2 ** (attempts - 1), self.max_delay)

    async def _run(self) -> None:
        assert self._wake is not None
        async with httpx.AsyncClient(timeout=self.timeout, transport=self.transport) as client:
            outage: float | None = None  # since when the database has been out of reach
            pause = self.poll_seconds
            while True:
                try:
                    while await self.deliver_due(client):
                        pass
                    if outage is not None:
                        log.info("callbacks: the database is reachable again after %.0f s", time.monotonic() - outage)
                        outage, pause = None, self.poll_seconds
                except Exception as error:
                    if not database_unavailable(error):
                        log.exception("callback dispatcher pass failed; retrying")
                    else:  # said once, then waited out with back-off: an outage is not news every second
                        if outage is None:
                            outage = time.monotonic()
                            log.warning("callbacks wait: the database is unavailable (%s)", one_line(error))
                        pause = min(pause * 2, OUTAGE_PAUSE_MAX)
                try:
                    await asyncio.wait_for(self._wake.wait(), pause)
                except TimeoutError:
                    pass
                self._wake.clear()

    async def deliver_due(self, client: httpx.AsyncClient) -> int:
        """Try every delivery that is due once; returns how many were attempted."""
        due = await asyncio.to_thread(self._take_due)
        await asyncio.gather(*(self._attempt(client, *item) for item in due))
        return len(due)

    def _take_due(self) -> list[tuple[int, str, int, dict[str, Any]]]:
        taken = []
        with self.database.session() as session:
            for delivery in repository.due_deliveries(session, utcnow()):
                payload = repository.delivery_payload(session, delivery)
                lease = timedelta(seconds=self.timeout * 3)
                attempt = delivery.attempts + 1  # read before the claim updates the row
                if payload is not None and repository.claim_delivery(session, delivery, lease):
                    taken.append((delivery.id, delivery.url, attempt, payload))
        return taken

    async def _attempt(self, client: httpx.AsyncClient, delivery_id: int, url: str, attempt: int,
                       payload: dict[str, Any]) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"hw-grader/{grader.__version__}",
            SIGNATURE_HEADER: sign(self.secret, body),
            "X-Grader-Delivery": str(delivery_id),
            "X-Grader-Attempt": str(attempt),
        }
        status: int | None = None
        error: str | None = None
        try:
            response = await client.post(url, content=body, headers=headers)
            status = response.status_code
            if not 200 <= status < 300:
                error = f"the receiver answered HTTP {status}"
        except httpx.HTTPError as failure:
            error = f"{failure.__class__.__name__}: {failure}"[:500]
        delivered = error is None
        retry_at = None
        if not delivered and attempt < self.max_attempts:
            retry_at = utcnow() + timedelta(seconds=self.delay(attempt))
        if not delivered:
            log.warning("callback %s to %s failed (attempt %s): %s", delivery_id, url, attempt, error)
        await asyncio.to_thread(self._finish, delivery_id, delivered, status, error, retry_at)

    def _finish(self, delivery_id: int, delivered: bool, status: int | None, error: str | None,
                retry_at: Any) -> None:
        with self.database.session() as session:
            repository.finish_delivery_attempt(
                session, delivery_id, delivered=delivered, status=status, error=error, retry_at=retry_at
            )
