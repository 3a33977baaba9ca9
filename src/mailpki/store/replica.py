"""Reads from a PostgreSQL streaming replica, with the primary as the fallback.

Only reads that may be a little behind go here (OCSP, the certificate directory, CRL
serving, searches); writes, and reads that must see their own write, stay on the
primary. The replica is checked at most every `check_every`: it is used while it answers,
is in recovery, streams from the primary and replays within `max_lag`; otherwise reads
fall back to the primary until a later check finds it healthy again.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from mailpki.store.db import Database

_LAG_QUERY = text(
    """
    SELECT pg_is_in_recovery(),
           CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
                ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())
           END,
           (SELECT status FROM pg_stat_wal_receiver LIMIT 1)
    """
)


@dataclass(frozen=True)
class ReplicaState:
    """The replica as last checked: whether reads go to it, and why not."""

    configured: bool
    in_use: bool
    lag_seconds: float | None
    reason: str


class ReadRouting:
    """Hands out the database a tolerant read should use: the replica or the primary."""

    def __init__(
        self,
        primary: Database,
        replica_url: str,
        *,
        max_lag: timedelta = timedelta(seconds=5),
        check_every: float = 5.0,
        connect_timeout: int = 2,
    ) -> None:
        self.primary = primary
        self.max_lag = max_lag
        self.check_every = check_every
        self.replica = Database(replica_url, connect_args={"connect_timeout": connect_timeout})
        self._probe = create_engine(
            replica_url, pool_pre_ping=True, connect_args={"connect_timeout": connect_timeout}
        )
        self._lock = threading.Lock()
        self._checked_at = 0.0
        self._state = ReplicaState(True, False, None, "not checked yet")

    def reader(self) -> Database:
        """The replica while it is healthy, else the primary."""
        return self.replica if self.state().in_use else self.primary

    def state(self, *, fresh: bool = False) -> ReplicaState:
        with self._lock:
            if fresh or time.monotonic() - self._checked_at >= self.check_every:
                self._state = self._check()
                self._checked_at = time.monotonic()
            return self._state

    def _check(self) -> ReplicaState:
        try:
            with self._probe.connect() as connection:
                in_recovery, lag, receiver = connection.execute(_LAG_QUERY).one()
        except SQLAlchemyError as exc:
            return ReplicaState(True, False, None, f"replica unreachable ({type(exc).__name__})")
        if not in_recovery:
            return ReplicaState(True, False, None, "database.read_url is not a replica")
        if receiver != "streaming":
            return ReplicaState(True, False, None, "replica is not streaming from the primary")
        if lag is None:  # behind, and nothing replayed since it started: age unknown
            return ReplicaState(True, False, None, "replica lags (catching up after a start)")
        lag = float(lag)
        if lag > self.max_lag.total_seconds():
            return ReplicaState(
                True,
                False,
                lag,
                f"replica lags {lag:.1f} s (limit {self.max_lag.total_seconds():g} s)",
            )
        return ReplicaState(True, True, lag, f"replica in use, lag {lag:.1f} s")

    def dispose(self) -> None:
        self.replica.dispose()
        self._probe.dispose()
