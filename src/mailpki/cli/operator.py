"""`mailpki operator add|list|remove|passwd`: local accounts of the operator console."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mailpki.cli.common import (
    HomeOption,
    console,
    err_console,
    handle_errors,
    open_instance,
    read_password_file,
)
from mailpki.errors import InputError

app = typer.Typer(
    help="Local accounts of the operator console (/admin) for instances without an LDAP "
    "directory: password and TOTP code.",
    no_args_is_help=True,
)

LoginArgument = Annotated[str, typer.Argument(help="The operator's login, e.g. jane.doe.")]
PasswordFileOption = Annotated[
    Path,
    typer.Option("--password-file", help="File whose first line is the password (12+ characters)."),
]


def _password(path: Path) -> str:
    try:
        return read_password_file(path).decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"the password file {path} is not UTF-8 text") from None


def qr_text(uri: str) -> str:
    """The URI as a QR code drawn with Unicode half blocks, for a terminal."""
    import segno

    out = io.StringIO()
    segno.make(uri, error="m").terminal(out=out, compact=True, border=2)
    return out.getvalue()


@app.command("add")
@handle_errors
def add(
    login: LoginArgument,
    role: Annotated[str, typer.Option("--role", help="officer, operator or auditor.")],
    password_file: PasswordFileOption,
    home: HomeOption = None,
) -> None:
    """Add an account; its TOTP secret is printed once (URI and QR code): enrol it in an
    authenticator app now."""
    from mailpki.instance.actor import cli_actor
    from mailpki.instance.operators import add_operator

    password = _password(password_file)
    instance = open_instance(home)
    try:
        new = add_operator(instance, login, role, password, actor=cli_actor())
    finally:
        instance.close()
    err_console.print(
        f"Operator {new.info.login} ({new.info.role}) added. Its TOTP secret is shown only "
        "now: scan the QR code with an authenticator app (or type the key below), then "
        "clear this screen.",
        highlight=False,
    )
    console.print(new.totp_uri, highlight=False, markup=False)
    console.print(qr_text(new.totp_uri), highlight=False, markup=False, end="")
    err_console.print(f"Key (base32, SHA-1, 6 digits, 30 s): {new.totp_secret}", highlight=False)


@app.command("list")
@handle_errors
def list_(home: HomeOption = None) -> None:
    """Every account: login, role, created, password changed, last logon (no secrets)."""
    from mailpki.instance.operators import list_operators

    instance = open_instance(home)
    try:
        operators = list_operators(instance)
    finally:
        instance.close()
    if not operators:
        err_console.print("No local operator accounts ('mailpki operator add').", highlight=False)
        return
    table = Table("login", "role", "created", "created by", "password changed", "last logon")
    for info in operators:
        table.add_row(
            info.login,
            info.role,
            f"{info.created_at:%Y-%m-%d}",
            info.created_by,
            f"{info.password_changed_at:%Y-%m-%d}",
            f"{info.last_logon_at:%Y-%m-%d %H:%M}" if info.last_logon_at else "never",
        )
    console.print(table)


@app.command("remove")
@handle_errors
def remove(login: LoginArgument, home: HomeOption = None) -> None:
    """Remove an account: it cannot log on any more."""
    from mailpki.instance.actor import cli_actor
    from mailpki.instance.operators import remove_operator

    instance = open_instance(home)
    try:
        info = remove_operator(instance, login, actor=cli_actor())
    finally:
        instance.close()
    console.print(f"Operator {info.login} ({info.role}) removed", highlight=False)


@app.command("passwd")
@handle_errors
def passwd(
    login: LoginArgument, password_file: PasswordFileOption, home: HomeOption = None
) -> None:
    """Set a new password (the TOTP secret stays)."""
    from mailpki.instance.actor import cli_actor
    from mailpki.instance.operators import change_password

    password = _password(password_file)
    instance = open_instance(home)
    try:
        change_password(instance, login, password, actor=cli_actor())
    finally:
        instance.close()
    console.print(f"Password of operator {login} changed", highlight=False)
