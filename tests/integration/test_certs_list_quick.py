"""`mailpki certs list` reads an SQLite instance in plain SQL (ca/listing.py), without
SQLAlchemy; every answer must be the one the SQLAlchemy query gives, and an instance on
PostgreSQL still lists through the instance."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from mailpki.ca.authority import list_certificates as list_with_sqlalchemy
from mailpki.ca.listing import list_certificates_quick
from mailpki.instance.certificate_list import list_certificates
from mailpki.instance.instance import Instance
from mailpki.policy.person import Person
from mailpki.store.quick_read import sqlite_file
from tests.integration.cli_helpers import mailpki


def _issue(instance: Instance, n: int, email: str | None = None) -> int:
    person = Person.from_untrusted(
        name=f"User{n} Smith",
        email=email or f"user{n}@example.com",
        organisation="Example Corp",
        organisation_identifier="NTRGB-12345678",
    )
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return int(instance.ca.issue_for_key(key, person, actor="test").certificate.serial_number)


@pytest.fixture
def filled(sqlite_home: Path) -> Path:
    """Valid, revoked (with a reason), expired and superseded certificates, two of one
    person, next to the CA's own."""
    instance = Instance.open(sqlite_home)
    serials = [_issue(instance, n) for n in range(6)]
    serials.append(_issue(instance, 6, email="user1@example.com"))
    instance.ca.revoke(serials[1], x509.ReasonFlags.key_compromise, actor="test")
    instance.ca.revoke(serials[2], x509.ReasonFlags.affiliation_changed, actor="test")
    instance.close()
    path = sqlite_file(instance.config.database_url)
    assert path is not None
    with sqlite3.connect(path) as db:  # test data the CA would take a year to make
        past = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S.%f")
        db.execute("UPDATE certificates SET not_after = ? WHERE serial = ?",
                   (past, f"{serials[3]:032X}"))  # fmt: skip
        db.execute("UPDATE certificates SET superseded_by = ? WHERE serial = ?",
                   (f"{serials[6]:032X}", f"{serials[0]:032X}"))  # fmt: skip
    return sqlite_home


SEARCHES = [
    {},
    {"include_ca": True},
    {"email": "user1@example.com"},
    {"email": "USER1@Example.com"},
    {"email": "nobody@example.com"},
    {"limit": 3},
    {"limit": 2, "offset": 3},
    {"offset": 5},
    {"limit": 100, "include_ca": True, "offset": 1},
]


@pytest.mark.parametrize("search", SEARCHES, ids=[str(s) for s in SEARCHES])
def test_plain_sql_answers_as_sqlalchemy_does(filled: Path, search: dict[str, object]) -> None:
    instance = Instance.open(filled)
    path = sqlite_file(instance.config.database_url)
    assert path is not None
    quick = list_certificates_quick(path, **search)  # type: ignore[arg-type]
    orm = list_with_sqlalchemy(instance.db, **search)  # type: ignore[arg-type]
    assert quick == orm
    statuses = {info.status for info in list_with_sqlalchemy(instance.db)[0]}
    assert statuses == {"valid", "revoked", "expired"}
    reasons = {info.reason for info in orm[0] if info.reason}
    if not search:
        assert reasons == {"keyCompromise", "affiliationChanged"}


def test_the_command_imports_neither_sqlalchemy_nor_cryptography(filled: Path) -> None:
    code = (
        "import sys\n"
        "from mailpki.cli.main import run\n"
        f"sys.argv = ['mailpki', 'certs', 'list', '--home', {str(filled)!r}]\n"
        "try:\n"
        "    run()\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('sqlalchemy', 'cryptography', 'ldap3', 'dns', 'starlette'))\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "serial\tsubject\tmail\tprofile\tstatus\tnot_after"
    assert len(lines) == 1 + 7
    assert {line.split("\t")[4] for line in lines[1:]} == {
        "valid",
        "revoked",
        "expired",
        "superseded",
    }


def test_the_command_on_each_database(home: Path) -> None:
    instance = Instance.open(home)
    serial = _issue(instance, 1)
    instance.close()
    page, total = list_certificates(home)
    assert (total, [info.serial for info in page]) == (1, [f"{serial:032X}"])
    result = mailpki("certs", "list", "--home", home, "--email", "user1@example.com", "--json")
    assert result.code == 0, result.err
    assert f"{serial:032X}" in result.out


def test_a_missing_database_is_refused_not_created(sqlite_home: Path) -> None:
    path = sqlite_file(Instance.open(sqlite_home).config.database_url)
    assert path is not None
    path.unlink()
    for suffix in ("-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    result = mailpki("certs", "list", "--home", sqlite_home)
    assert result.code != 0
    assert "does not exist" in result.err
    assert not path.exists()


def test_a_database_that_is_not_one_is_a_clear_error(sqlite_home: Path) -> None:
    path = sqlite_file(Instance.open(sqlite_home).config.database_url)
    assert path is not None
    for suffix in ("-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    path.write_bytes(b"this is not a database\n" * 100)
    result = mailpki("certs", "list", "--home", sqlite_home)
    assert result.code != 0
    assert "database error" in result.err
    assert "Traceback" not in result.err
