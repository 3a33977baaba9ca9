"""`mailpki ocsp …`: the pre-signed OCSP answers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

from mailpki.cli.common import HomeOption, console, err_console, handle_errors, open_instance
from mailpki.instance.ocsp_export import export_ocsp

app = typer.Typer(help="OCSP: pre-signed answers for a web server or CDN.", no_args_is_help=True)


@app.command()
@handle_errors
def export(
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="Folder to write the answers into (empty, or an earlier export)."
        ),
    ],
    home: HomeOption = None,
) -> None:
    """Write every valid pre-signed OCSP answer as a file named by its RFC 5019 GET path
    (signing first what is due); serve the folder with the nginx configuration of
    docs/operations.md."""
    instance = open_instance(home)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        MofNCompleteColumn(),
        console=err_console,
        transient=True,
    ) as progress:
        signing = progress.add_task("signing due answers", total=None)
        writing = progress.add_task("writing files", total=None)
        report = export_ocsp(
            instance,
            out,
            on_signed=lambda n: progress.update(signing, completed=n),
            on_written=lambda n: progress.update(writing, completed=n),
        )
    console.print(
        f"{report.written} answers written to {out} ({report.signed} signed now, "
        f"{report.removed} old files removed)",
        highlight=False,
    )
    if report.earliest_next_update is not None:
        console.print(
            f"export again before {report.earliest_next_update:%Y-%m-%d %H:%M} UTC "
            "(the earliest nextUpdate); e.g. hourly from cron",
            highlight=False,
        )
