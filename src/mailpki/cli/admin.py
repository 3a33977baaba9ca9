"""`mailpki certs …`, `mailpki audit …`, `mailpki config …`."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from mailpki.ca.serials import parse_serial
from mailpki.cli.common import (
    HomeOption,
    console,
    err_console,
    handle_errors,
    open_instance,
    print_json,
)
from mailpki.errors import AuditIntegrityError
from mailpki.instance.instance import cli_actor

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
    instance = open_instance(home)
    rows, total = instance.ca.list_certificates(
        limit=limit or None, email=email, include_ca=include_ca
    )
    if as_json:
        print_json([row.as_dict() for row in rows])
        return
    if not console.is_terminal:
        # Piped: one tab-separated line per certificate, nothing cut, easy to grep and cut.
        sys.stdout.write("serial\tsubject\tmail\tprofile\tstatus\tnot_after\n")
        for row in rows:
            fields = (row.serial, row.subject, row.email or "", row.profile, row.status)
            sys.stdout.write("\t".join(fields) + f"\t{row.not_after:%Y-%m-%d}\n")
        return
    table = Table()
    table.add_column("serial", no_wrap=True)  # people copy it from here: never cut it
    table.add_column("subject", overflow="fold")
    table.add_column("mail", overflow="fold")
    table.add_column("profile", overflow="fold")
    table.add_column("status", no_wrap=True)
    table.add_column("not after", no_wrap=True)
    for row in rows:
        style = {"revoked": "red", "expired": "yellow"}.get(row.status, "")
        table.add_row(
            row.serial,
            row.subject,
            row.email or "",
            row.profile,
            f"[{style}]{row.status}[/]" if style else row.status,
            f"{row.not_after:%Y-%m-%d}",
        )
    console.print(table)
    if len(rows) < total:
        console.print(f"{len(rows)} of {total} shown (--limit 0 shows all)")


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


@audit_app.command("verify")
@handle_errors
def audit_verify(
    as_json: Annotated[bool, typer.Option("--json")] = False,
    home: HomeOption = None,
) -> None:
    """Exit 0 only if the audit log is intact (chain, checkpoints and signatures)."""
    instance = open_instance(home)
    report = instance.verify_audit()
    recovery = instance.verify_recovery_audit()
    if recovery is not None and not recovery.ok:
        if not as_json:
            for problem in recovery.problems:
                err_console.print(
                    f"[red]recovery {problem.kind}:[/] {problem.message}", highlight=False
                )
        if report.ok:
            first = recovery.problems[0]
            raise AuditIntegrityError(
                f"recovery service audit log tampered: {len(recovery.problems)} problem(s), "
                f"first: {first.message}"
            )
    if as_json:
        print_json(
            {
                "ok": report.ok,
                "records": report.records,
                "checkpoints": report.checkpoints,
                "last_sealed_seq": report.last_sealed_seq,
                "recovery_ok": None if recovery is None else recovery.ok,
                "problems": [
                    {"seq": p.seq, "kind": p.kind, "message": p.message} for p in report.problems
                ],
            }
        )
    if report.ok:
        if not as_json:
            console.print(
                f"audit log intact: {report.records} records, {report.checkpoints} signed "
                f"checkpoints, sealed up to record {report.last_sealed_seq}",
                highlight=False,
            )
            if recovery is not None:
                console.print(
                    f"recovery service audit log intact: {recovery.records} records, "
                    f"{recovery.checkpoints} signed checkpoints",
                    highlight=False,
                )
        return
    if not as_json:
        for problem in report.problems:
            err_console.print(f"[red]{problem.kind}:[/] {problem.message}", highlight=False)
    first = report.problems[0]
    raise AuditIntegrityError(
        f"audit log tampered: {len(report.problems)} problem(s), first: {first.message}"
    )


@audit_app.command("seal")
@handle_errors
def audit_seal(home: HomeOption = None) -> None:
    """Sign a checkpoint over the current end of the log now."""
    instance = open_instance(home)
    instance.seal()
    console.print("audit log sealed")


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
    console.print(f"{key} = {new!r}", highlight=False)


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
    table = Table("setting", "value", "")
    for key, value, is_default in items:
        source = instance.config.source_of(key)
        note = f"from {source}" if source else ("default" if is_default else "")
        table.add_row(key, "" if value is None else str(value), note)
    console.print(table)
