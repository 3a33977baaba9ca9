"""What every command shares: --home, reading input files, one-line errors."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar

import typer

from mailpki.errors import InputError, MailPKIError
from mailpki.instance.config import resolve_home

if TYPE_CHECKING:
    from rich.console import Console

    console: Console
    err_console: Console

    # Imported where an instance is opened: a command that never opens one (`--help`,
    # `certs list` on SQLite) does not pay for cryptography and SQLAlchemy.
    from mailpki.instance.instance import Instance


# `console` and `err_console` (rich Consoles for stdout and stderr) are made at first use
# (PEP 562): importing rich's console takes a good part of the 0.3 s a short command may
# take, and commands that print plain lines (`certs list` into a pipe) never need it.
# Modules that must stay light refer to them as `common.console` inside functions.
_consoles: dict[str, Console] = {}


def __getattr__(name: str) -> Console:
    if name not in ("console", "err_console"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _consoles:
        import rich.console

        _consoles[name] = rich.console.Console(stderr=name == "err_console", soft_wrap=True)
    return _consoles[name]


MAX_INPUT_BYTES = 1024 * 1024

HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home",
        help="Instance folder (default: $MAILPKI_HOME, then ./mailpki-data).",
        show_default=False,
    ),
]

P = ParamSpec("P")
R = TypeVar("R")


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one line to stderr; the caller raises the returned Exit."""
    __getattr__("err_console").print(
        f"[bold red]error:[/] {message}", markup=True, highlight=False, soft_wrap=True
    )
    return typer.Exit(code)


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn MailPKIError (and stray exceptions) into a one-line reason and a non-zero exit."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            try:
                return func(*args, **kwargs)
            finally:
                seal_opened()
        except MailPKIError as exc:
            raise fail(
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__, exc.exit_code
            ) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:
            if os.environ.get("MAILPKI_DEBUG"):
                raise
            raise fail(
                f"internal error ({type(exc).__name__}: {exc}); set MAILPKI_DEBUG=1 for details", 70
            ) from None

    return wrapper


_opened: list[Instance] = []


def open_instance(home: Path | None) -> Instance:
    """The instance of --home. Every seal it makes hands its checkpoints to the witnesses,
    and the command seals it when it ends (`seal_opened`)."""
    from mailpki.instance.instance import Instance

    instance = Instance.open(resolve_home(home))
    instance.after_seal.append(hand_over_checkpoints)
    _opened.append(instance)
    return instance


def seal_opened() -> None:
    """At the end of a command (done or failed): seal the log of each instance it wrote to,
    which hands the checkpoints to the witnesses. A command that only read (its audit
    log never opened) unlocks no key. Never raises: the command's own outcome stands."""
    while _opened:
        instance = _opened.pop()
        if "audit" not in instance.__dict__:
            continue
        closed = instance.closed  # closing only let go of connections: they reopen
        try:
            instance.seal()
        except MailPKIError as exc:
            __getattr__("err_console").print(
                f"[yellow]warning:[/] the audit log could not be sealed at the end: {exc}",
                highlight=False,
            )
        finally:
            if closed:
                instance.close()


def hand_over_checkpoints(instance: Instance) -> None:
    """Best effort after a seal: a witness that is down warns, never fails the command.
    Skipped when this process already handed over the newest checkpoint."""
    from mailpki.instance.audit_witnesses import hand_over_quietly, newest_checkpoint_seq

    newest = newest_checkpoint_seq(instance)
    if newest is not None and instance.__dict__.get("_witnessed_seq") == newest:
        return
    instance.__dict__["_witnessed_seq"] = newest
    for failed in hand_over_quietly(instance):
        __getattr__("err_console").print(
            f"[yellow]warning:[/] witness {failed.witness} did not take the new checkpoint "
            f"({failed.error}); it is behind until the next hand-over",
            highlight=False,
        )


def read_input(path: Path, what: str, limit: int = MAX_INPUT_BYTES) -> bytes:
    """Read an outside file with a size limit and a clear error for each way it can fail."""
    if str(path) == "-":
        data = sys.stdin.buffer.read(limit + 1)
    else:
        if not path.exists():
            raise InputError(f"{what} file {path} does not exist")
        if not path.is_file():
            raise InputError(f"{what} {path} is not a regular file")
        size = path.stat().st_size
        if size > limit:
            raise InputError(f"{what} file {path} is {size} bytes; the limit is {limit}")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read {what} file {path}: {exc.strerror}") from None
    if len(data) > limit:
        raise InputError(f"{what} input is larger than {limit} bytes")
    return data


def check_output(path: Path, force: bool) -> None:
    """Refuse before doing any work when the output cannot be written."""
    if path.exists() and not force:
        raise InputError(f"{path} already exists; use --force to overwrite it")
    if not path.parent.exists():
        raise InputError(f"the folder {path.parent} does not exist")


def print_json(data: Any) -> None:
    import json

    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_password_file(path: Path, what: str = "password") -> bytes:
    """A password from a file: the first line, without its line ending; never empty."""
    data = read_input(path, f"{what}", 4096)
    line = data.splitlines()[0] if data else b""
    if not line.strip():
        raise InputError(f"the {what} file {path} is empty")
    return line


def report_outcome(summary: str, errors: list[str], *, failed: bool, limit: int = 1000) -> None:
    """Print each error (stderr), then the one-line summary; exit 1 if anything failed."""
    for error in errors[:limit]:
        __getattr__("err_console").print(error, highlight=False, markup=False)
    __getattr__("console").print(summary, highlight=False)
    if failed:
        raise typer.Exit(1)
