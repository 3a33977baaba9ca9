"""The real-server fixtures really start servers: PostgreSQL, and both database URLs."""

from __future__ import annotations

import psycopg
import pytest
import sqlalchemy as sa


def _conninfo(sqlalchemy_url: str) -> str:
    """A libpq URL from the fixtures' SQLAlchemy URL (drop the ``+psycopg`` driver)."""
    return (
        sa.make_url(sqlalchemy_url)
        .set(drivername="postgresql")
        .render_as_string(hide_password=False)
    )


def test_postgres_server_answers(postgres_url: str) -> None:
    with psycopg.connect(_conninfo(postgres_url)) as conn:
        row = conn.execute("select version()").fetchone()
    assert row is not None
    assert row[0].startswith("PostgreSQL ")


def test_postgres_database_is_fresh_and_writable(postgres_database: str) -> None:
    name = sa.make_url(postgres_database).database
    assert name is not None and name.startswith("test_")
    with psycopg.connect(_conninfo(postgres_database)) as conn:
        assert conn.execute("select current_database()").fetchone() == (name,)
        tables = conn.execute(
            "select count(*) from information_schema.tables where table_schema = 'public'"
        ).fetchone()
        assert tables == (0,)
        conn.execute("create table t (id int primary key)")


def test_database_url_round_trip(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    try:
        metadata = sa.MetaData()
        table = sa.Table(
            "probe",
            metadata,
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("name", sa.String(50), nullable=False),
        )
        metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(table.insert(), [{"id": 1, "name": "ä-ok"}])
        with engine.connect() as conn:
            assert conn.execute(sa.select(table.c.name)).scalar_one() == "ä-ok"
        assert engine.dialect.name in {"sqlite", "postgresql"}
    finally:
        engine.dispose()


def test_database_url_is_parametrised(request: pytest.FixtureRequest, database_url: str) -> None:
    backend = request.node.callspec.params["database_url"]
    assert sa.make_url(database_url).get_backend_name() == backend
    if backend == "postgresql":
        assert request.node.get_closest_marker("integration") is not None
