"""Logon limiter, one-time PINs and the embedded directory on a real PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from argon2 import PasswordHasher
from sqlalchemy import delete, select

from mailpki.auth.identity import Identity
from mailpki.auth.limiter import LoginLimiter
from mailpki.auth.pins import WRONG_PIN, PinAuthenticator, import_pins
from mailpki.directory.embedded import EmbeddedDirectory
from mailpki.directory.people_import import import_people
from mailpki.directory.validation import embedded_dn
from mailpki.errors import AuthenticationError
from mailpki.store.db import Database
from mailpki.store.models import AuthFailure, HRPin

pytestmark = pytest.mark.integration

THREADS = 8
PIN = "Race-pin-4242"


@pytest.fixture
def db(postgres_database: str) -> Iterator[Database]:
    database = Database(postgres_database)
    database.migrate()
    yield database
    database.dispose()


def run_together(work: Callable[[int], Any], n: int = THREADS) -> tuple[list[Any], list[Any]]:
    """Start `n` threads at once; returns (results, exceptions)."""
    start = threading.Barrier(n)
    results: list[Any] = []
    errors: list[Any] = []
    lock = threading.Lock()

    def body(i: int) -> None:
        start.wait()
        try:
            value = work(i)
        except BaseException as exc:  # collected and checked by the test
            with lock:
                errors.append(exc)
        else:
            with lock:
                results.append(value)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results, errors


def test_limiter_lockout_and_expiry(db: Database) -> None:
    now = [datetime(2026, 3, 2, 9, 0, tzinfo=UTC)]
    limiter = LoginLimiter(db, max_failures=3, lockout=timedelta(minutes=10), clock=lambda: now[0])
    for _ in range(3):
        limiter.failed("alice")
    with pytest.raises(AuthenticationError, match="try again after 09:10 UTC"):
        limiter.check("alice")
    now[0] += timedelta(minutes=10)
    limiter.check("alice")
    limiter.failed("alice")
    limiter.succeeded("alice")
    with db.session() as session:
        assert session.scalars(select(AuthFailure)).all() == []


def test_concurrent_failures_of_a_new_key_are_all_counted(db: Database) -> None:
    limiter = LoginLimiter(db, max_failures=100, lockout=timedelta(minutes=10))
    results, errors = run_together(lambda _i: limiter.failed("bob"))
    assert errors == [] and len(results) == THREADS
    with db.session() as session:
        row = session.scalars(select(AuthFailure)).one()
    assert row.failures == THREADS and row.locked_until is None


def _pin_logon(db: Database, *, max_attempts: int = 3) -> PinAuthenticator:
    hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    report = import_pins(
        db,
        f"employee_id,mail,name,pin\nE1,race@example.com,Race Runner,{PIN}\n".encode(),
        validity=timedelta(days=1),
        hasher=hasher,
    )
    assert report.added == 1
    limiter = LoginLimiter(db, max_failures=1000, lockout=timedelta(minutes=10))
    return PinAuthenticator(
        db, limiter, max_attempts=max_attempts, lookup_mail=lambda _m: None, hasher=hasher
    )


def test_pin_is_one_time(db: Database) -> None:
    auth = _pin_logon(db)
    identity = auth.authenticate("E1", PIN)
    assert identity.method == "pin" and identity.entry.mail == "race@example.com"
    with pytest.raises(AuthenticationError, match="already used"):
        auth.authenticate("race@example.com", PIN)


def test_two_racing_logons_with_one_pin_exactly_one_wins(db: Database) -> None:
    for _ in range(5):  # several rounds: a race lost by luck once would hide a bug
        with db.transaction() as session:
            session.execute(delete(HRPin))
        auth = _pin_logon(db)
        results, errors = run_together(lambda _i: auth.authenticate("E1", PIN), n=2)
        assert len(results) == 1 and isinstance(results[0], Identity), (results, errors)
        assert len(errors) == 1 and isinstance(errors[0], AuthenticationError), errors
        assert str(errors[0]) == "this PIN was already used"


def test_parallel_guesses_never_exceed_the_attempt_limit(db: Database) -> None:
    auth = _pin_logon(db, max_attempts=3)

    def guess(i: int) -> Identity:
        return auth.authenticate("E1", f"wrong-{i:04d}")

    results, errors = run_together(guess)
    assert results == [] and all(str(e) == WRONG_PIN for e in errors)
    with db.session() as session:
        assert session.scalars(select(HRPin.attempts)).one() == 3
    with pytest.raises(AuthenticationError, match="void after too many"):
        auth.authenticate("E1", PIN)


def test_embedded_directory_import_search_and_publish(db: Database) -> None:
    report = import_people(
        db,
        b"login,mail,name\nalice,Alice@Example.com,Alice A\na_b,ab@example.com,Under\n"
        b"axb,axb@example.com,Ax\n",
        kind="csv",
    )
    assert (report.added, report.errors) == (3, [])
    report = import_people(db, b"login,mail,name\nalice,alice@example.com,Alice B\n", kind="csv")
    assert (report.added, report.updated) == (0, 1)
    directory = EmbeddedDirectory(db)
    entry = directory.find_by_mail("ALICE@example.com")
    assert entry is not None and entry.display_name == "Alice B"
    # PostgreSQL's LIKE is case-sensitive and "_" a wildcard: both handled.
    assert [e.login for e in directory.search("ALI")] == ["alice"]
    assert [e.login for e in directory.search("a_")] == ["a_b"]
    assert directory.search("\x00") == []
    dn = embedded_dn("alice")
    results, errors = run_together(lambda _i: directory.publish(dn, b"\x30\x00"), n=4)
    assert errors == [] and results == [True] * 4
    assert directory.certificates(dn) == [b"\x30\x00"]
