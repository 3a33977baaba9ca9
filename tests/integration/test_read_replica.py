"""Reads from a real PostgreSQL streaming replica, and the fall back to the primary when it
is down or lags; /readyz says which."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from mailpki.instance.health import check_readiness
from mailpki.instance.instance import Instance
from mailpki.store.db import Database
from mailpki.store.replica import ReadRouting
from tests.fixtures.postgres_replica import ReplicaPair
from tests.integration.cli_helpers import mailpki


@pytest.fixture
def routing(postgres_pair: ReplicaPair) -> Iterator[ReadRouting]:
    primary = Database(postgres_pair.primary.url())
    routing = ReadRouting(
        primary, postgres_pair.replica.url(), max_lag=timedelta(seconds=5), check_every=0
    )
    yield routing
    routing.dispose()
    primary.dispose()


def test_reads_go_to_the_replica_while_it_streams(
    postgres_pair: ReplicaPair, routing: ReadRouting
) -> None:
    postgres_pair.wait_streaming()
    state = routing.state(fresh=True)
    assert state.in_use, state.reason
    assert routing.reader() is routing.replica
    assert postgres_pair.sql(postgres_pair.replica, "SELECT pg_is_in_recovery()") == "True"


def test_a_stopped_replica_falls_back_to_the_primary_and_comes_back(
    postgres_pair: ReplicaPair, routing: ReadRouting
) -> None:
    postgres_pair.stop_replica()
    try:
        state = routing.state(fresh=True)
        assert not state.in_use
        assert "unreachable" in state.reason
        assert routing.reader() is routing.primary
    finally:
        postgres_pair.start_replica()
    assert routing.state(fresh=True).in_use


def test_a_lagging_replica_falls_back(postgres_pair: ReplicaPair, routing: ReadRouting) -> None:
    strict = ReadRouting(
        routing.primary, postgres_pair.replica.url(), max_lag=timedelta(0), check_every=0
    )
    postgres_pair.sql(postgres_pair.replica, "SELECT pg_wal_replay_pause()")
    try:
        postgres_pair.sql(postgres_pair.primary, "CREATE TABLE IF NOT EXISTS lag_probe (x int)")
        postgres_pair.sql(postgres_pair.primary, "INSERT INTO lag_probe VALUES (1) RETURNING x")
        postgres_pair.sql(postgres_pair.primary, "SELECT pg_switch_wal()")
        deadline = time.monotonic() + 20  # until the replica has received what it may not replay
        while True:
            state = strict.state(fresh=True)
            if not state.in_use or time.monotonic() > deadline:
                break
            postgres_pair.sql(postgres_pair.primary, "INSERT INTO lag_probe VALUES (2) RETURNING x")
            time.sleep(0.2)
        assert not state.in_use
        assert "lags" in state.reason
        assert strict.reader() is strict.primary
    finally:
        postgres_pair.sql(postgres_pair.replica, "SELECT pg_wal_replay_resume()")
        strict.dispose()
    postgres_pair.wait_streaming()


def test_an_instance_on_a_replica_is_ready_and_says_where_reads_go(
    postgres_pair: ReplicaPair, tmp_path: Path
) -> None:
    import psycopg

    name = f"inst_{tmp_path.name[-12:].replace('-', '_').lower()}"
    with psycopg.connect(postgres_pair.primary.conninfo(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    home = tmp_path / "corp"
    result = mailpki(
        "init", "--home", home, "--org", "Example Corp", "--domain", "example.com",
        "--ca-key-type", "p256", "--database", postgres_pair.primary.url(name),
    )  # fmt: skip
    assert result.code == 0, result.err
    bad = mailpki("config", "set", "--home", home, "database.read_url", "sqlite:///x.db")
    assert bad.code != 0
    ok = mailpki(
        "config", "set", "--home", home, "database.read_url", postgres_pair.replica.url(name)
    )
    assert ok.code == 0, ok.err
    postgres_pair.wait_streaming()

    instance = Instance.open(home)
    try:
        checks = {c.name: c for c in check_readiness(instance).checks}
        assert checks["replica"].ok and "replica in use" in checks["replica"].detail
        assert instance.read_db() is instance.read_routing.replica  # type: ignore[union-attr]
        postgres_pair.stop_replica()
        try:
            readiness = check_readiness(instance)
            assert readiness.ready  # the primary still serves
            detail = {c.name: c.detail for c in readiness.checks}["replica"]
            assert "reads go to the primary" in detail
            assert instance.read_db() is instance.db
            json.dumps([c.detail for c in readiness.checks])
        finally:
            postgres_pair.start_replica()
    finally:
        instance.close()
