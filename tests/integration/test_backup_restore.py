"""`mailpki backup` / `restore` / `upgrade` on real SQLite and PostgreSQL databases.

The archives are tampered with by rebuilding them with Python's tarfile, as anyone
with the file could, not through the project's code.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import sqlite3
import tarfile
import uuid
from pathlib import Path

import pytest

from tests.fixtures.postgres import PostgresServer
from tests.integration.cli_helpers import mailpki, make_csr


def _issue(home: Path, folder: Path, name: str) -> str:
    csr = make_csr(folder, name)
    result = mailpki(
        "ca", "issue", "--home", home, "--csr", csr,
        "--email", f"{name}@example.com", "--name", f"{name.title()} Smith",
        "--out", folder / f"{name}.pem",
    )  # fmt: skip
    assert result.code == 0, result.err
    return result.out.split("serial ", 1)[1].split()[0]


def _serials(home: Path) -> list[str]:
    result = mailpki("certs", "list", "--home", home)
    assert result.code == 0, result.err
    return [line.split("\t")[0] for line in result.out.splitlines()[1:] if line.strip()]


def _put_back_secrets(old: Path, new: Path) -> None:
    """What an operator does after a restore: the passphrases come from their safe."""
    for folder in ("secrets", "krs/secrets"):
        for item in (old / folder).iterdir():
            shutil.copy2(item, new / folder / item.name)


def _empty_database(request: pytest.FixtureRequest, database_url: str) -> str | None:
    """For a PostgreSQL instance: a second, empty database on the same server."""
    if not database_url.startswith("postgresql"):
        return None
    server: PostgresServer = request.getfixturevalue("postgres_server")
    import psycopg

    name = f"restored_{uuid.uuid4().hex}"
    with psycopg.connect(server.conninfo(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    request.addfinalizer(lambda: _drop(server, name))
    return server.url(name)


def _drop(server: PostgresServer, name: str) -> None:
    import psycopg

    with psycopg.connect(server.conninfo(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_backup_restores_into_a_working_instance(
    home: Path, tmp_path: Path, database_url: str, request: pytest.FixtureRequest
) -> None:
    first = _issue(home, tmp_path, "alice")
    archive = tmp_path / "corp-backup.tar.gz"
    result = mailpki("backup", "--home", home, "--out", archive)
    assert result.code == 0, result.err
    assert "secrets/" in result.out  # says what it left out
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert not any("secrets" in name for name in names)
    assert not any(name.endswith("-wal") for name in names)

    target = tmp_path / "restored"
    restore_args: list[str | Path] = ["restore", "--from", archive, "--home", target]
    empty = _empty_database(request, database_url)
    if empty:
        restore_args += ["--database", empty]
    result = mailpki(*restore_args)
    assert result.code == 0, result.err
    assert "put back what the backup leaves out" in result.out

    _put_back_secrets(home, target)
    verify = mailpki("audit", "verify", "--home", target)
    assert verify.code == 0, verify.out + verify.err
    assert _serials(target) == [first]
    second = _issue(target, tmp_path, "bob")
    assert second != first
    assert sorted(_serials(target)) == sorted([first, second])
    assert mailpki("audit", "verify", "--home", target).code == 0
    # The original instance is untouched by all of this.
    assert _serials(home) == [first]


def _rewrite(archive: Path, out: Path, change: object) -> None:
    """Copy `archive` member by member, letting `change(name, data)` return new bytes,
    None to drop the member, or a list of (name, data) to add."""
    with tarfile.open(archive) as source, tarfile.open(out, "w:gz") as target:
        for member in source.getmembers():
            handle = source.extractfile(member)
            data = handle.read() if handle else b""
            for name, payload in change(member.name, data):  # type: ignore[operator]
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                target.addfile(info, io.BytesIO(payload))


@pytest.fixture
def archive(sqlite_home: Path, tmp_path: Path) -> Path:
    _issue(sqlite_home, tmp_path, "alice")
    path = tmp_path / "backup.tar.gz"
    assert mailpki("backup", "--home", sqlite_home, "--out", path).code == 0
    return path


def _flip_key_file(name: str, data: bytes) -> list[tuple[str, bytes]]:
    if name == "home/config.toml":
        return [(name, data.replace(b"Example Corp", b"Exemple Corp"))]
    return [(name, data)]


def _drop_key_file(name: str, data: bytes) -> list[tuple[str, bytes]]:
    return [] if name == "home/keys/issuing.pem" else [(name, data)]


def _add_extra(name: str, data: bytes) -> list[tuple[str, bytes]]:
    extra = [("home/evil.sh", b"#!/bin/sh\n")] if name == "MANIFEST.sig" else []
    return [(name, data), *extra]


def _traversal(name: str, data: bytes) -> list[tuple[str, bytes]]:
    return [("home/../../escaped.txt", data)] if name == "home/config.toml" else [(name, data)]


def _rehash_without_signing(name: str, data: bytes) -> list[tuple[str, bytes]]:
    """Change a file AND put its new hash in the manifest: only the signature can tell."""
    if name == "MANIFEST.json":
        manifest = json.loads(data)
        for entry in manifest["files"]:
            if entry["path"] == "home/config.toml":
                entry["sha256"] = hashlib.sha256(_REWRITTEN_CONFIG[0]).hexdigest()
                entry["size"] = len(_REWRITTEN_CONFIG[0])
        return [(name, json.dumps(manifest).encode())]
    if name == "home/config.toml":
        return [(name, _REWRITTEN_CONFIG[0])]
    return [(name, data)]


_REWRITTEN_CONFIG: list[bytes] = []


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (_flip_key_file, "does not match its hash"),
        (_drop_key_file, "incomplete"),
        (_add_extra, "does not list"),
        (_traversal, "unsafe name"),
        (_rehash_without_signing, "signature does not verify"),
    ],
)
def test_a_tampered_archive_is_refused_and_nothing_is_made(
    archive: Path, tmp_path: Path, change: object, reason: str
) -> None:
    tampered = tmp_path / "tampered.tar.gz"
    with tarfile.open(archive) as source:
        handle = source.extractfile("home/config.toml")
        assert handle is not None
        _REWRITTEN_CONFIG[:] = [handle.read().replace(b"Example Corp", b"Evil Corp")]
    _rewrite(archive, tampered, change)
    target = tmp_path / "restored"
    result = mailpki("restore", "--from", tampered, "--home", target)
    assert result.code != 0
    assert reason in result.err, result.err
    assert [line for line in result.err.splitlines() if line.startswith("error:")] == [
        next(line for line in result.err.splitlines() if reason in line)
    ]
    assert not target.exists()
    assert not (tmp_path.parent / "escaped.txt").exists()


def test_a_truncated_archive_is_refused(archive: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    result = mailpki("restore", "--from", cut, "--home", tmp_path / "restored")
    assert result.code != 0
    assert "damaged" in result.err or "incomplete" in result.err, result.err
    assert not (tmp_path / "restored").exists()


def test_restore_refuses_a_folder_that_holds_anything(archive: Path, tmp_path: Path) -> None:
    target = tmp_path / "busy"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    result = mailpki("restore", "--from", archive, "--home", target)
    assert result.code != 0
    assert "not empty" in result.err
    assert [p.name for p in target.iterdir()] == ["notes.txt"]


def test_restore_refuses_what_is_not_a_backup(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not an archive at all")
    result = mailpki("restore", "--from", junk, "--home", tmp_path / "restored")
    assert result.code != 0
    assert "not a readable backup archive" in result.err
    assert mailpki("restore", "--from", tmp_path / "absent", "--home", tmp_path / "x").code != 0


def test_backup_refuses_to_write_into_the_home_or_over_a_file(
    sqlite_home: Path, tmp_path: Path
) -> None:
    inside = mailpki("backup", "--home", sqlite_home, "--out", sqlite_home / "b.tar.gz")
    assert inside.code != 0 and "outside the home folder" in inside.err
    existing = tmp_path / "exists.tar.gz"
    existing.write_bytes(b"keep me")
    result = mailpki("backup", "--home", sqlite_home, "--out", existing)
    assert result.code != 0 and "already exists" in result.err
    assert existing.read_bytes() == b"keep me"


def test_upgrade_brings_an_older_schema_to_the_current_one(sqlite_home: Path) -> None:
    from alembic import command
    from alembic.config import Config as AlembicConfig
    from sqlalchemy import create_engine

    from mailpki.store.db import MIGRATIONS_DIR, head_revision

    db = sqlite_home / "mailpki.db"
    engine = create_engine(f"sqlite:///{db}")
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.downgrade(cfg, "-1")
    engine.dispose()
    with sqlite3.connect(db) as conn:
        older = conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    assert older != head_revision()

    result = mailpki("upgrade", "--home", sqlite_home)
    assert result.code == 0, result.err
    assert f"instance: schema {older} -> {head_revision()}" in result.out
    again = mailpki("upgrade", "--home", sqlite_home)
    assert "already current" in again.out
    verify = mailpki("audit", "verify", "--home", sqlite_home)
    assert verify.code == 0, verify.out
