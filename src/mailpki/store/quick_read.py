"""Reads without SQLAlchemy, for short commands on the embedded (SQLite) database.

Importing SQLAlchemy costs more than the whole of `mailpki certs list` may take (the
target is 0.3 s a command). Listing reads of such commands go through here when the
database is a plain SQLite file; every other database, and every write, goes through
`store.db.Database`. The query text of a quick read lives next to the SQLAlchemy query it
stands for, and a test holds the two to the same answers.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mailpki.errors import StoreError

_SQLITE_PREFIX = "sqlite:///"
BUSY_TIMEOUT_MS = 30_000  # as store.db's connections: wait out a writer, do not fail


def sqlite_file(url: str) -> Path | None:
    """The file of a plain `sqlite:///PATH` URL; None for any other database, for an
    in-memory one and for a URL with options (those go through SQLAlchemy)."""
    if not url.startswith(_SQLITE_PREFIX):
        return None
    path = url[len(_SQLITE_PREFIX) :]
    if not path or path == ":memory:" or "?" in path:
        return None
    return Path(path)


def select_rows(
    database: Path, *queries: tuple[str, Sequence[object]]
) -> list[list[tuple[Any, ...]]]:
    """The rows of each SELECT (sql, parameters), all in one read transaction (one
    snapshot), on a connection that can only read. A missing database file is refused,
    never created; any database error is a StoreError."""
    if not database.is_file():
        raise StoreError(f"the database {database} does not exist")
    try:
        connection = sqlite3.connect(
            f"file:{quote(str(database.resolve()))}?mode=rw",
            uri=True,
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
        )
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the database {database}: {exc}") from None
    try:
        connection.execute("PRAGMA query_only=ON")
        connection.execute("BEGIN")
        return [connection.execute(sql, tuple(params)).fetchall() for sql, params in queries]
    except sqlite3.Error as exc:
        raise StoreError(f"database error: {type(exc).__name__}: {exc}") from None
    finally:
        connection.close()
