"""The service while its database is out of reach: 503s that say so (not 500s with tracebacks), a
health check that fails, and a callback dispatcher that says it once and waits with back-off."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError

from grader.engine.grading import Grader
from grader.service.callbacks import CallbackDispatcher
from grader.store.database import Database, database_unavailable, open_database
from tests.service_helpers import service_client

UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere?connect_timeout=2"  # refused at once


@contextmanager
def outage(database: Database) -> Iterator[None]:
    """Every new session and connection of `database` goes to a server that refuses them."""
    working = database.engine
    database.engine = create_engine(UNREACHABLE)
    database.sessions.configure(bind=database.engine)
    try:
        yield
    finally:
        database.engine.dispose()
        database.engine = working
        database.sessions.configure(bind=working)


def test_requests_during_an_outage_get_503_and_no_traceback(grader: Grader, tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    with service_client(grader, tmp_path) as client:  # an exception reaching TestClient would fail the test
        database = client.app.state.service.database  # type: ignore[attr-defined]
        assert client.get("/healthz").status_code == 200
        caplog.clear()
        with outage(database):
            for path in ("/api/v1/batches", "/api/v1/batches/1", "/healthz"):
                response = client.get(path)
                assert response.status_code == 503, (path, response.text)
                assert response.json()["type"] == "urn:hw-grader:problem:database-unavailable"
                assert response.headers["retry-after"] == "5"
        assert client.get("/api/v1/batches").status_code == 200  # back
        metrics = client.get("/metrics").text
    # counted as what the client got (Starlette's error middleware, had it seen the exception, would
    # have logged its traceback and the metrics inside it a 500)
    assert 'route="/api/v1/batches",status="503"} 1.0' in metrics and 'status="500"' not in metrics
    logged = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert logged and all(r.levelno == logging.WARNING and r.exc_info is None for r in logged)
    assert all("the database is unavailable" in r.getMessage() for r in logged)


def test_the_callback_dispatcher_says_an_outage_once_and_backs_off(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    database = open_database(f"sqlite:///{tmp_path / 'grader.db'}")
    dispatcher = CallbackDispatcher(database, "secret", poll_seconds=0.05)
    passes = 0
    original = dispatcher.deliver_due

    async def counted(client: object) -> int:
        nonlocal passes
        passes += 1
        return await original(client)  # type: ignore[arg-type]

    dispatcher.deliver_due = counted  # type: ignore[method-assign]

    during = 0

    async def run() -> None:
        nonlocal during
        dispatcher.start()
        with outage(database):
            await asyncio.sleep(2.0)
            during = passes
        await asyncio.sleep(2.5)  # the next look finds the database again (the pause has grown to 1.6 s)
        await dispatcher.stop()

    caplog.set_level(logging.INFO, logger="grader.service.callbacks")
    try:
        asyncio.run(run())
    finally:
        database.dispose()
    messages = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "grader.service.callbacks"]
    assert [m for m in messages if m[0] != "INFO"] == [messages[0]]  # one warning, no tracebacks
    assert messages[0][1].startswith("callbacks wait: the database is unavailable")
    assert any("reachable again" in text for _, text in messages)
    assert 3 <= during <= 7  # looks 0.1, 0.2, 0.4 ... s apart during the outage: not 40 in 2 s


def test_only_an_outage_counts_as_one(grader: Grader, tmp_path: Path) -> None:
    """A bug that SQLAlchemy also calls an OperationalError (a missing table) stays a 500, logged with
    its traceback: a 503 "try again" would hide it."""
    with service_client(grader, tmp_path, raise_server_exceptions=False) as client:
        database = client.app.state.service.database  # type: ignore[attr-defined]
        with database.engine.begin() as connection:
            connection.exec_driver_sql("ALTER TABLE batches RENAME TO batches_gone")
        try:
            assert client.get("/api/v1/batches").status_code == 500
        finally:
            with database.engine.begin() as connection:
                connection.exec_driver_sql("ALTER TABLE batches_gone RENAME TO batches")
        assert client.get("/api/v1/batches").status_code == 200


def test_what_counts_as_the_database_being_unavailable() -> None:
    def sqlite_error(message: str) -> OperationalError:
        return OperationalError("SELECT 1", {}, sqlite3.OperationalError(message))

    assert database_unavailable(sqlite_error("database is locked"))
    assert database_unavailable(sqlite_error("unable to open database file"))
    assert not database_unavailable(sqlite_error("no such table: batches"))
    assert not database_unavailable(sqlite_error("attempt to write a readonly database"))
    with pytest.raises(OperationalError) as refused:
        create_engine(UNREACHABLE).connect()
    assert database_unavailable(refused.value)  # no server answered
    assert not database_unavailable(ValueError("not a database error"))


def test_the_health_checks_ping_does_not_wait_behind_a_write(tmp_path: Path) -> None:
    """SQLite: a transaction through SQLAlchemy takes the write lock (BEGIN IMMEDIATE); the ping must
    not, or /healthz would hang behind any long write and time out a container's health check."""
    database = open_database(f"sqlite:///{tmp_path / 'grader.db'}")
    writer = sqlite3.connect(tmp_path / "grader.db", isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        database.ping()
        assert time.monotonic() - started < 1
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        database.dispose()
