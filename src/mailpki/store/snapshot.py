"""Consistent copies of a database while it is in use, and putting them back.

SQLite: the online backup API (a consistent copy even while other processes write).
PostgreSQL: `pg_dump --format=custom` (one snapshot transaction) and `pg_restore` into
an empty database. The password of a PostgreSQL URL goes to the tools through the
environment, never on a command line other users can read.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError

from mailpki.errors import StoreError

SQLITE_MAGIC = b"SQLite format 3\x00"
_TOOL_TIMEOUT = 6 * 3600


def is_sqlite_file(path: Path) -> bool:
    """Whether `path` is an SQLite database (by its header, not its name)."""
    try:
        with path.open("rb") as handle:
            return handle.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False


def copy_sqlite(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite database (WAL included) into a new file."""
    if target.exists():
        raise StoreError(f"{target} already exists")
    try:
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        try:
            dst = sqlite3.connect(target)
            try:
                src.backup(dst)
                dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            finally:
                dst.close()
        finally:
            src.close()
    except sqlite3.Error as exc:
        target.unlink(missing_ok=True)
        raise StoreError(f"cannot copy the SQLite database {source}: {exc}") from None


def check_sqlite_file(path: Path) -> None:
    """Refuse a file that is not a sound SQLite database (header and integrity check)."""
    if not is_sqlite_file(path):
        raise StoreError(f"{path.name} is not an SQLite database")
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            row = connection.execute("PRAGMA integrity_check").fetchone()
        finally:
            connection.close()
    except sqlite3.Error as exc:
        raise StoreError(f"{path.name} is not a sound SQLite database: {exc}") from None
    if not row or row[0] != "ok":
        raise StoreError(f"{path.name} fails SQLite's integrity check: {row[0] if row else '?'}")


@dataclass(frozen=True)
class PostgresTarget:
    """Where a PostgreSQL tool connects, split out of a SQLAlchemy URL."""

    host: str
    port: int
    user: str
    database: str
    password: str | None

    @classmethod
    def from_url(cls, url: str) -> PostgresTarget:
        try:
            parsed: URL = make_url(url)
        except Exception:
            raise StoreError("the PostgreSQL URL is malformed") from None
        if not parsed.drivername.startswith("postgresql"):
            raise StoreError(f"not a PostgreSQL URL: {parsed.drivername}")
        return cls(
            host=parsed.host or "localhost",
            port=parsed.port or 5432,
            user=parsed.username or "postgres",
            database=parsed.database or "postgres",
            password=parsed.password,
        )

    def arguments(self) -> list[str]:
        return ["-h", self.host, "-p", str(self.port), "-U", self.user, "-d", self.database]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("PGPASSWORD", None)
        if self.password:
            env["PGPASSWORD"] = self.password
        return env


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if candidates:
        return str(candidates[-1])
    raise StoreError(f"{name} is not installed (Debian: apt-get install postgresql-client)")


def _run(command: list[str], target: PostgresTarget, what: str) -> None:
    try:
        proc = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=target.environment(),
            timeout=_TOOL_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StoreError(f"{what} failed: {exc}") from None
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise StoreError(f"{what} failed: {detail[-1] if detail else f'exit {proc.returncode}'}")


def dump_postgres(url: str, target_file: Path) -> None:
    """`pg_dump --format=custom` of the database `url` names (one consistent snapshot)."""
    target = PostgresTarget.from_url(url)
    _run(
        [_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges",
         "-f", str(target_file), *target.arguments()],
        target,
        f"pg_dump of {target.database} on {target.host}:{target.port}",
    )  # fmt: skip


def database_is_empty(url: str) -> bool:
    """Whether the database has no tables at all (a safe target for a restore)."""
    try:
        engine = create_engine(url)
        try:
            return not inspect(engine).get_table_names()
        finally:
            engine.dispose()
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot reach the database to restore into: {exc}") from None


def restore_postgres(url: str, dump_file: Path) -> None:
    """`pg_restore` a custom-format dump into the (empty) database `url` names."""
    if not database_is_empty(url):
        raise StoreError(
            "the PostgreSQL database to restore into is not empty; create a new database "
            "(createdb) and point database.url or --database at it"
        )
    target = PostgresTarget.from_url(url)
    _run(
        [_tool("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error",
         "--single-transaction", *target.arguments(), str(dump_file)],
        target,
        f"pg_restore into {target.database} on {target.host}:{target.port}",
    )  # fmt: skip
