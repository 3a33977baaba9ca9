"""`mailpki certs …`, `mailpki audit …`, `mailpki config …`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from mailpki.ca.serials import parse_serial, show_serial
from mailpki.cli import common
from mailpki.cli.common import (
    HomeOption,
    handle_errors,
    open_instance,
    print_json,
)
from mailpki.errors import AuditError, AuditIntegrityError, InputError
from mailpki.instance.actor import cli_actor
from mailpki.instance.certificate_list import list_certificates
from mailpki.instance.config import resolve_home

if TYPE_CHECKING:
    from mailpki.audit.verify import Problem

certs_app = typer.Typer(help="Certificates issued by this instance.", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained, signed audit log.", no_args_is_help=True)
config_app = typer.Typer(help="Instance settings (config.toml).", no_args_is_help=True)


@certs_app.command("list")
@handle_errors
def certs_list(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    email: Annotated[str | None, typer.Option("--email", help="Only this mail address.")] = None,
    limit: Annotated[
        int, typer.Option("--limit", help="At most this many, newest first; 0 = all.")
    ] = 0,
    include_ca: Annotated[
        bool, typer.Option("--include-ca", help="Also the CA certificates.")
    ] = False,
    home: HomeOption = None,
) -> None:
    """Serial, subject, mail, profile, status and not-after of each certificate."""
    rows, total = list_certificates(
        resolve_home(home), limit=limit or None, email=email, include_ca=include_ca
    )
    if as_json:
        print_json([row.as_dict() for row in rows])
        return
    if not sys.stdout.isatty():
        # Piped: one tab-separated line per certificate, nothing cut, easy to grep and cut.
        sys.stdout.write("serial\tsubject\tmail\tprofile\tstatus\tnot_after\n")
        for row in rows:
            status = "superseded" if row.superseded_by and row.status == "valid" else row.status
            fields = (show_serial(row.serial), row.subject, row.email or "", row.profile, status)
            sys.stdout.write("\t".join(fields) + f"\t{row.not_after:%Y-%m-%d}\n")
        return
    from rich.table import Table

    table = Table()
    table.add_column("serial", no_wrap=True)  # people copy it from here: never cut it
    table.add_column("subject", overflow="fold")
    table.add_column("mail", overflow="fold")
    table.add_column("profile", overflow="fold")
    table.add_column("status", no_wrap=True)
    table.add_column("not after", no_wrap=True)
    for row in rows:
        status = "superseded" if row.superseded_by and row.status == "valid" else row.status
        style = {"revoked": "red", "expired": "yellow", "superseded": "dim"}.get(status, "")
        table.add_row(
            show_serial(row.serial),
            row.subject,
            row.email or "",
            row.profile,
            f"[{style}]{status}[/]" if style else status,
            f"{row.not_after:%Y-%m-%d}",
        )
    common.console.print(table)
    if len(rows) < total:
        common.console.print(f"{len(rows)} of {total} shown (--limit 0 shows all)")


@certs_app.command("show")
@handle_errors
def certs_show(
    serial: Annotated[str, typer.Argument(help="Serial in hex.")],
    pem: Annotated[bool, typer.Option("--pem", help="Print the certificate as PEM.")] = False,
    home: HomeOption = None,
) -> None:
    """One certificate's record (or its PEM)."""
    number = parse_serial(serial)
    instance = open_instance(home)
    if pem:
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        der = instance.ca.certificate_der(number)
        sys.stdout.write(x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM).decode())
        return
    print_json(instance.ca.get(number).as_dict())


def _problem_json(p: Problem) -> dict[str, object]:
    return {"seq": p.seq, "kind": p.kind, "message": p.message}


def _print_problems(problems: tuple[Problem, ...]) -> None:
    for problem in problems:
        common.err_console.print(f"[red]{problem.kind}:[/] {problem.message}", highlight=False)


def _fail(problems: tuple[Problem, ...]) -> NoReturn:
    first = problems[0]
    raise AuditIntegrityError(
        f"audit log tampered: {len(problems)} problem(s), first: {first.message}"
    )


def _verify_bundle(bundle: Path, witnesses: list[Path], as_json: bool) -> None:
    from mailpki.audit.bundle import verify_bundle

    check = verify_bundle(bundle, witnesses)
    if as_json:
        print_json(
            {
                "ok": check.ok,
                "instance": check.instance,
                "records": check.log.records,
                "checkpoints": check.log.checkpoints,
                "last_sealed_seq": check.log.last_sealed_seq,
                "witnesses": [
                    {
                        "name": copy.name, "location": copy.location,
                        "independent": copy.independent, "why": copy.why,
                        "held": len(copy.checkpoints), "last_seq": copy.last_seq,
                    }
                    for copy, _ in check.witnesses
                ],
                "problems": [_problem_json(p) for p in check.problems],
            }
        )  # fmt: skip
    else:
        for copy, _ in check.witnesses:
            _print_witness(copy.name, copy.location, copy.independent, copy.why,
                           len(copy.checkpoints), copy.last_seq)  # fmt: skip
    if check.ok:
        if not as_json:
            common.console.print(
                f"audit bundle intact: {check.log.records} records, {check.log.checkpoints} "
                f"signed checkpoints, sealed up to record {check.log.last_sealed_seq}",
                highlight=False,
            )
        return
    if not as_json:
        _print_problems(check.problems)
    _fail(check.problems)


def _print_witness(
    name: str, location: str, independent: bool, why: str, held: int, last: int
) -> None:
    verdict = "independent" if independent else "[yellow]NOT independent[/]"
    common.console.print(
        f"witness {name} ({location}): {verdict}: {why}; holds {held} checkpoint(s)"
        + (f", up to record {last}" if held else ""),
        highlight=False,
    )


