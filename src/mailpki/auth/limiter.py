"""Lockout after too many failed logons, kept in the database (table auth_failures).

A key is locked once it collects `max_failures` failures within `lockout`; it stays
locked for `lockout`. Keys are stored as SHA-256 digests: people type passwords into
the login field, and such a "login" must not sit in the database in clear.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from mailpki.errors import AuthenticationError, ConfigError, StoreError
from mailpki.store.db import Database
from mailpki.store.models import AuthFailure

__all__ = ["LoginLimiter", "limiter_keys", "lockout_message"]

_ATTEMPTS = 3  # a concurrent first failure of one key can lose the insert race once


def limiter_keys(login: str, source: str = "") -> tuple[str, ...]:
    """The keys a logon counts against: the login (lower-cased), and login+source."""
    base = login.strip().lower()
    return (base, f"{base}\x1f{source}") if source else (base,)


def lock_end(until: datetime) -> str:
    """The lock's end as HH:MM UTC, rounded up: "after 10:16" must not be a minute early."""
    until = until.astimezone(UTC)
    if until.second or until.microsecond:
        until = until.replace(second=0, microsecond=0) + timedelta(minutes=1)
    return f"{until:%H:%M} UTC"


def lockout_message(until: datetime) -> str:
    return f"too many failed logons: try again after {lock_end(until)}"


def _digest(key: str) -> str:
    return hashlib.sha256(b"mailpki-logon-key\x00" + key.encode("utf-8", "replace")).hexdigest()


class LoginLimiter:
    def __init__(
        self,
        db: Database,
        *,
        max_failures: int,
        lockout: timedelta,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if isinstance(max_failures, bool) or not isinstance(max_failures, int) or max_failures < 1:
            raise ConfigError(f"max_failures must be at least 1, not {max_failures!r}")
        if lockout <= timedelta(0):
            raise ConfigError("the lockout time must be positive")
        self.db = db
        self.max_failures = max_failures
        self.lockout = lockout
        self._clock = clock or (lambda: datetime.now(UTC))

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ConfigError("the limiter clock returned a naive datetime")
        return now.astimezone(UTC)

    def locked_until(self, key: str) -> datetime | None:
        """When the lock on `key` ends, or None if it is not locked."""
        with self.db.session() as session:
            until = session.scalar(
                select(AuthFailure.locked_until).where(AuthFailure.key == _digest(key))
            )
        if until is None or until <= self._now():
            return None
        return until

    def check(self, key: str) -> None:
        """Raise AuthenticationError while `key` is locked."""
        until = self.locked_until(key)
        if until is not None:
            raise AuthenticationError(lockout_message(until))

    def failed(self, key: str) -> datetime | None:
        """Count a failure; returns the end of the lock if this failure set or kept one."""
        digest = _digest(key)
        for attempt in range(_ATTEMPTS):
            try:
                with self.db.transaction() as session:
                    now = self._now()
                    # FOR UPDATE serialises counters on PostgreSQL; SQLite writers are
                    # serialised by BEGIN IMMEDIATE already.
                    row = session.execute(
                        select(AuthFailure)
                        .where(AuthFailure.key == digest)
                        .with_for_update()
                        .execution_options(populate_existing=True)
                    ).scalar_one_or_none()
                    if row is None:
                        row = AuthFailure(
                            key=digest, failures=0, first_failure_at=now, locked_until=None
                        )
                        session.add(row)
                    locked = row.locked_until is not None and row.locked_until > now
                    if not locked and now - row.first_failure_at >= self.lockout:
                        # The window has passed (or an old lock expired): count afresh.
                        row.failures, row.first_failure_at, row.locked_until = 0, now, None
                    row.failures += 1
                    if not locked and row.failures >= self.max_failures:
                        row.locked_until = now + self.lockout
                    until = row.locked_until
                    session.flush()
                return until
            except StoreError as exc:
                if isinstance(exc.__cause__, IntegrityError) and attempt < _ATTEMPTS - 1:
                    continue  # another process inserted the row first: update it instead
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def succeeded(self, key: str) -> None:
        """Forget the failures of `key`."""
        with self.db.transaction() as session:
            session.execute(delete(AuthFailure).where(AuthFailure.key == _digest(key)))
