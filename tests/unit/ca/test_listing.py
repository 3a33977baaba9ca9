"""ca/listing.py without a database: reason names, and which URLs read quickly."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from cryptography import x509

from mailpki.ca.crl import reason_name
from mailpki.ca.listing import RFC_REASON_NAMES, rfc_reason
from mailpki.errors import StoreError
from mailpki.store.quick_read import select_rows, sqlite_file


def test_reason_names_are_those_of_the_crl_module() -> None:
    assert {flag.name: reason_name(flag) for flag in x509.ReasonFlags} == RFC_REASON_NAMES
    assert rfc_reason(None) is None
    assert rfc_reason("something-else") == "something-else"


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:////srv/pki/mailpki.db", Path("/srv/pki/mailpki.db")),
        ("sqlite:///relative.db", Path("relative.db")),
        ("sqlite:///:memory:", None),
        ("sqlite://", None),
        ("sqlite:////srv/pki/mailpki.db?timeout=5", None),
        ("postgresql+psycopg://pki@db/pki", None),
        ("", None),
    ],
)
def test_which_urls_are_plain_sqlite_files(url: str, path: Path | None) -> None:
    assert sqlite_file(url) == path


def test_a_quick_read_cannot_write(tmp_path: Path) -> None:
    database = tmp_path / "x.db"
    with sqlite3.connect(database) as db:
        db.execute("CREATE TABLE t (a INTEGER)")
        db.execute("INSERT INTO t VALUES (1)")
    assert select_rows(database, ("SELECT a FROM t", ())) == [[(1,)]]
    with pytest.raises(StoreError, match="database error"):
        select_rows(database, ("DELETE FROM t", ()))
    with pytest.raises(StoreError, match="no such table"):
        select_rows(database, ("SELECT a FROM missing", ()))
    assert select_rows(database, ("SELECT count(*) FROM t", ())) == [[(1,)]]


def test_a_missing_file_is_not_created(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        select_rows(tmp_path / "none.db", ("SELECT 1", ()))
    assert not (tmp_path / "none.db").exists()
