"""`mailpki certs expiring`, `mailpki lifecycle run` and `mailpki renew`."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from mailpki.ca.serials import show_serial
from mailpki.cli.common import (
    HomeOption,
    console,
    err_console,
    handle_errors,
    open_instance,
    print_json,
    read_password_file,
)
from mailpki.errors import InputError
from mailpki.instance.actor import cli_actor

lifecycle_app = typer.Typer(
    help="Certificates over the years: expiry notices, leavers, clean-up.", no_args_is_help=True
)


@handle_errors
def certs_expiring(
    within: Annotated[
        int, typer.Option("--within", help="Days from now (0 to 3650).", show_default=True)
    ] = 30,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    home: HomeOption = None,
) -> None:
    """Certificates expiring within DAYS: serial, mail, profile, not-after, renewed?"""
    from mailpki.instance.expiry import expiring_certificates
    from mailpki.instance.renewal import check_within_days

    check_within_days(within)
    instance = open_instance(home)
    try:
        rows = expiring_certificates(instance, timedelta(days=within))
    finally:
        instance.close()
    if as_json:
        print_json([row.as_dict() for row in rows])
        return
    sys.stdout.write("serial\tmail\tprofile\tnot_after\trenewed\n")
    for row in rows:
        renewed = f"yes ({show_serial(row.renewed_by)})" if row.renewed_by else "no"
        sys.stdout.write(
            f"{show_serial(row.serial)}\t{row.email}\t{row.profile}\t{row.not_after:%Y-%m-%d %H:%M}\t{renewed}\n"
        )
    err_console.print(f"{len(rows)} expiring within {within} days", highlight=False)


@lifecycle_app.command("run")
@handle_errors
def lifecycle_run(home: HomeOption = None) -> None:
    """Expiry notices, the officers' daily summary, leavers, expired clean-up (for cron;
    'serve' runs it hourly). Safe on several nodes at once."""
    from mailpki.instance.lifecycle import run as run_lifecycle

    instance = open_instance(home)
    try:
        report = run_lifecycle(instance, actor=cli_actor())
    finally:
        instance.close()
    for line in report.lines():
        console.print(line, highlight=False, markup=False)
    for error in report.errors:
        err_console.print(error, highlight=False, markup=False)
    console.print(report.summary(), highlight=False)
    if report.errors or report.leavers.stopped:
        raise typer.Exit(1)


@handle_errors
def renew(
    email: Annotated[
        str | None, typer.Option("--email", help="Renew this person's current certificate.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Where to write the new PKCS#12 (--email).")
    ] = None,
    expiring_within: Annotated[
        int | None,
        typer.Option(
            "--expiring-within", help="Bulk: everyone whose certificate expires within DAYS."
        ),
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out-dir", help="Bulk: folder for the PKCS#12 files (one per person)."),
    ] = None,
    password_file: Annotated[
        Path | None,
        typer.Option(
            "--password-file",
            help="Read the PKCS#12 password from this file (else one is generated and printed once).",
        ),
    ] = None,
    legacy_p12: Annotated[
        bool,
        typer.Option(
            "--legacy-p12",
            help="3DES/SHA-1 PKCS#12 for gpgsm 2.2 and old Outlook (default: PBES2/AES-256).",
        ),
    ] = False,
    workers: Annotated[
        int, typer.Option("--workers", help="Bulk: processes generating keys (default: CPUs).")
    ] = 0,
    home: HomeOption = None,
) -> None:
    """Renew: a new escrowed key and certificate replace the current one (which stays
    valid for old mail, but is superseded and withdrawn from the directory)."""
    from mailpki.instance.renewal import check_within_days

    if (email is None) == (expiring_within is None):
        raise InputError("give --email MAIL (one person) or --expiring-within DAYS (bulk)")
    if email is not None and (out is None or out_dir is not None):
        raise InputError("--email writes one file: give --out FILE.p12 (not --out-dir)")
    if expiring_within is not None and (out_dir is None or out is not None):
        raise InputError("--expiring-within writes one file per person: give --out-dir DIR")
    if expiring_within is not None:
        check_within_days(expiring_within)
    if workers < 0:
        raise InputError("--workers must be 0 (one per CPU) or more")
    password = read_password_file(password_file) if password_file else None
    if email is not None:
        assert out is not None
        _renew_one(email, out, password, legacy_p12, home)
        return
    assert out_dir is not None and expiring_within is not None
    _renew_bulk(expiring_within, out_dir, password, legacy_p12, workers, home)


def _renew_one(
    email: str, out: Path, password: bytes | None, legacy_p12: bool, home: Path | None
) -> None:
    from mailpki.instance.renewal import renew_one

    instance = open_instance(home)
    try:
        outcome = renew_one(
            instance, email, out=out, actor=cli_actor(), password=password, legacy_p12=legacy_p12
        )
    finally:
        instance.close()
    console.print(
        f"{outcome.email}: certificate {show_serial(outcome.serial)} renews "
        f"{show_serial(outcome.old_serial)} "
        f"(superseded, not revoked); key escrowed, PKCS#12 written to {outcome.path}",
        highlight=False,
    )
    if outcome.signing_certificate_path:
        console.print(
            f"signing certificate (your own key, certified again): "
            f"{outcome.signing_certificate_path}",
            highlight=False,
        )
    if outcome.generated_password:
        console.print(
            f"PKCS#12 password (shown once, not stored): {outcome.generated_password}",
            highlight=False,
        )


def _renew_bulk(
    within: int,
    out_dir: Path,
    password: bytes | None,
    legacy_p12: bool,
    workers: int,
    home: Path | None,
) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from mailpki.instance.bulk import default_workers
    from mailpki.instance.renewal import bulk_renew, due_for_renewal

    instance = open_instance(home)
    failed = 0
    try:
        emails = due_for_renewal(instance, within)
        sys.stdout.write("email,serial,file,password\n")
        with Progress(
            TextColumn("renewing"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err_console,
        ) as progress:
            task = progress.add_task("renew", total=len(emails))
            for item in bulk_renew(
                instance,
                emails,
                out_dir,
                actor=cli_actor(),
                workers=workers if workers > 0 else default_workers(),
                password=password,
                legacy_p12=legacy_p12,
            ):
                progress.advance(task)
                if item.error:
                    failed += 1
                    err_console.print(f"{item.email}: {item.error}", highlight=False, markup=False)
                    continue
                serial = show_serial(item.serial) if item.serial else ""
                sys.stdout.write(f"{item.email},{serial},{item.path},{item.password or ''}\n")
                sys.stdout.flush()
    finally:
        instance.close()
    err_console.print(f"{len(emails) - failed} renewed, {failed} failed", highlight=False)
    if failed:
        raise typer.Exit(1)
