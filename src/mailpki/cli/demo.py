"""`mailpki demo`: a ready instance with sample people, served for trying out."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mailpki.cli.common import console, handle_errors
from mailpki.errors import InputError
from mailpki.instance.demo import DemoInfo, prepare_demo
from mailpki.instance.instance import cli_actor

DEFAULT_DEMO_HOME = Path("demo")
_ANY_ADDRESS = ("0.0.0.0", "::", "")  # noqa: S104 - names the wildcard, binds nothing


def demo_home(home: Path | None) -> Path:
    """--home, else $MAILPKI_HOME, else ./demo (never ./mailpki-data: keep demos apart)."""
    if home is not None:
        return home
    env = os.environ.get("MAILPKI_HOME")
    return Path(env) if env else DEFAULT_DEMO_HOME


def local_url(host: str, port: int) -> str:
    """The URL a browser on this machine opens for a server listening on host:port."""
    if not 1 <= port <= 65535:
        raise InputError(f"--port must be between 1 and 65535, not {port}")
    shown = "127.0.0.1" if host in _ANY_ADDRESS else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"  # an IPv6 literal in a URL
    return f"http://{shown}:{port}"


def _print_logons(info: DemoInfo) -> None:
    pins = {pin.employee_id: pin.pin for pin in info.pins}
    # No box, no login column: the table fits an 80-column terminal unbroken.
    table = Table(
        title="Sample people (embedded directory)",
        title_justify="left",
        box=None,
        padding=(0, 2, 0, 0),
        header_style="bold underline",
    )
    table.add_column("employee id", no_wrap=True)
    table.add_column("PIN", no_wrap=True)
    table.add_column("mail", no_wrap=True)
    table.add_column("name", overflow="fold")
    table.add_column("department", overflow="fold")
    for person in info.people:
        table.add_row(
            person.employee_id,
            pins.get(person.employee_id, "-"),
            person.mail,
            person.name,
            person.department,
        )
    console.print()
    console.print(table)
    console.print(
        "Log on with an employee id (or the mail address) and its PIN. Each PIN works for "
        "one logon; they are kept in "
        f"{info.credentials_file} (mode 600); 'mailpki demo' prints them again, with a "
        "new PIN for each one already used.",
        highlight=False,
        markup=False,
    )


@handle_errors
def demo(
    home: Annotated[
        Path | None,
        typer.Option(
            "--home",
            help="Demo instance folder (default: $MAILPKI_HOME, then ./demo).",
            show_default=False,
        ),
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8080,
    no_serve: Annotated[
        bool, typer.Option("--no-serve", help="Prepare the demo and print its logons; no server.")
    ] = False,
) -> None:
    """A ready instance with sample people and one-time PINs, then the portal to try it.

    First run: creates the instance (CA, keys, embedded directory, PINs). Later runs on
    the same folder reuse it and print the same logons. An instance that 'mailpki demo'
    did not create is served unchanged."""
    target = demo_home(home)
    url = local_url(host, port)
    with console.status("preparing the demo instance (keys, CA, sample people)…"):
        info = prepare_demo(target, base_url=url, actor=cli_actor())

    if not info.is_demo:
        console.print(
            f"{target} holds an instance that 'mailpki demo' did not create: it is served "
            "as it is, and there are no demo logons (give another --home for a demo).",
            highlight=False,
            markup=False,
        )
    else:
        made = "created" if info.created else "already there, reused"
        console.print(f"demo instance in {target} ({made})", highlight=False, markup=False)
    console.print(f"Open {url}/", highlight=False, markup=False)
    if info.is_demo:
        _print_logons(info)
    if info.outbox is not None:
        mail = f"written as .eml files to {info.outbox}/ (no SMTP host set)"
    else:
        mail = f"sent through the SMTP server {info.smtp_host}"
    console.print()
    console.print(f"Mail to people (invitations, notices): {mail}.", highlight=False, markup=False)
    if info.is_demo:
        console.print(
            "This demo is for trying mailpki out: its CA keys, passphrase and PINs are "
            "all in the folder, and the example.com people are made up.",
            highlight=False,
            markup=False,
        )
    if no_serve:
        console.print(
            f"Not serving (--no-serve); start it with: mailpki demo --home {target}",
            highlight=False,
            markup=False,
        )
        return
    from mailpki.web.server import run_server  # uvicorn: only when serving

    console.print(f"serving on {url}; Ctrl-C stops", highlight=False, markup=False)
    run_server(target, host=host, port=port)
