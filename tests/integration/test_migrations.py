"""Alembic migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from mailpki.store.db import Database
from mailpki.store.models import Base


def test_migrated_schema_matches_models(database_url: str) -> None:
    db = Database(database_url)
    assert not db.is_initialised()
    db.migrate()
    db.migrate()  # idempotent
    assert db.is_initialised()
    with db.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    db.dispose()