@audit_app.command("verify")
@handle_errors
def audit_verify(
    as_json: Annotated[bool, typer.Option("--json")] = False,
    bundle: Annotated[
        Path | None,
        typer.Option("--bundle", help="Check an exported bundle offline (no instance needed)."),
    ] = None,
    witness: Annotated[
        list[Path] | None,
        typer.Option(
            "--witness",
            help="With --bundle: a witness file or saved checkpoint mail to check against "
            "(repeatable).",
        ),
    ] = None,
    home: HomeOption = None,
) -> None:
    """Exit 0 only if the audit log is intact: chain, checkpoints (ECDSA and ML-DSA-65),
    every witness's copy, and the state (certificates, revocations, escrowed keys,
    recoveries) against the log."""
    if bundle is not None:
        _verify_bundle(bundle, list(witness or []), as_json)
        return
    if witness:
        raise InputError("--witness goes with --bundle; an instance's witnesses are in its config")
    instance = open_instance(home)
    from mailpki.instance.audit_check import check_audit

    check = check_audit(instance)
    report = check.log
    if as_json:
        print_json(
            {
                "ok": check.ok,
                "records": report.records,
                "checkpoints": report.checkpoints,
                "last_sealed_seq": report.last_sealed_seq,
                "recovery_ok": None if check.recovery is None else check.recovery.ok,
                "witnesses": [
                    {
                        "name": w.name, "location": w.location, "independent": w.independent,
                        "why": w.why, "held": w.held, "last_seq": w.last_seq,
                        "behind": w.last_seq < report.last_sealed_seq,
                    }
                    for w in check.witnesses
                ],
                "unreadable_witnesses": list(check.unreadable),
                "notes": list(check.notes),
                "problems": [_problem_json(p) for p in check.problems],
            }
        )  # fmt: skip
    else:
        for w in check.witnesses:
            _print_witness(w.name, w.location, w.independent, w.why, w.held, w.last_seq)
        for note in check.notes:
            common.err_console.print(f"[yellow]note:[/] {note}", highlight=False)
    if check.ok:
        if not as_json:
            common.console.print(
                f"audit log intact: {report.records} records, {report.checkpoints} signed "
                f"checkpoints, sealed up to record {report.last_sealed_seq}; the state agrees "
                "with the log",
                highlight=False,
            )
            if check.recovery is not None:
                common.console.print(
                    f"recovery service audit log intact: {check.recovery.records} records, "
                    f"{check.recovery.checkpoints} signed checkpoints",
                    highlight=False,
                )
        return
    if not as_json:
        _print_problems(check.problems)
    _fail(check.problems)


@audit_app.command("seal")
@handle_errors
def audit_seal(home: HomeOption = None) -> None:
    """Sign a checkpoint over the current end of the log now and hand every checkpoint
    to the witnesses (recovery service, witness file, auditors' daily mail)."""
    instance = open_instance(home)
    failed = False
    from mailpki.instance.audit_witnesses import seal_and_witness

    for result in seal_and_witness(instance):
        if result.error:
            failed = True
            common.err_console.print(
                f"[red]witness {result.witness}:[/] {result.error}", highlight=False
            )
        else:
            common.console.print(
                f"witness {result.witness}: {result.handed} handed, holds up to record "
                f"{result.last_seq}",
                highlight=False,
            )
    if failed:
        raise AuditError("audit log sealed, but a witness did not take its checkpoints")
    common.console.print("audit log sealed")


@audit_app.command("export")
@handle_errors
def audit_export(
    out: Annotated[Path, typer.Option("--out", help="New folder for the bundle.")],
    home: HomeOption = None,
) -> None:
    """Write the log, its checkpoints, the public keys and the recovery service's copy to
    a folder an auditor checks elsewhere with 'mailpki audit verify --bundle'."""
    instance = open_instance(home)
    from mailpki.instance.audit_export import export_audit

    count = export_audit(instance, out)
    common.console.print(f"exported {count} audit records to {out}", highlight=False)


@config_app.command("set")
@handle_errors
def config_set(
    key: Annotated[str, typer.Argument(help="Dotted key, e.g. web.base_url.")],
    value: Annotated[str, typer.Argument()],
    home: HomeOption = None,
) -> None:
    """Check and set one setting (audited)."""
    instance = open_instance(home)
    new = instance.set_config(key, value, actor=cli_actor())
    instance.seal()
    common.console.print(f"{key} = {new!r}", highlight=False)


@config_app.command("get")
@handle_errors
def config_get(key: Annotated[str, typer.Argument()], home: HomeOption = None) -> None:
    """Print one setting's value."""
    instance = open_instance(home)
    sys.stdout.write(f"{instance.config.get(key)}\n")


@config_app.command("show")
@handle_errors
def config_show(
    as_json: Annotated[bool, typer.Option("--json")] = False, home: HomeOption = None
) -> None:
    """Every setting, its value, and whether it is the default or set by the environment."""
    instance = open_instance(home)
    items = instance.config.items()
    if as_json:
        print_json({key: value for key, value, _ in items})
        return
    from rich.table import Table

    table = Table("setting", "value", "")
    for key, value, is_default in items:
        source = instance.config.source_of(key)
        note = f"from {source}" if source else ("default" if is_default else "")
        table.add_row(key, "" if value is None else str(value), note)
    common.console.print(table)


# `certs expiring` lives with the lifecycle commands.
from mailpki.cli.lifecycle import certs_expiring  # noqa: E402

certs_app.command("expiring")(certs_expiring)
