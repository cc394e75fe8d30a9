"""Opening the database: SQLite in the data folder by default, PostgreSQL by URL; migrated on open."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
BUSY_SECONDS = 30  # how long a SQLite writer waits for the write lock before "database is locked"
CONNECT_TIMEOUT = 10  # seconds to open a PostgreSQL connection


class DatabaseError(Exception):
    """The database cannot be opened or migrated; the message says which and why."""


# PostgreSQL's SQLSTATEs for "not reachable right now": connection exceptions (08...), the server
# shutting down or starting (57P01-57P03), too many connections (53300)
_OUTAGE_SQLSTATES = ("08", "57P01", "57P02", "57P03", "53300")
# SQLite's: another process holds the write lock past the busy timeout; the file cannot be opened
_SQLITE_OUTAGES = ("database is locked", "unable to open database file")


def database_unavailable(error: BaseException) -> bool:
    """Errors that mean "the database is not reachable right now", as opposed to a bug or bad data:
    a lost or refused connection, a server going down, a lock held too long. A missing table, a
    read-only file or bad SQL is an OperationalError too, and is not one of them."""
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(error, InterfaceError):  # the driver's connection is closed or broken
        return True
    if not isinstance(error, OperationalError):
        return False
    cause = error.orig
    if isinstance(cause, sqlite3.OperationalError):
        return any(text in str(cause) for text in _SQLITE_OUTAGES)
    sqlstate = getattr(cause, "sqlstate", None)  # psycopg; None when no server answered at all
    return sqlstate is None or str(sqlstate).startswith(_OUTAGE_SQLSTATES)


def one_line(error: BaseException) -> str:
    """An error as one line for a log: its type and the first line of its message."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def normalize_url(url: str) -> str:
    """Route plain `postgresql://` URLs to psycopg 3, the driver this package depends on."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def safe_url(url: str) -> str:
    """The URL for logs and messages, its password masked."""
    return make_url(url).render_as_string(hide_password=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: object) -> None:
    # WAL lets readers run beside the one writer; NORMAL sync is durable across process crashes.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_SECONDS * 1000}")
    cursor.close()
    # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin (see _sqlite_begin).
    dbapi_connection.isolation_level = None


def _sqlite_begin(connection: Any) -> None:
    # IMMEDIATE takes the write lock up front, so a read-then-write transaction waits for its turn
    # instead of failing with "database is locked" when another writer got there first.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _json_loads(text: str | bytes) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # NaN or Infinity, which the standard encoder wrote before orjson
        return json.loads(text)


# JSON columns (a report is one) through orjson, in a fraction of the time of the standard encoder.
# The same values for what they hold (str keys; a non-finite float, such as the `measured` of a
# gradient check whose difference overflowed, is stored as null where `json` wrote Infinity, which
# PostgreSQL refused); rows written before are still read.
_JSON_CODEC: dict[str, Any] = {"json_serializer": _json_dumps, "json_deserializer": _json_loads}


def make_engine(url: str) -> Engine:
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": BUSY_SECONDS}, **_JSON_CODEC)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    # a host that does not answer at all would otherwise hold a request (or /healthz) for minutes
    connect_args = {} if "connect_timeout" in parsed.query else {"connect_timeout": CONNECT_TIMEOUT}
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20, connect_args=connect_args,
                         **_JSON_CODEC)


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine) -> None:
    """Bring the schema up to the newest migration (run at every start; a no-op when current)."""
    command.upgrade(alembic_config(engine), "head")


class Database:
    """An engine and its session factory; `session()` is one transaction, committed on success."""

    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)
        self.engine = make_engine(self.url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        # Every SQLite transaction takes the write lock (BEGIN IMMEDIATE). Threads of this process queue
        # for it here, woken the moment it is free; SQLite's own busy handler would have them sleep and
        # poll (1, 2, 5, 10 ... 100 ms), which under load left grading threads asleep beside a free lock.
        # Other processes still wait through busy_timeout.
        self._writers = threading.RLock() if self.engine.dialect.name == "sqlite" else None

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._writer_turn(), self.sessions() as session, session.begin():
            yield session

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One transaction on a plain connection, committed on success: for Core statements only
        (the writes of a single-file grade), without the cost of a Session."""
        with self._writer_turn(), self.engine.begin() as connection:
            yield connection

    @contextmanager
    def _writer_turn(self) -> Iterator[None]:
        """This thread's turn at SQLite's write lock, waited for as long as SQLite itself would wait
        before "database is locked" (the same error then). Reentrant: a nested session fails on
        SQLite's timeout, not by a deadlock here."""
        if self._writers is None:
            yield
            return
        if not self._writers.acquire(timeout=BUSY_SECONDS):
            raise OperationalError("BEGIN IMMEDIATE", {}, sqlite3.OperationalError("database is locked"))
        try:
            yield
        finally:
            self._writers.release()

    def ping(self) -> None:
        """Raise (an OperationalError, most often) unless the database answers a trivial query. On the
        driver's own connection: a SQLAlchemy one would begin a transaction, which on SQLite takes the
        write lock (BEGIN IMMEDIATE) and would wait behind any write."""
        with self.engine.connect() as connection:  # connecting raises SQLAlchemy's errors, as everywhere
            cursor = connection.connection.cursor()  # the driver's: no transaction begins
            try:
                cursor.execute("SELECT 1")
            except self.engine.dialect.loaded_dbapi.Error as error:  # as SQLAlchemy would have wrapped it
                raise OperationalError("SELECT 1", {}, error) from error
            finally:
                cursor.close()

    def dispose(self) -> None:
        self.engine.dispose()


def open_database(url: str) -> Database:
    """Connect and migrate, turning driver failures into one sentence naming the database."""
    database = Database(url)
    try:
        migrate(database.engine)
    except Exception as error:
        database.dispose()
        safe = safe_url(database.url)
        cause = getattr(error, "orig", None) or error  # the driver's own words, not SQLAlchemy's wrapping
        first_line = (str(cause).strip().splitlines() or [""])[0]
        raise DatabaseError(f"cannot open the database {safe}: {first_line}") from error
    return database
