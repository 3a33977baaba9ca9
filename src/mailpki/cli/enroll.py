"""`mailpki enroll`, `bulk-enroll`, `keys …` and `mail flush`: central keys, escrowed first."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from mailpki.ca.serials import show_serial
from mailpki.cli.common import (
    HomeOption,
    console,
    err_console,
    handle_errors,
    open_instance,
    print_json,
    read_input,
    read_password_file,
    report_outcome,
)
from mailpki.errors import InputError
from mailpki.instance.actor import cli_actor
from mailpki.instance.bulk import BulkItem, bulk_enroll, default_workers
from mailpki.instance.directory_ops import enroll_user
from mailpki.instance.enrollments import (
    MAX_CSV_BYTES,
    EnrollOutcome,
    enroll_one,
    fill_pool,
    read_people,
    reconcile_deliveries,
)
from mailpki.instance.rewrap import DEFAULT_BATCH, rewrap_all
from mailpki.notify.mail import deliver_pending

keys_app = typer.Typer(
    help="The Key Manager: escrow records, delivery reconcile, key pool.", no_args_is_help=True
)
pool_app = typer.Typer(
    help="Pre-generated, already escrowed keys for fast enrollment.", no_args_is_help=True
)
keys_app.add_typer(pool_app, name="pool")
mail_app = typer.Typer(
    help="S/MIME: sign, encrypt, decrypt, verify, send; and the outbox of notices.",
    no_args_is_help=True,
)

PasswordFileOption = Annotated[
    Path | None,
    typer.Option(
        "--password-file",
        help="Read the PKCS#12 password from this file (else one is generated and printed once).",
    ),
]
LegacyOption = Annotated[
    bool,
    typer.Option(
        "--legacy-p12",
        help="3DES/SHA-1 PKCS#12 for gpgsm 2.2 and old Outlook (default: PBES2/AES-256).",
    ),
]


def _password(path: Path | None) -> bytes | None:
    return None if path is None else read_password_file(path)


@handle_errors
def enroll(
    out: Annotated[Path, typer.Option("--out", help="Where to write the PKCS#12.")],
    email: Annotated[
        str | None, typer.Option("--email", help="The subscriber's mail address.")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="The subscriber's name.")] = None,
    user: Annotated[
        str | None,
        typer.Option(
            "--user",
            help="A directory login: name, mail, organisation and site come from the directory, and the approval rules apply.",
        ),
    ] = None,
    password_file: PasswordFileOption = None,
    legacy_p12: LegacyOption = False,
    dual_key: Annotated[
        bool,
        typer.Option(
            "--dual-key",
            help="Dual-key mode: a central, escrowed encryption key plus a signing certificate for --signing-csr.",
        ),
    ] = False,
    signing_csr: Annotated[
        Path | None,
        typer.Option(
            "--signing-csr", help="The user's own signing key's CSR (dual-key; never escrowed)."
        ),
    ] = None,
    key_type: Annotated[
        str | None, typer.Option("--key-type", help="rsa2048 (default), rsa3072 or p256.")
    ] = None,
    given_name: Annotated[str | None, typer.Option("--given-name")] = None,
    surname: Annotated[str | None, typer.Option("--surname")] = None,
    home: HomeOption = None,
) -> None:
    """Generate a key centrally, escrow it, certify it and write the PKCS#12."""
    if user is not None and (email or name):
        raise InputError("--user takes name and mail from the directory: drop --email/--name")
    if user is None and not (email and name):
        raise InputError("give --user LOGIN, or --email and --name")
    if dual_key != (signing_csr is not None):
        raise InputError("--dual-key and --signing-csr go together")
    if not out.parent.is_dir():
        raise InputError(f"the folder {out.parent} does not exist")
    password = _password(password_file)
    csr = read_input(signing_csr, "signing CSR") if signing_csr else None
    instance = open_instance(home)
    try:
        if user is not None:
            enroll_user(
                instance, user, out=out, actor=cli_actor(), password=password,
                legacy_p12=legacy_p12, signing_csr=csr, key_type=key_type, announce=_announce,
            )  # fmt: skip
        else:
            assert email is not None and name is not None
            enroll_one(
                instance,
                email=email,
                name=name,
                out=out,
                actor=cli_actor(),
                password=password,
                legacy_p12=legacy_p12,
                signing_csr=csr,
                key_type=key_type,
                given_name=given_name,
                surname=surname,
                announce=_announce,
            )
    finally:
        instance.close()


