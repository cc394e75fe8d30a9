"""The few functions that read and write the store; every caller goes through these, in one session each."""

from __future__ import annotations

import functools
import hashlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from grader.store.models import Base, Batch, Blob, CallbackDelivery, Result, Submission, utcnow

QUEUED, RUNNING, GRADED, ERROR, SKIPPED = "queued", "running", "graded", "error", "skipped"
FINISHED = (GRADED, ERROR, SKIPPED)


@dataclass
class NewSubmission:
    """What intake found for one student, ready to be stored."""

    student: str
    source: bytes | None
    name: str | None = None
    late: bool = False
    origin: str = ""
    intake_status: str = "ok"
    detail: str = ""
    attempt: str | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class Progress:
    done: int
    total: int
    status: str


@dataclass
class ClaimedWork:
    """A submission handed to a grader: the generation it grades and the bytes it grades."""

    submission_id: int
    batch_id: int | None
    generation: int
    student: str
    source: bytes
    attempts: int
    callback_url: str | None = None


def sha256_of(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _table(model: type[Base]) -> Table:
    return cast(Table, model.__table__)


# What the writes on the hot path of a single-file grade run through: a plain Connection there (a Session
# costs about 0.1 ms more per transaction and adds nothing to Core statements), a Session elsewhere.
Executor = Session | Connection


def _dialect(executor: Executor) -> str:
    return (executor.get_bind() if isinstance(executor, Session) else executor).dialect.name


def insert_unless_present(session: Executor, table: Table, values: dict[str, Any]) -> bool:
    """INSERT a row unless one with the same unique key exists; True when this call inserted it.

    One statement (ON CONFLICT DO NOTHING) on SQLite and PostgreSQL, so a concurrent duplicate
    neither fails the transaction nor costs a savepoint.
    """
    unknown = values.keys() - table.c.keys()
    if unknown:  # execution parameters that name no column would be dropped without a word
        raise ValueError(f"{table.name} has no column {', '.join(sorted(unknown))}")
    dialect = _dialect(session)
    if dialect in ("sqlite", "postgresql"):
        result = session.execute(_insert_or_nothing(dialect, table), values)
        return bool(result.rowcount)  # type: ignore[attr-defined]
    try:
        with session.begin_nested():
            session.execute(table.insert(), values)
    except IntegrityError:
        return False
    return True


@functools.cache
def _insert_or_nothing(dialect: str, table: Table) -> Any:
    """Built once per table: the values travel as execution parameters, so SQLAlchemy reuses its
    compiled form instead of building and coercing a new statement for every row (the hot path of a
    single-file grade writes three rows)."""
    insert = sqlite_insert if dialect == "sqlite" else postgresql_insert
    # preserve_rowcount: without it psycopg reports -1 for an INSERT without RETURNING (its cursor is
    # closed before the count is read), and a conflict would count as an insert on PostgreSQL
    return insert(table).on_conflict_do_nothing().execution_options(preserve_rowcount=True)


def put_blob(session: Executor, content: bytes) -> str:
    """Store bytes under their SHA-256 (once, however often they are uploaded) and return the hash."""
    digest = sha256_of(content)
    insert_unless_present(
        session, _table(Blob), {"sha256": digest, "size": len(content), "content": content, "created_at": utcnow()}
    )
    return digest


def _add_submission(session: Session, new: NewSubmission, batch_id: int | None, callback_url: str | None) -> Submission:
    gradable = new.source is not None and new.intake_status == "ok"
    digest = put_blob(session, new.source) if gradable and new.source is not None else None
    submission = Submission(**_submission_row(new, batch_id, callback_url, digest),
                            state=QUEUED if digest is not None else SKIPPED)
    session.add(submission)
    return submission


def _submission_row(new: NewSubmission, batch_id: int | None, callback_url: str | None, digest: str | None
                    ) -> dict[str, Any]:
    """The columns of a submission row that come from what intake found."""
    return {
        "batch_id": batch_id, "student": new.student, "name": new.name, "late": new.late, "attempt": new.attempt,
        "warnings": list(new.warnings), "origin": new.origin, "intake_status": new.intake_status,
        "detail": new.detail, "source_sha256": digest, "callback_url": callback_url,
    }


def create_submission(session: Session, new: NewSubmission, *, callback_url: str | None = None) -> Submission:
    """One file graded on its own (no batch)."""
    submission = _add_submission(session, new, None, callback_url)
    session.flush()
    return submission


def create_claimed(session: Executor, new: NewSubmission) -> ClaimedWork:
    """One file stored and claimed in the same transaction, for grading it right away (one INSERT
    of the row as it stands once claimed, without the ORM's unit of work: this is every
    `POST /api/v1/grade`)."""
    assert new.source is not None and new.intake_status == "ok", "only a gradable file is claimed"
    digest = put_blob(session, new.source)
    now = utcnow()
    result = session.execute(
        insert(_table(Submission)),
        {**_submission_row(new, None, None, digest), "state": RUNNING, "generation": 1, "attempts": 1,
         "created_at": now, "updated_at": now},
    )
    (submission_id,) = result.inserted_primary_key  # type: ignore[attr-defined]
    return ClaimedWork(
        submission_id=submission_id,
        batch_id=None,
        generation=1,
        student=new.student,
        source=new.source,
        attempts=1,
    )


def create_batch(
    session: Session,
    *,
    filename: str,
    layout: str,
    upload_sha256: str,
    upload_path: str,
    warnings: list[str],
    students: list[NewSubmission],
    assignment_name: str | None = None,
) -> Batch:
    """A batch and all its students in one transaction: accepted means every student is on record."""
    batch = Batch(
        filename=filename,
        layout=layout,
        assignment_name=assignment_name,
        upload_sha256=upload_sha256,
        upload_path=upload_path,
        warnings=warnings,
    )
    session.add(batch)
    session.flush()
    for new in students:
        _add_submission(session, new, batch.id, None)
    session.flush()
    return batch


def claim(session: Session, submission_id: int) -> ClaimedWork | None:
    """Mark a submission running and hand over its source, or None when there is nothing left to do.

    Nothing to do means: it does not exist, has no source, or its current generation already has a
    result (the work item was delivered twice, or finished just before a crash).
    """
    submission = session.get(Submission, submission_id)
    if submission is None or submission.source_sha256 is None:
        return None
    if _result_for(session, submission.id, submission.generation) is not None:
        if submission.state != GRADED:
            submission.state = GRADED
        return None
    source = get_source(session, submission)
    if source is None:
        return None
    submission.state = RUNNING
    submission.attempts += 1
    return ClaimedWork(
        submission_id=submission.id,
        batch_id=submission.batch_id,
        generation=submission.generation,
        student=submission.student,
        source=source,
        attempts=submission.attempts,
        callback_url=submission.callback_url,
    )


def _result_for(session: Session, submission_id: int, generation: int) -> Result | None:
    return session.scalars(
        select(Result).where(Result.submission_id == submission_id, Result.generation == generation)
    ).first()


def record_result(session: Executor, work: ClaimedWork, report: dict[str, Any]) -> bool:
    """Store the report for the claimed generation; False when another run already stored one.

    The unique (submission, generation) key is what makes a work item idempotent: whoever commits
    first wins and every later run of the same item leaves the record as it is.
    """
    inserted = insert_unless_present(
        session,
        _table(Result),
        {
            "submission_id": work.submission_id,
            "generation": work.generation,
            "created_at": utcnow(),
            "score": float(report["score"]),
            "max_score": float(report["max_score"]),
            "assignment": str(report.get("assignment", "")),
            "rubric_version": str(report.get("rubric_version", "")),
            "grader_version": str(report.get("grader_version", "")),
            "seed": int(report.get("seed", 0)),
            "report": report,
        },
    )
    if not inserted:
        return False
    current = session.execute(
        _MARK_GRADED, {"id_": work.submission_id, "generation_": work.generation, "updated_at": utcnow()}
    )
    # a regrade may have started a newer generation meanwhile: this result is then history only
    if current.rowcount and work.callback_url:  # type: ignore[attr-defined]
        insert_unless_present(
            session,
            _table(CallbackDelivery),
            {
                "submission_id": work.submission_id,
                "generation": work.generation,
                "url": work.callback_url,
                "state": "pending",
                "attempts": 0,
                "next_attempt_at": utcnow(),
            },
        )
    return True


# Core, built once: the current generation of a submission marked graded (rowcount 0 once a regrade
# has started a newer one). The ORM's objects in the session are not refreshed, as before.
_MARK_GRADED = (
    update(_table(Submission))
    .where(_table(Submission).c.id == bindparam("id_"), _table(Submission).c.generation == bindparam("generation_"))
    .values(state=GRADED, error=None)
)


def record_failure(session: Session, work: ClaimedWork, error: str, *, final: bool) -> None:
    """Note a grading run that raised; a final failure leaves the submission in `error`."""
    session.execute(
        update(Submission)
        .where(Submission.id == work.submission_id, Submission.generation == work.generation)
        .values(state=ERROR if final else QUEUED, error=error, updated_at=utcnow())
    )


def pending_work(session: Session) -> list[tuple[int, int | None]]:
    """Everything accepted but not yet graded, oldest first; runs interrupted by a stop go back to queued."""
    session.execute(update(Submission).where(Submission.state == RUNNING).values(state=QUEUED))
    rows = session.execute(
        select(Submission.id, Submission.batch_id).where(Submission.state == QUEUED).order_by(Submission.id)
    )
    return [(row.id, row.batch_id) for row in rows]


def request_regrade(session: Session, submissions: list[Submission]) -> list[int]:
    """Start a new generation for each gradable submission; returns the ids to queue."""
    ids = []
    for submission in submissions:
        if submission.source_sha256 is None:
            continue
        submission.generation += 1
        submission.state = QUEUED
        submission.attempts = 0
        submission.error = None
        ids.append(submission.id)
    session.flush()
    return ids


def get_submission(session: Session, submission_id: int) -> Submission | None:
    return session.get(Submission, submission_id, options=[selectinload(Submission.results)])


def current_result(submission: Submission) -> Result | None:
    """The final record: the result of the submission's current generation, if graded."""
    for result in submission.results:
        if result.generation == submission.generation:
            return result
    return None


def get_source(session: Session, submission: Submission) -> bytes | None:
    if submission.source_sha256 is None:
        return None
    blob = session.get(Blob, submission.source_sha256)
    return blob.content if blob is not None else None


def get_batch(session: Session, batch_id: int) -> Batch | None:
    return session.get(
        Batch, batch_id, options=[selectinload(Batch.submissions).selectinload(Submission.results)]
    )


def list_batches(session: Session, *, limit: int, offset: int) -> list[Batch]:
    return list(session.scalars(select(Batch).order_by(Batch.id.desc()).limit(limit).offset(offset)))


def progress(session: Session, batch_ids: list[int]) -> dict[int, Progress]:
    """Status and done/total for each batch, counted from its submissions' states."""
    counts: dict[int, Counter[str]] = {batch_id: Counter() for batch_id in batch_ids}
    if batch_ids:
        counted = session.execute(
            select(Submission.batch_id, Submission.state, func.count())
            .where(Submission.batch_id.in_(batch_ids))
            .group_by(Submission.batch_id, Submission.state)
        )
        for batch_id, state, count in counted:
            if batch_id is not None:
                counts[batch_id][state] = count
    rows = session.execute(select(Batch.id, Batch.error).where(Batch.id.in_(batch_ids)))
    errors = {row.id: row.error for row in rows}
    return {batch_id: batch_progress(counts[batch_id], errors.get(batch_id)) for batch_id in batch_ids}


def batch_progress(states: Counter[str], error: str | None = None) -> Progress:
    total = sum(states.values())
    done = sum(states[s] for s in FINISHED)
    if error:
        status = "failed"
    elif done == total:
        status = "failed" if states[ERROR] else "done"
    elif states[RUNNING] or states[GRADED] or states[ERROR]:
        status = "running"
    else:
        status = "queued"
    return Progress(done=done, total=total, status=status)


def loaded_progress(batch: Batch) -> Progress:
    """A batch's progress counted from its loaded submissions (as `get_batch` loads them), with no query.

    Counted from the same rows the caller shows, so the status never runs ahead of the scores shown.
    """
    return batch_progress(Counter(s.state for s in batch.submissions), batch.error)


# --- callback deliveries -------------------------------------------------------------------------


def due_deliveries(session: Session, now: datetime, limit: int = 20) -> list[CallbackDelivery]:
    return list(
        session.scalars(
            select(CallbackDelivery)
            .where(CallbackDelivery.state == "pending", CallbackDelivery.next_attempt_at <= now)
            .order_by(CallbackDelivery.next_attempt_at)
            .limit(limit)
        )
    )


def claim_delivery(session: Session, delivery: CallbackDelivery, lease: timedelta) -> bool:
    """Take a delivery for one attempt; False when another dispatcher took it first."""
    attempts = delivery.attempts
    taken = session.execute(
        update(CallbackDelivery)
        .where(
            CallbackDelivery.id == delivery.id,
            CallbackDelivery.state == "pending",
            CallbackDelivery.attempts == attempts,
        )
        .values(attempts=attempts + 1, next_attempt_at=utcnow() + lease)
        .execution_options(synchronize_session=False)
    )
    return bool(taken.rowcount)  # type: ignore[attr-defined]


def finish_delivery_attempt(
    session: Session,
    delivery_id: int,
    *,
    delivered: bool,
    status: int | None,
    error: str | None,
    retry_at: datetime | None,
) -> None:
    """Record one attempt: delivered, retried at `retry_at`, or (no retry left) failed."""
    values: dict[str, Any] = {"last_status": status, "last_error": error}
    if delivered:
        values.update(state="delivered", delivered_at=utcnow())
    elif retry_at is None:
        values.update(state="failed")
    else:
        values.update(next_attempt_at=retry_at)
    session.execute(update(CallbackDelivery).where(CallbackDelivery.id == delivery_id).values(**values))


def delivery_for(session: Session, submission: Submission) -> CallbackDelivery | None:
    return session.scalars(
        select(CallbackDelivery)
        .where(CallbackDelivery.submission_id == submission.id)
        .order_by(CallbackDelivery.generation.desc())
    ).first()


def delivery_payload(session: Session, delivery: CallbackDelivery) -> dict[str, Any] | None:
    result = _result_for(session, delivery.submission_id, delivery.generation)
    if result is None:
        return None
    return {**result.report, "id": delivery.submission_id}
