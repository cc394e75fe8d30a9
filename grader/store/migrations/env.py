"""Alembic environment: migrations run on the engine the service hands over, never from an ini file."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from grader.store.models import Base

# One id for every process that migrates the same PostgreSQL database (API and workers start together).
_ADVISORY_LOCK = 4391_0001


def run_migrations() -> None:
    engine = context.config.attributes["engine"]
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _ADVISORY_LOCK})
            connection.commit()
        try:
            context.configure(
                connection=connection,
                target_metadata=Base.metadata,
                render_as_batch=connection.dialect.name == "sqlite",
            )
            with context.begin_transaction():
                context.run_migrations()
        finally:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _ADVISORY_LOCK})
                connection.commit()


run_migrations()
