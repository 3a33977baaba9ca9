"""`mailpki backup`, `mailpki restore`, `mailpki upgrade`: keeping an instance for years."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mailpki.cli.common import (
    HomeOption,
    check_output,
    console,
    err_console,
    handle_errors,
    open_instance,
)
from mailpki.errors import InputError


def _progress(message: str) -> None:
    err_console.print(f"… {message}", highlight=False)


@handle_errors
def backup(
    out: Annotated[Path, typer.Option("--out", help="The archive to write (.tar.gz).")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    home: HomeOption = None,
) -> None:
    """Write a consistent, signed backup of the instance while it runs: settings, CA
    certificates, encrypted key files, the databases (SQLite online backup or pg_dump)
    and the embedded recovery service. Passphrases, PINs and token contents are NOT in
    it: keep those apart."""
    from mailpki.instance.actor import cli_actor
    from mailpki.instance.backup import create_backup

    check_output(out, force)
    instance = open_instance(home)
    try:
        summary = create_backup(instance, out, actor=cli_actor(), progress=_progress)
    finally:
        instance.close()
    console.print(
        f"backup written to {summary.archive}: {summary.files} files, "
        f"{summary.size:,} bytes, schema {summary.schema_revision}",
        highlight=False,
    )
    if summary.excluded:
        console.print(
            "not in the backup (keep these apart, e.g. in a password safe): "
            + ", ".join(summary.excluded),
            highlight=False,
        )


@handle_errors
def restore(
    source: Annotated[Path, typer.Option("--from", help="The backup archive.")],
    home: Annotated[
        Path, typer.Option("--home", help="The new, empty instance folder to restore into.")
    ],
    database: Annotated[
        str | None,
        typer.Option(
            "--database",
            help="An empty PostgreSQL database to restore into (default: the backed-up URL).",
        ),
    ] = None,
) -> None:
    """Restore a backup into a new folder, after checking every file's hash and the
    manifest's signature; a tampered or incomplete archive, or a non-empty target, is
    refused and nothing is made."""
    from mailpki.instance.backup import restore_backup

    if database is not None and not database.startswith("postgresql"):
        raise InputError("--database must be a postgresql+psycopg://… URL")
    summary = restore_backup(source, home, database_url=database, progress=_progress)
    console.print(
        f"restored the backup of {summary.created} into {summary.home}: {summary.files} files, "
        f"schema {summary.schema_revision}",
        highlight=False,
    )
    console.print(
        f"  manifest signed by the audit key with SHA-256 {summary.signer_sha256}",
        highlight=False,
    )
    for item in summary.missing_secrets:
        console.print(
            f"  put back what the backup leaves out: {summary.home / item}",
            highlight=False,
        )
    console.print(f"  then check it: mailpki audit verify --home {summary.home}", highlight=False)


@handle_errors
def upgrade(home: HomeOption = None) -> None:
    """Bring the instance's databases to this version's schema (run after installing a new
    mailpki, before starting the servers; safe to run again)."""
    from mailpki.instance.actor import cli_actor
    from mailpki.instance.upgrade import upgrade as run_upgrade

    instance = open_instance(home)
    try:
        changes = run_upgrade(instance, actor=cli_actor())
    finally:
        instance.close()
    for change in changes:
        if change.changed:
            console.print(
                f"{change.database}: {change.what} {change.before} -> {change.after}",
                highlight=False,
            )
        else:
            console.print(
                f"{change.database}: {change.what} {change.after}, already current",
                highlight=False,
            )
