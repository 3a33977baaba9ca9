"""Job leases on real SQLite and PostgreSQL: one holder at a time, takeover after expiry,
and two server nodes' housekeeping running each chore once."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mailpki.instance.housekeeping import LEASE_TTL, Housekeeping
from mailpki.instance.instance import Instance
from mailpki.store.db import Database
from mailpki.store.leases import Leases

TTL = timedelta(seconds=45)


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def test_one_holder_at_a_time_and_takeover_after_expiry(home: Path) -> None:
    instance = Instance.open(home)
    try:
        clock = Clock()
        a = Leases(instance.db, holder="node-a", clock=clock)
        b = Leases(instance.db, holder="node-b", clock=clock)
        assert a.acquire("publish", TTL)
        assert not b.acquire("publish", TTL)
        assert a.acquire("publish", TTL)  # renewal by the holder
        assert b.acquire("mail", TTL)  # another job is free
        assert a.holder_of("publish") == "node-a"

        clock.now += TTL - timedelta(seconds=1)
        assert not b.acquire("publish", TTL)  # a's lease (renewed above) still runs
        clock.now += timedelta(seconds=2)
        assert b.acquire("publish", TTL)  # a stopped renewing: b takes over
        assert not a.acquire("publish", TTL)

        b.release("publish")
        assert a.holder_of("publish") is None
        assert a.acquire("publish", TTL)
    finally:
        instance.close()


def test_racing_holders_exactly_one_wins(home: Path) -> None:
    instance = Instance.open(home)
    url = instance.config.database_url
    instance.close()
    for round_ in range(3):
        databases = [Database(url) for _ in range(6)]
        barrier = threading.Barrier(len(databases))
        wins: list[str] = []

        def race(db: Database, holder: str) -> None:
            leases = Leases(db, holder=holder)
            barrier.wait()
            if leases.acquire(f"race-{round_}", TTL):
                wins.append(holder)

        threads = [
            threading.Thread(target=race, args=(db, f"node-{i}")) for i, db in enumerate(databases)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        for db in databases:
            db.dispose()
        assert len(wins) == 1, wins


def test_two_nodes_run_each_chore_once_and_a_dead_node_is_replaced(home: Path) -> None:
    node1, node2 = Instance.open(home), Instance.open(home)
    try:
        clock = Clock()
        first = Housekeeping(node1, leases=Leases(node1.db, holder="node-1", clock=clock))
        second = Housekeeping(node2, leases=Leases(node2.db, holder="node-2", clock=clock))
        ran_first = first.run_once()
        ran_second = second.run_once()
        assert ran_first == [name for name, _ in first.chores()]
        assert ran_second == []  # every chore is held by node 1

        # Node 1 dies (it never releases); once its leases run out node 2 takes over.
        clock.now += LEASE_TTL + timedelta(seconds=1)
        assert second.run_once() == ran_first
        assert first.run_once() == []
    finally:
        node1.close()
        node2.close()
