"""`mailpki demo`: a ready instance with sample people, served for trying out."""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mailpki.cli.common import console, err_console, handle_errors
from mailpki.errors import InputError
from mailpki.instance.actor import cli_actor
from mailpki.instance.demo import DEMO_PKI_URL, DemoInfo, configured_base_url, prepare_demo

DEFAULT_DEMO_HOME = Path("demo")
DEFAULT_PORT = 8080
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


def _local_port(base_url: str | None) -> int | None:
    """The port of a configured http://127.0.0.1:PORT (or localhost) URL, else None."""
    if not base_url:
        return None
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        return None
    try:
        return parts.port or 80
    except ValueError:
        return None


def _say(text: str) -> None:
    console.print(text, highlight=False, markup=False)


def _warn(text: str) -> None:
    err_console.print(f"warning: {text}", highlight=False, markup=False)


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
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            help="TCP port (default: the port of an existing demo's web.base_url, else 8080).",
            show_default=False,
        ),
    ] = None,
    no_serve: Annotated[
        bool, typer.Option("--no-serve", help="Prepare the demo and print its logons; no server.")
    ] = False,
    log_level: Annotated[
        str, typer.Option("--log-level", help="debug, info, warning or error (as for serve).")
    ] = "info",
) -> None:
    """A ready instance with sample people and one-time PINs, then the portal to try it.

    First run: creates the instance (CA, keys, embedded directory, PINs). Later runs on
    the same folder reuse it, change none of its settings and print the same logons
    (a new PIN for each one used or void). An instance that 'mailpki demo' did not
    create is served unchanged."""
    from mailpki.web.access_log import check_level
    from mailpki.web.listen import base_url_problem, listen

    try:
        level = check_level(log_level)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    target = demo_home(home)
    configured = configured_base_url(target)
    chosen = port if port is not None else (_local_port(configured) or DEFAULT_PORT)
    url = local_url(host, chosen)
    # Bound before anything is made or said: a port in use is one line, and no instance.
    listener = None if no_serve else listen(host, chosen)
    try:
        with console.status("preparing the demo instance (keys, CA, sample people)…"):
            info = prepare_demo(target, base_url=url, actor=cli_actor())
    except BaseException:
        if listener is not None:
            listener.close()
        raise

    if not info.is_demo:
        _say(
            f"{target} holds an instance that 'mailpki demo' did not create: it is served "
            "as it is, and there are no demo logons (give another --home for a demo)."
        )
    else:
        made = "created" if info.created else "already there, reused"
        _say(f"demo instance in {target} ({made})")
    _say(f"Open {url if listener is not None else info.base_url}/")
    if info.is_demo:
        _print_logons(info)
    if info.outbox is not None:
        mail = f"written as .eml files to {info.outbox}/ (no SMTP host set)"
    else:
        mail = f"sent through the SMTP server {info.smtp_host}"
    console.print()
    _say(f"Mail to people (invitations, notices): {mail}.")
    if info.is_demo:
        _say(
            "This demo is for trying mailpki out: its CA keys, passphrase and PINs are "
            "all in the folder, and the example.com people are made up."
        )
        if info.pki_base_url.rstrip("/") == DEMO_PKI_URL:
            _say(
                f"Its certificates name {DEMO_PKI_URL} for their CRL and OCSP, a name that "
                "does not resolve: mail clients cannot check whether a demo certificate is "
                "revoked. A real instance uses its own public DNS name: 'mailpki init "
                "--base-url https://pki.yourcompany.com' (or later 'mailpki config set "
                "web.base_url https://pki.yourcompany.com'), served there over http(s)."
            )
    if info.base_url.rstrip("/") != url:
        if info.is_demo and (listener is not None or port is not None):
            _warn(
                f"this demo's links (web.base_url) point at {info.base_url}, not at {url}; "
                "'mailpki demo' does not change an existing instance's settings. To move "
                f"them: mailpki config set --home {target} web.base_url {url}"
            )
        elif listener is not None:
            problem = base_url_problem(info.base_url, host, chosen)
            if problem:
                _warn(problem)
    if listener is None:
        _say(f"Not serving (--no-serve); start it with: mailpki demo --home {target}")
        return
    from mailpki.web.server import run_server  # uvicorn: only when serving

    run_server(
        target,
        listener=listener,
        log_level=level,
        on_ready=lambda: _say(f"serving on {url}; Ctrl-C stops"),
    )
