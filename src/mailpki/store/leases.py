"""Leases on background jobs, kept in the database every node shares.

A node takes a job's lease when nobody holds it or the holder's lease has run out, and
renews it each time it runs the job; while it holds the lease no other node runs that
job. A node that dies simply stops renewing: its jobs pass to another node once the
lease expires. The same call works on one node (it always wins) and on many, on SQLite
and on PostgreSQL: a conditional UPDATE, or an INSERT that the primary key lets only one
node win.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from mailpki.errors import StoreError
from mailpki.store.db import Database
from mailpki.store.models import JobLease


def node_id() -> str:
    """This process, as lease holder: host, pid and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class Leases:
    """Take, renew and give back job leases for one holder."""

    def __init__(
        self,
        db: Database,
        *,
        holder: str | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.db = db
        self.holder = holder or node_id()
        self._clock = clock or (lambda: datetime.now(UTC))

    def acquire(self, name: str, ttl: timedelta) -> bool:
        """Take or renew the lease on `name` for `ttl`; False while another holder's
        lease is still running. Counts a run when it succeeds."""
        now = self._clock()
        try:
            with self.db.transaction() as session:
                taken = session.execute(
                    update(JobLease)
                    .where(JobLease.name == name)
                    .where((JobLease.holder == self.holder) | (JobLease.expires_at <= now))
                    .values(
                        holder=self.holder,
                        acquired_at=now,
                        expires_at=now + ttl,
                        runs=JobLease.runs + 1,
                    )
                    .execution_options(synchronize_session=False)
                )
                if taken.rowcount:  # type: ignore[attr-defined]
                    return True
                if session.get(JobLease, name) is not None:
                    return False
                session.add(
                    JobLease(
                        name=name, holder=self.holder, acquired_at=now, expires_at=now + ttl, runs=1
                    )
                )
        except StoreError as exc:
            if isinstance(exc.__cause__, IntegrityError):
                return False  # another node inserted the row first: it holds the lease
            raise
        return True

    def release(self, name: str) -> None:
        """Give the lease back early (a clean shutdown), so another node need not wait."""
        with self.db.transaction() as session:
            session.execute(
                update(JobLease)
                .where(JobLease.name == name, JobLease.holder == self.holder)
                .values(expires_at=self._clock())
                .execution_options(synchronize_session=False)
            )

    def holder_of(self, name: str) -> str | None:
        """Who holds `name` now (None: nobody, or the lease ran out)."""
        with self.db.session() as session:
            lease = session.get(JobLease, name)
        if lease is None or lease.expires_at <= self._clock():
            return None
        return lease.holder
