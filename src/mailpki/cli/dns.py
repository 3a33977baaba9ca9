"""`mailpki dns records|sync`: people's certificates as SMIMEA records (RFC 8162)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from mailpki.cli.common import (
    HomeOption,
    console,
    err_console,
    handle_errors,
    open_instance,
    report_outcome,
)
from mailpki.instance import dns_ops
from mailpki.instance.actor import cli_actor

dns_app = typer.Typer(
    help="SMIMEA records (RFC 8162): certificates in the DNS, trusted through DNSSEC.",
    no_args_is_help=True,
)


@dns_app.command("records")
@handle_errors
def records(
    email: Annotated[
        str | None, typer.Option("--email", help="Only this address (default: everyone).")
    ] = None,
    home: HomeOption = None,
) -> None:
    """Print the SMIMEA records of valid certificates as zone-file lines.

    Usage 3 (DANE-EE), selector 0 (full certificate), matching type 0 (no hash)."""
    instance = open_instance(home)
    try:
        found = dns_ops.smimea_records(instance, email)
    finally:
        instance.close()
    for record in found:
        console.print(record.zone_line(), highlight=False, markup=False, soft_wrap=True)


@dns_app.command("sync")
@handle_errors
def sync(home: HomeOption = None) -> None:
    """Send queued SMIMEA updates now, then every address's full record set.

    Needs dns.update_server, dns.zone and dns.tsig_key_file."""
    instance = open_instance(home)
    try:
        with Progress(
            TextColumn("SMIMEA"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err_console,
            transient=True,
        ) as bar:
            task = bar.add_task("sync", total=None)
            report = dns_ops.sync(
                instance,
                actor=cli_actor(),
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        pending = instance.dns_publisher.pending() if instance.dns_publisher else 0
    finally:
        instance.close()
    report_outcome(
        f"{report.updated} addresses updated, {report.skipped} outside the zone, "
        f"{report.failed} failed, {pending} updates queued",
        report.errors,
        failed=bool(report.failed),
        limit=5,
    )
