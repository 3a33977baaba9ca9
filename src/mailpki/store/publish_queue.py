"""The durable publish queue shared by the directory and the DNS publishers.

A job is added in the transaction that issues, renews or revokes a certificate, so the
certificate and its job cannot disagree. Each publisher delivers only its own actions
(directory: ``publish``/``unpublish``; DNS: ``smimea``) and marks each job done, or
failed with its error and a backed-off next attempt.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailpki.base.backoff import backoff
from mailpki.store.db import Database
from mailpki.store.models import PublishJob

__all__ = ["PublishQueue", "add_job"]


def add_job(session: Session, *, serial: str, email: str, action: str) -> None:
    """Queue a job for `email` in the caller's transaction."""
    now = datetime.now(UTC)
    session.add(
        PublishJob(
            serial=serial,
            email=email.lower(),
            action=action,
            created_at=now,
            attempts=0,
            next_attempt_at=now,
        )
    )


class PublishQueue:
    """One publisher's view of the queue: the jobs with its `actions`."""

    def __init__(
        self,
        db: Database,
        actions: Collection[str],
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.db = db
        self.actions = tuple(actions)
        self.clock = clock or (lambda: datetime.now(UTC))

    def pending(self) -> int:
        """Jobs not yet done, whether due or waiting for their next attempt."""
        with self.db.session() as session:
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(PublishJob)
                    .where(PublishJob.done_at.is_(None), PublishJob.action.in_(self.actions))
                )
                or 0
            )

    def finish(self, ids: Collection[int], *, note: str | None = None) -> None:
        """Mark jobs done; `note` says why one was done without delivery."""
        with self.db.transaction() as session:
            for job in session.scalars(select(PublishJob).where(PublishJob.id.in_(ids))):
                job.done_at = self.clock()
                job.last_error = note[:1000] if note else None

    def retry(self, ids: Collection[int], error: str) -> None:
        """Record a failed attempt; the jobs are tried again after a backoff."""
        with self.db.transaction() as session:
            for job in session.scalars(select(PublishJob).where(PublishJob.id.in_(ids))):
                job.attempts += 1
                job.last_error = error[:1000]
                job.next_attempt_at = self.clock() + backoff(job.attempts)
