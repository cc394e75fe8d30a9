"""Store helpers shared by the SQLite and PostgreSQL store tests: a batch of samples, result counts, the schema."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select

from grader.store import repository
from grader.store.database import Database
from grader.store.models import Base, Result
from tests.conftest import EXAMPLES


def add_batch(db: Database, names: list[str]) -> list[int]:
    students = [repository.NewSubmission(student=Path(n).stem, source=(EXAMPLES / n).read_bytes()) for n in names]
    with db.session() as session:
        batch = repository.create_batch(session, filename="class.zip", layout="files", upload_sha256="0" * 64,
                                        upload_path="/nowhere", warnings=[], students=students)
        return [s.id for s in batch.submissions]


def result_counts(db: Database) -> Counter[tuple[int, int]]:
    with db.session() as session:
        rows = session.execute(select(Result.submission_id, Result.generation))
        return Counter((row.submission_id, row.generation) for row in rows)


def assert_schema_matches_models(db: Database) -> None:
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        assert compare_metadata(context, Base.metadata) == []
