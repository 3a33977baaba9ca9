"""The total beside a page of `certs list` (and the API's list): counted when the page is
full, read off the page when it holds the last row, the same number either way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import event, text

from mailpki.instance.instance import Instance
from mailpki.policy.person import Person
from tests.integration.cli_helpers import mailpki


def person(mail: str) -> Person:
    return Person.from_untrusted(
        name="Pat Smith",
        email=mail,
        organisation="Example Corp",
        organisation_identifier="NTRGB-12345678",
    )


def _filled(home: Path) -> Instance:
    instance = Instance.open(home)
    for mail in ["pat@example.com"] * 3 + ["kim@example.com"] * 2:
        key = ec.generate_private_key(ec.SECP256R1()).public_key()
        instance.ca.issue_for_key(key, person(mail), actor="test")
    return instance


@pytest.fixture
def instance(home: Path) -> Instance:
    """On SQLite and on PostgreSQL."""
    return _filled(home)


@pytest.fixture
def postgres_instance(tmp_path: Path, postgres_database: str) -> Instance:
    target = tmp_path / "corp-pg"
    result = mailpki(
        "init", "--home", target, "--org", "Example Corp", "--domain", "example.com",
        "--ca-key-type", "p256", "--database", postgres_database,
        "--org-id", "NTRGB-12345678",
    )  # fmt: skip
    assert result.code == 0, result.err
    return _filled(target)


# (limit, offset, email) -> (rows on the page, total)
CASES: list[tuple[int | None, int, str | None, int, int]] = [
    (None, 0, None, 5, 5),
    (50, 0, None, 5, 5),
    (5, 0, None, 5, 5),  # a full page: counted
    (2, 0, None, 2, 5),
    (2, 2, None, 2, 5),
    (2, 4, None, 1, 5),
    (2, 5, None, 0, 5),  # past the end: counted
    (2, 9, None, 0, 5),
    (None, 3, None, 2, 5),
    (50, 0, "pat@example.com", 3, 3),
    (50, 0, "PAT@example.com", 3, 3),
    (2, 0, "pat@example.com", 2, 3),
    (2, 2, "kim@example.com", 0, 2),
    (50, 0, "nobody@example.com", 0, 0),
]


def test_total_is_the_number_of_matching_certificates(instance: Instance) -> None:
    for limit, offset, email, rows, total in CASES:
        page, counted = instance.ca.list_certificates(limit=limit, offset=offset, email=email)
        assert (len(page), counted) == (rows, total), (limit, offset, email)


def test_a_lookup_by_mail_is_one_query(instance: Instance) -> None:
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "certificates" in statement:
            statements.append(statement)

    event.listen(instance.db.engine, "before_cursor_execute", seen)
    try:
        page, total = instance.ca.list_certificates(limit=50, email="kim@example.com")
    finally:
        event.remove(instance.db.engine, "before_cursor_execute", seen)
    assert (len(page), total) == (2, 2)
    assert len(statements) == 1, statements


def test_directory_lookups_stay_prepared_on_postgresql(postgres_instance: Instance) -> None:
    """No ROLLBACK after each lookup drops psycopg's prepared statements: a repeated lookup
    is planned once per connection, not on every request (PostgreSQL only: SQLite has no
    server-side statements)."""
    instance = postgres_instance
    for _ in range(8):  # psycopg prepares a statement on its fifth execution
        assert len(instance.ca.valid_certificates("Kim@example.com")) == 2
    with instance.db.engine.connect() as connection:
        prepared = connection.execute(
            text("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE :der"),
            {"der": "%certificates.der%"},
        ).scalar()
    assert prepared == 1
