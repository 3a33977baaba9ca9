"""Tampering with an instance's audit log the way an administrator with database access
would: with the database's own client (`sqlite3`, `psql`, `pg_dump`), never through
mailpki's code. Shared by check_tamper.py and the integration tests.

Every kind leaves the rest of the database alone; `restore` puts the pristine copy back.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ZERO = "0" * 64

# kind -> SQL; "{k}" is how far from the end the tampering lands (1, 2, 3, ...).
SQL: dict[str, str] = {
    "modify": "UPDATE audit_records SET actor = 'cli:nobody' "
    "WHERE seq = (SELECT max(seq) FROM audit_records) - {k};",
    "delete": "DELETE FROM audit_records WHERE seq = (SELECT max(seq) FROM audit_records) - {k};",
    "insert": "INSERT INTO audit_records (seq, time, event, actor, data, prev_hash, hash) "
    "SELECT seq + 1000, time, 'cert.revoked', actor, data, hash, hash FROM audit_records "
    "WHERE seq = (SELECT max(seq) FROM audit_records) - {k};",
    "reorder": "UPDATE audit_records SET seq = 900000 WHERE seq = (SELECT max(seq) FROM audit_records) - {k} - 1;"
    "UPDATE audit_records SET seq = seq - 1 WHERE seq = (SELECT max(seq) FROM audit_records WHERE seq < 900000) - {k};"
    "UPDATE audit_records SET seq = (SELECT max(seq) FROM audit_records WHERE seq < 900000) - {k} WHERE seq = 900000;",
    "truncate": "DELETE FROM audit_records WHERE seq > (SELECT max(seq) FROM audit_records) - {k};",
    "truncate+drop-checkpoint+reset-head": (
        "DELETE FROM audit_records WHERE seq > (SELECT max(seq) FROM audit_records) - {k};"
        "DELETE FROM audit_checkpoints WHERE seq > (SELECT max(seq) FROM audit_records);"
        "UPDATE audit_head SET seq = (SELECT max(seq) FROM audit_records), "
        "hash = (SELECT hash FROM audit_records WHERE seq = (SELECT max(seq) FROM audit_records));"
    ),
    "drop-all-checkpoints": "DELETE FROM audit_checkpoints;",
    "wipe": f"DELETE FROM audit_checkpoints; DELETE FROM audit_records; "
    f"UPDATE audit_head SET seq = 0, hash = '{ZERO}';",
}
ROLLBACK = "roll-back-to-older-copy"
KINDS: tuple[str, ...] = (*SQL, ROLLBACK)


@dataclass
class SqliteTarget:
    """An instance database in a SQLite file, tampered with by the `sqlite3` CLI."""

    path: Path
    name: str = "SQLite"

    def run_sql(self, sql: str) -> None:
        subprocess.run(
            ["sqlite3", str(self.path), sql], check=True, capture_output=True, timeout=60
        )

    def save(self, to: Path) -> None:
        subprocess.run(
            ["sqlite3", str(self.path), f".backup '{to}'"], check=True, capture_output=True
        )

    def restore(self, copy: Path) -> None:
        subprocess.run(
            ["sqlite3", str(self.path), f".restore '{copy}'"], check=True, capture_output=True
        )


@dataclass
class PostgresTarget:
    """An instance database on PostgreSQL, tampered with by `psql` (saved by `pg_dump`)."""

    url: str  # postgresql+psycopg://user@host:port/db
    name: str = "PostgreSQL"

    @property
    def libpq(self) -> str:
        return self.url.replace("postgresql+psycopg://", "postgresql://", 1)

    def run_sql(self, sql: str) -> None:
        subprocess.run(
            ["psql", "-v", "ON_ERROR_STOP=1", "-q", "-d", self.libpq, "-c", f"BEGIN;{sql}COMMIT;"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip

    def save(self, to: Path) -> None:
        subprocess.run(
            ["pg_dump", "--clean", "--if-exists", "-d", self.libpq, "-f", str(to)],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip

    def restore(self, copy: Path) -> None:
        subprocess.run(
            ["psql", "-v", "ON_ERROR_STOP=1", "-q", "-d", self.libpq, "-f", str(copy)],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip


Target = SqliteTarget | PostgresTarget


def tamper(target: Target, kind: str, k: int, older_copy: Path) -> None:
    """Apply one tampering of ``kind`` at distance ``k`` from the end of the log."""
    if kind == ROLLBACK:
        target.restore(older_copy)
        return
    target.run_sql(SQL[kind].format(k=k))


def mailpki(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The real CLI in its own process, as an auditor runs it."""
    src = Path(__file__).resolve().parents[2] / "src"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run(
        [sys.executable, "-m", "mailpki", *map(str, args)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip


def make_history(home: Path, target: Target, work: Path, *, database_url: str | None) -> Path:
    """An instance with a sealed, witnessed log; returns an older copy (also witnessed)."""
    init = ["init", "--home", home, "--org", "Example Corp", "--domain", "example.com",
            "--ca-key-type", "p256", "--org-id", "NTRGB-12345678"]  # fmt: skip
    if database_url:
        init += ["--database", database_url]
    for args in (
        init,
        ["config", "set", "approval.auto", "false", "--home", home],
        ["config", "set", "approval.auto", "true", "--home", home],
        ["audit", "seal", "--home", home],
    ):
        result = mailpki(*args)
        if result.returncode != 0:
            raise RuntimeError(f"mailpki {args[0]} failed: {result.stderr}")
    older = work / "older-copy"
    target.save(older)
    for value in ("false", "true", "false", "true", "false", "true"):
        result = mailpki("config", "set", "approval.auto", value, "--home", home)
        if result.returncode != 0:
            raise RuntimeError(f"mailpki config set failed: {result.stderr}")
    result = mailpki("audit", "seal", "--home", home)
    if result.returncode != 0:
        raise RuntimeError(f"mailpki audit seal failed: {result.stderr}")
    return older


def detected(home: Path) -> bool:
    """Does `mailpki audit verify` refuse the log as tampered (not for another error)?"""
    result = mailpki("audit", "verify", "--home", home)
    return result.returncode != 0 and "audit log tampered" in result.stderr
