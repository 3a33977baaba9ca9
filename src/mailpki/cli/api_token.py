"""`mailpki api-token create|list|revoke`: bearer tokens of the JSON API."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from mailpki.cli.common import HomeOption, console, err_console, handle_errors, open_instance

app = typer.Typer(help="Bearer tokens of the JSON API (/api/v1).", no_args_is_help=True)


@app.command("create")
@handle_errors
def create(
    name: Annotated[str, typer.Option("--name", help="What uses it, e.g. hr-sync.")],
    role: Annotated[str, typer.Option("--role", help="officer, operator or auditor.")],
    expires: Annotated[
        int | None, typer.Option("--expires", help="Days until it stops working (default: never).")
    ] = None,
    home: HomeOption = None,
) -> None:
    """Create a token; it is printed once (only its hash is stored)."""
    from mailpki.instance.actor import cli_actor
    from mailpki.instance.api_tokens import create_token

    instance = open_instance(home)
    try:
        info, token = create_token(instance, name, role, expires_days=expires, actor=cli_actor())
    finally:
        instance.close()
    expiry = f", expires {info.expires_at:%Y-%m-%d}" if info.expires_at else ""
    err_console.print(
        f"API token {info.name} ({info.role}{expiry}); it is shown only now:", highlight=False
    )
    console.print(token, highlight=False, markup=False)


@app.command("list")
@handle_errors
def list_(home: HomeOption = None) -> None:
    """Every token: name, role, state, created, expires, last used (never the token)."""
    from mailpki.instance.api_tokens import list_tokens

    instance = open_instance(home)
    try:
        tokens = list_tokens(instance)
    finally:
        instance.close()
    table = Table("name", "role", "state", "created", "expires", "last used")
    for info in tokens:
        table.add_row(
            info.name,
            info.role,
            info.state,
            f"{info.created_at:%Y-%m-%d}",
            f"{info.expires_at:%Y-%m-%d}" if info.expires_at else "never",
            f"{info.last_used_at:%Y-%m-%d %H:%M}" if info.last_used_at else "",
        )
    console.print(table)


@app.command("revoke")
@handle_errors
def revoke(
    name: Annotated[str, typer.Argument(help="The token's name.")], home: HomeOption = None
) -> None:
    """Revoke a token: it stops working at once, on every node."""
    from mailpki.instance.actor import cli_actor
    from mailpki.instance.api_tokens import revoke_token

    instance = open_instance(home)
    try:
        info = revoke_token(instance, name, actor=cli_actor())
    finally:
        instance.close()
    console.print(f"API token {info.name} revoked", highlight=False)
