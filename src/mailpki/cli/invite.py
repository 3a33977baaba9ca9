"""`mailpki invite`: mail people a one-time enrollment link (or remind them)."""

from __future__ import annotations

from typing import Annotated

import typer

from mailpki.cli.common import HomeOption, console, err_console, handle_errors, open_instance
from mailpki.errors import InputError
from mailpki.instance import invitations as ops
from mailpki.instance.actor import cli_actor


@handle_errors
def invite(
    logins: Annotated[
        list[str] | None, typer.Argument(help="Logins (or user@domain) of the people to invite.")
    ] = None,
    all_people: Annotated[
        bool, typer.Option("--all", help="Invite everyone in the directories.")
    ] = False,
    filter_text: Annotated[
        str | None,
        typer.Option(
            "--filter",
            help="Only people whose site or organisation is TEXT; 'ou=Sales' (site) or "
            "'o=Corp' (organisation).",
        ),
    ] = None,
    resend: Annotated[
        bool,
        typer.Option("--resend", help="Replace an open invitation with a new link."),
    ] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="Invite people who already hold a valid certificate, too."),
    ] = False,
    remind: Annotated[
        bool,
        typer.Option(
            "--remind",
            help="Instead: remind people who have not used their invitation "
            "(after invitations.reminder_days).",
        ),
    ] = False,
    home: HomeOption = None,
) -> None:
    """Invite people to enroll: a signed, expiring, one-time link by mail."""
    if remind and (logins or all_people or filter_text is not None or resend or force):
        raise InputError("--remind takes no logins, --all, --filter, --resend or --force")
    instance = open_instance(home)
    try:
        if remind:
            count = ops.remind_users(instance, cli_actor())
            console.print(f"{count} reminder(s) sent", highlight=False)
            return
        report = ops.invite_users(
            instance,
            list(logins or []),
            all_people=all_people,
            filter_text=filter_text,
            resend=resend,
            actor=cli_actor(),
            force=force,
        )
    finally:
        instance.close()
    for login in report.sent:
        console.print(f"invited {login}", highlight=False, markup=False)
    for line in report.skipped:
        console.print(f"skipped {line}", highlight=False, markup=False)
    for line in report.errors:
        err_console.print(f"error: {line}", highlight=False, markup=False)
    for line in report.notes:
        err_console.print(f"note: {line}", highlight=False, markup=False)
    console.print(
        f"{len(report.sent)} invited, {len(report.skipped)} skipped, {len(report.errors)} failed",
        highlight=False,
    )
    if report.errors:
        raise typer.Exit(1)
