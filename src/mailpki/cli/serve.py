"""`mailpki serve`: the HTTP server of an instance."""

from __future__ import annotations

from typing import Annotated

import typer

from mailpki.cli.common import HomeOption, console, err_console, handle_errors, open_instance
from mailpki.errors import InputError
from mailpki.instance.config import resolve_home

LogLevelOption = Annotated[
    str,
    typer.Option(
        "--log-level",
        help="debug, info (one line per request, the default), warning or error; on stderr.",
    ),
]


@handle_errors
def serve(
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8080,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    workers: Annotated[int, typer.Option("--workers", help="Worker processes.")] = 1,
    log_level: LogLevelOption = "info",
    home: HomeOption = None,
) -> None:
    """Serve the enrollment portal, the officer console (/admin), CRLs, OCSP, CA certificates
    and the public certificate directory over HTTP."""
    from mailpki.web.access_log import check_level
    from mailpki.web.listen import base_url_problem, listen
    from mailpki.web.server import run_server

    try:
        level = check_level(log_level)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if workers < 1:
        raise InputError(f"--workers must be at least 1, not {workers}")
    instance = open_instance(home)
    try:
        base = str(instance.config.get("web.base_url"))
        log_format = str(instance.config.get("log.format"))
        where = instance.home
    finally:
        instance.close()
    listener = listen(host, port)  # a port in use fails here, before anything says "serving"
    problem = base_url_problem(base, host, port)
    if problem:
        err_console.print(f"warning: {problem}", highlight=False, markup=False)
        err_console.print(
            f"  set the public URL with: mailpki config set --home {where} web.base_url URL",
            highlight=False,
            markup=False,
        )

    def ready() -> None:
        console.print(
            f"serving {where} on http://{host}:{port} (public URL {base}); Ctrl-C stops",
            highlight=False,
        )

    run_server(
        resolve_home(home),
        listener=listener,
        workers=workers,
        log_level=level,
        log_format=log_format,
        on_ready=ready,
    )
