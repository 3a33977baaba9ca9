"""Once-only marks (table lifecycle_marks): the database, not a process, decides who
does a thing first, so several nodes running the same chore never do it twice."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from mailpki.store.models import LifecycleMark

CHUNK = 500
# The table, not the ORM class: bulk statements on it skip the ORM's per-row bookkeeping.
_MARKS: Table = LifecycleMark.__table__  # type: ignore[assignment]


def claim(session: Session, kind: str, subject: str, now: datetime) -> bool:
    """Insert the mark in the caller's transaction; False if it exists (another run,
    perhaps on another node, claimed it first; a concurrent claim waits for that
    transaction on PostgreSQL and then finds the row)."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        insert(LifecycleMark)
        .values(kind=kind, subject=subject, created_at=now)
        .on_conflict_do_nothing(index_elements=["kind", "subject"])
        .returning(LifecycleMark.id)
    )
    return session.execute(statement).first() is not None


def claim_batch(
    session: Session, marks: list[tuple[str, str]], now: datetime
) -> set[tuple[str, str]]:
    """Claim many (kind, subject) marks in one statement per CHUNK; returns those this
    call inserted (the others were claimed before, perhaps by another node)."""
    won: set[tuple[str, str]] = set()
    unique = sorted(set(marks))
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    for start in range(0, len(unique), CHUNK):
        rows = [
            {"kind": kind, "subject": subject, "created_at": now}
            for kind, subject in unique[start : start + CHUNK]
        ]
        statement = (
            insert(_MARKS)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["kind", "subject"])
            .returning(_MARKS.c.kind, _MARKS.c.subject)
        )
        won.update(
            (str(kind), str(subject)) for kind, subject in session.connection().execute(statement)
        )
    return won


def subjects_of(session: Session, kind: str) -> set[str]:
    """Every subject marked with `kind` (one streamed query, for a check of everyone)."""
    rows = session.execute(
        select(LifecycleMark.subject)
        .where(LifecycleMark.kind == kind)
        .execution_options(yield_per=10_000)
    )
    return {str(subject) for (subject,) in rows}


def claim_many(session: Session, kind: str, subjects: Iterable[str], now: datetime) -> None:
    """Insert many marks of one kind at once; those that exist are left alone."""
    rows = [{"kind": kind, "subject": s, "created_at": now} for s in sorted(set(subjects))]
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(_MARKS).on_conflict_do_nothing(index_elements=["kind", "subject"])
    connection = session.connection()
    for start in range(0, len(rows), CHUNK):
        connection.execute(statement, rows[start : start + CHUNK])


def claimed(
    session: Session, kinds: Iterable[str], subjects: Iterable[str]
) -> set[tuple[str, str]]:
    """Which of these (kind, subject) marks exist already."""
    kind_list = sorted(set(kinds))
    wanted = sorted(set(subjects))
    found: set[tuple[str, str]] = set()
    for start in range(0, len(wanted), CHUNK):
        rows = session.execute(
            select(LifecycleMark.kind, LifecycleMark.subject).where(
                LifecycleMark.kind.in_(kind_list),
                LifecycleMark.subject.in_(wanted[start : start + CHUNK]),
            )
        )
        found.update((str(kind), str(subject)) for kind, subject in rows)
    return found
