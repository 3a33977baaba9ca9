"""Stored points in time come back zone-aware UTC, whatever the database keeps."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select

from mailpki.errors import StoreError
from mailpki.store.db import Database
from mailpki.store.models import PortalSession


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path}/t.db")
    database.migrate()
    yield database
    database.dispose()


def _row(when: datetime, key: str = "a" * 64) -> PortalSession:
    return PortalSession(id_sha256=key, data="{}", created_at=when, seen_at=when, expires_at=when)


def test_sqlite_hands_back_aware_utc_even_for_another_zone(db: Database) -> None:
    berlin = datetime(2026, 11, 25, 10, 0, tzinfo=timezone(timedelta(hours=1)))
    with db.transaction() as session:
        session.add(_row(berlin))
    with db.session() as session:
        stored = session.scalar(select(PortalSession.created_at))
    assert stored == berlin and stored is not None
    assert stored.tzinfo == UTC and stored.hour == 9


def test_comparisons_in_sql_use_utc(db: Database) -> None:
    now = datetime.now(UTC)
    with db.transaction() as session:
        session.add(_row(now - timedelta(minutes=5)))
    later_elsewhere = (now + timedelta(minutes=1)).astimezone(timezone(timedelta(hours=-7)))
    with db.session() as session:
        found = session.scalars(
            select(PortalSession.id_sha256).where(PortalSession.expires_at <= later_elsewhere)
        ).all()
    assert found == ["a" * 64]


def test_a_naive_datetime_is_refused(db: Database) -> None:
    with pytest.raises(StoreError, match="naive datetime"), db.transaction() as session:
        session.add(_row(datetime(2026, 1, 1)))
        session.flush()