def _announce(outcome: EnrollOutcome) -> None:
    """Print the result, and the generated password, before the delivery is recorded:
    a key whose password never reached the screen is not delivered (reconcile revokes it)."""
    console.print(
        f"{outcome.email}: certificate {show_serial(outcome.serial)}, key escrowed, PKCS#12 written to {outcome.path}",
        highlight=False,
    )
    if outcome.signing_certificate_path:
        console.print(
            f"signing certificate (your own key, not escrowed): {outcome.signing_certificate_path}",
            highlight=False,
        )
    if outcome.generated_password:
        console.print(
            f"PKCS#12 password (shown once, not stored): {outcome.generated_password}",
            highlight=False,
        )
    _flush(console.file)


def _flush(stream: IO[str]) -> None:
    """Push what was written to `stream` out of this process (and to disk, for a file):
    from then on a kill of this process cannot lose it."""
    stream.flush()
    try:
        fd = stream.fileno()
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.fsync(fd)
    except (OSError, ValueError, AttributeError):
        pass  # a pipe, a terminal, or a test's in-memory stream: flushed is out


@handle_errors
def bulk(
    input: Annotated[
        Path,
        typer.Option(
            "--input", help="CSV with a header: email,name[,given_name,surname,key_type]."
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Folder for the PKCS#12 files (one per person).")
    ],
    workers: Annotated[
        int, typer.Option("--workers", help="Processes generating keys (default: CPU count).")
    ] = 0,
    password_file: PasswordFileOption = None,
    legacy_p12: LegacyOption = False,
    home: HomeOption = None,
) -> None:
    """Enroll everyone in a CSV; prints email,serial,file,password as CSV (passwords once)."""
    people = read_people(read_input(input, "CSV", MAX_CSV_BYTES))
    password = _password(password_file)
    count = workers if workers > 0 else default_workers()
    instance = open_instance(home)
    failed = 0
    sys.stdout.write("email,serial,file,password\n")
    sys.stdout.flush()
    try:
        with Progress(
            TextColumn("enrolling"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err_console,
            transient=False,
        ) as progress:
            task = progress.add_task("enroll", total=len(people))

            def emit(batch: Sequence[BulkItem]) -> None:
                # The lines must be out before bulk_enroll records the keys delivered.
                nonlocal failed
                for item in batch:
                    if item.error:
                        failed += 1
                        _report_line(item)
                    else:
                        serial = show_serial(item.serial) if item.serial else ""
                        sys.stdout.write(
                            f"{item.email},{serial},{item.path},{item.password or ''}\n"
                        )
                _flush(sys.stdout)
                progress.advance(task, len(batch))

            void = bulk_enroll(
                instance,
                people,
                out,
                actor=cli_actor(),
                workers=count,
                emit=emit,
                password=password,
                legacy_p12=legacy_p12,
            )
    finally:
        instance.close()
    for item in void:
        failed += 1
        _report_line(item)
    err_console.print(f"{len(people) - failed} enrolled, {failed} failed", highlight=False)
    if failed:
        raise typer.Exit(1)


def _report_line(item: BulkItem) -> None:
    err_console.print(
        f"line {item.line} ({item.email}): {item.error}", highlight=False, markup=False
    )


@keys_app.command("list")
@handle_errors
def keys_list(
    email: Annotated[str | None, typer.Option("--email")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    home: HomeOption = None,
) -> None:
    """Escrowed keys: serial, owner, key type, delivery state."""
    instance = open_instance(home)
    try:
        rows = instance.key_manager.escrowed(email=email)
    finally:
        instance.close()
    if as_json:
        print_json(
            [
                {
                    "serial": show_serial(r.serial),
                    "email": r.owner_email,
                    "key_type": r.key_type,
                    "state": r.state,
                    "created_at": r.created_at.isoformat(),
                    "delivered_at": r.delivered_at.isoformat() if r.delivered_at else None,
                }
                for r in rows
            ]
        )
        return
    for r in rows:
        console.print(
            f"{show_serial(r.serial)}  {r.owner_email}  {r.key_type}  {r.state}", highlight=False
        )


@keys_app.command("reconcile")
@handle_errors
def keys_reconcile(
    all_pending: Annotated[
        bool,
        typer.Option(
            "--all-pending",
            help="Also records still within their delivery lease (only when no enrollment is running).",
        ),
    ] = False,
    home: HomeOption = None,
) -> None:
    """Revoke certificates whose escrowed key was never delivered (crash, kill, lost client)."""
    instance = open_instance(home)
    try:
        result = reconcile_deliveries(instance, actor=cli_actor(), all_pending=all_pending)
    finally:
        instance.close()
    for serial in result.revoked:
        console.print(
            f"revoked {show_serial(serial)} (key escrowed but never delivered)", highlight=False
        )
    for error in result.errors:
        err_console.print(error, highlight=False, markup=False)
    console.print(f"{len(result.revoked)} revoked", highlight=False)
    if result.waiting:
        console.print(
            f"{result.waiting} not yet delivered but within their delivery lease, left alone "
            "(an enrollment may still be running); after a crash, when none is, run "
            "'mailpki keys reconcile --all-pending'",
            highlight=False,
        )
    if result.errors:
        raise typer.Exit(1)


@keys_app.command("rewrap")
@handle_errors
def keys_rewrap(
    batch: Annotated[
        int, typer.Option("--batch", help="Blocks per batch (one transaction each side).")
    ] = DEFAULT_BATCH,
    home: HomeOption = None,
) -> None:
    """Re-wrap every recovery block to the recovery service's newest key (after
    'recovery-service rotate-key'), inside the service; resumable: run it again after
    a crash or an error."""
    instance = open_instance(home)
    try:
        with Progress(
            TextColumn("re-wrapping recovery blocks"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err_console,
        ) as progress:
            task = progress.add_task("rewrap", total=None)
            report = rewrap_all(
                instance,
                actor=cli_actor(),
                batch=batch,
                progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
    finally:
        instance.close()
    if report.learned_new_key:
        console.print(f"pinned the recovery service's newest key {report.key_id}", highlight=False)
    console.print(
        f"{report.rewrapped} of {report.to_do} blocks re-wrapped to {report.key_id[:16]}… "
        f"({report.wrap})",
        highlight=False,
    )


@pool_app.command("fill")
@handle_errors
def pool_fill(
    size: Annotated[
        int | None, typer.Option("--size", help="Target size (default keymanager.pool_size).")
    ] = None,
    home: HomeOption = None,
) -> None:
    """Generate and escrow keys until the pool holds the target number."""
    instance = open_instance(home)
    try:
        target = size if size is not None else int(instance.config.get("keymanager.pool_size"))
        key_type = str(instance.config.get("keymanager.key_type"))
        have = instance.key_manager.pool_size(key_type)
        with Progress(
            TextColumn("filling the key pool"),
            BarColumn(),
            MofNCompleteColumn(),
            console=err_console,
        ) as progress:
            task = progress.add_task("pool", total=max(0, target - have))
            added = fill_pool(
                instance, target=target, progress=lambda n: progress.update(task, completed=n)
            )
    finally:
        instance.close()
    console.print(f"{added} {key_type} keys added; the pool holds {have + added}", highlight=False)


@pool_app.command("status")
@handle_errors
def pool_status(home: HomeOption = None) -> None:
    """How many escrowed keys are ready."""
    instance = open_instance(home)
    try:
        console.print(
            f"{instance.key_manager.pool_size()} keys in the pool (target {instance.config.get('keymanager.pool_size')})",
            highlight=False,
        )
    finally:
        instance.close()


@pool_app.command("clear")
@handle_errors
def pool_clear(home: HomeOption = None) -> None:
    """Delete every pooled key (they were never delivered: nothing to revoke)."""
    instance = open_instance(home)
    try:
        removed = instance.key_manager.clear_pool()
    finally:
        instance.close()
    console.print(f"{removed} pooled keys deleted", highlight=False)


@mail_app.command("flush")
@handle_errors
def mail_flush(home: HomeOption = None) -> None:
    """Send queued notices now (they are sent after each enrollment; this retries)."""
    instance = open_instance(home)
    try:
        report = deliver_pending(instance.db, instance.mail_settings)
    finally:
        instance.close()
    report_outcome(
        f"{report.sent} sent, {report.failed} failed", report.errors, failed=bool(report.failed)
    )
