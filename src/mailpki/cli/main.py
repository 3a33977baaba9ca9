"""The `mailpki` command line: a thin layer over instance operations.

Commands are loaded lazily: `mailpki --help` imports no command module, and
`mailpki certs list` imports only cli/admin.py (and what it imports). The table
``COMMANDS`` names, for each top-level command, the module and attribute that define
it and its one-line help, which `mailpki --help` shows without importing the module.

To add a top-level command:

1. write it in its own module under mailpki/cli/ (a ``typer.Typer()`` group, or one
   function decorated with ``@handle_errors``); keep heavy imports (cryptography's
   x509, SQLAlchemy, rich tables, the web stack) inside the functions that use them;
2. add one line to ``COMMANDS``:
   ``"name": Lazy("mailpki.cli.module", "attribute", "One-line help.")``.
   The attribute is a ``typer.Typer`` (a group) or a function (a command);
3. tests/unit/cli/test_lazy_commands.py checks that every entry loads and that its
   one-line help is the first line of the command's own help.

A sub-command of an existing group is added in that group's module as before.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from typer._click.core import Command, Context
from typer._click.formatting import HelpFormatter
from typer.core import TyperCommand, TyperGroup

from mailpki import __version__


@dataclass(frozen=True)
class Lazy:
    """Where a top-level command is defined, and the help `mailpki --help` shows for it."""

    module: str
    attribute: str
    help: str

    def load(self, name: str) -> Command:
        """Import the module and build the command as `add_typer` / `command` would."""
        target = getattr(importlib.import_module(self.module), self.attribute)
        parent = typer.Typer(add_completion=False)
        if isinstance(target, typer.Typer):
            parent.add_typer(target, name=name)
            group = typer.main.get_command(parent)
            assert isinstance(group, TyperGroup)
            command = group.commands[name]
        else:
            parent.command(name)(target)
            command = typer.main.get_command(parent)
        command.name = name
        return command


# name -> where it is defined; `mailpki --help` lists them in this order.
COMMANDS: dict[str, Lazy] = {
    "init": Lazy(
        "mailpki.cli.setup",
        "init",
        "Create an instance: config, database, CA, OCSP responder, audit key, and an "
        "embedded key recovery service in HOME/krs.",
    ),
    "serve": Lazy(
        "mailpki.cli.serve",
        "serve",
        "Serve the enrollment portal, the officer console (/admin), CRLs, OCSP, CA "
        "certificates and the public certificate directory over HTTP.",
    ),
    "enroll": Lazy(
        "mailpki.cli.enroll",
        "enroll",
        "Generate a key centrally, escrow it, certify it and write the PKCS#12.",
    ),
    "bulk-enroll": Lazy(
        "mailpki.cli.enroll",
        "bulk",
        "Enroll everyone in a CSV; prints email,serial,file,password as CSV (passwords once).",
    ),
    "renew": Lazy(
        "mailpki.cli.lifecycle",
        "renew",
        "Renew: a new escrowed key and certificate replace the current one (which stays "
        "valid for old mail, but is superseded and withdrawn from the directory).",
    ),
    "invite": Lazy(
        "mailpki.cli.invite",
        "invite",
        "Invite people to enroll: a signed, expiring, one-time link by mail.",
    ),
    "demo": Lazy(
        "mailpki.cli.demo",
        "demo",
        "A ready instance with sample people and one-time PINs, then the portal to try it.",
    ),
    "ca": Lazy("mailpki.cli.ca", "app", "The certificate authority: chain, issue, revoke, CRLs."),
    "certs": Lazy("mailpki.cli.admin", "certs_app", "Certificates issued by this instance."),
    "ocsp": Lazy("mailpki.cli.ocsp", "app", "OCSP: pre-signed answers for a web server or CDN."),
    "keys": Lazy(
        "mailpki.cli.enroll",
        "keys_app",
        "The Key Manager: escrow records, delivery reconcile, key pool.",
    ),
    "recovery": Lazy(
        "mailpki.cli.recovery",
        "recovery_app",
        "Key recovery: request, approve, fetch, report, reissue.",
    ),
    "admin": Lazy(
        "mailpki.cli.recovery", "admin_app", "Administrators of the key recovery service."
    ),
    "recovery-service": Lazy(
        "mailpki.cli.recovery_service",
        "service_app",
        "The Key Recovery Service: its own home, keys, database and log.",
    ),
    "directory": Lazy(
        "mailpki.cli.directory",
        "directory_app",
        "Directories (OpenLDAP, Active Directory, embedded): people and published certificates.",
    ),
    "pins": Lazy("mailpki.cli.directory", "pins_app", "One-time enrollment PINs from an HR list."),
    "requests": Lazy(
        "mailpki.cli.directory",
        "requests_app",
        "The queue of enrollment requests waiting for an officer.",
    ),
    "auth": Lazy(
        "mailpki.cli.auth", "auth_app", "Single sign-on: how people log on besides passwords."
    ),
    "api-token": Lazy("mailpki.cli.api_token", "app", "Bearer tokens of the JSON API (/api/v1)."),
    "operator": Lazy(
        "mailpki.cli.operator",
        "app",
        "Local accounts of the operator console (/admin) for instances without an LDAP "
        "directory: password and TOTP code.",
    ),
    "mail": Lazy(
        "mailpki.cli.mail",
        "mail_app",
        "S/MIME: sign, encrypt, decrypt, verify, send; and the outbox of notices.",
    ),
    "contacts": Lazy(
        "mailpki.cli.mail",
        "contacts_app",
        "Correspondents' certificates kept for encryption (from their signed mails).",
    ),
    "dns": Lazy(
        "mailpki.cli.dns",
        "dns_app",
        "SMIMEA records (RFC 8162): certificates in the DNS, trusted through DNSSEC.",
    ),
    "lifecycle": Lazy(
        "mailpki.cli.lifecycle",
        "lifecycle_app",
        "Certificates over the years: expiry notices, leavers, clean-up.",
    ),
    "audit": Lazy("mailpki.cli.admin", "audit_app", "The hash-chained, signed audit log."),
    "config": Lazy("mailpki.cli.admin", "config_app", "Instance settings (config.toml)."),
    "backup": Lazy(
        "mailpki.cli.maintenance",
        "backup",
        "Write a consistent, signed backup of the instance while it runs: settings, CA "
        "certificates, encrypted key files, the databases (SQLite online backup or pg_dump) "
        "and the embedded recovery service.",
    ),
    "restore": Lazy(
        "mailpki.cli.maintenance",
        "restore",
        "Restore a backup into a new folder, after checking every file's hash and the "
        "manifest's signature; a tampered or incomplete archive, or a non-empty target, "
        "is refused and nothing is made.",
    ),
    "upgrade": Lazy(
        "mailpki.cli.maintenance",
        "upgrade",
        "Bring the instance's databases to this version's schema (run after installing a "
        "new mailpki, before starting the servers; safe to run again).",
    ),
}


class LazyGroup(TyperGroup):
    """The top-level group: a command's module is imported when that command runs;
    the help lists ``COMMANDS`` from the table alone."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._listing = False
        self._loaded: dict[str, Command] = {}

    def list_commands(self, ctx: Context) -> list[str]:
        extra = [name for name in super().list_commands(ctx) if name not in COMMANDS]
        return [*COMMANDS, *extra]

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        lazy = COMMANDS.get(cmd_name)
        if lazy is None:
            return super().get_command(ctx, cmd_name)
        if self._listing:  # only the name and the help are shown: import nothing
            return TyperCommand(cmd_name, help=lazy.help, short_help=lazy.help)
        if cmd_name not in self._loaded:
            self._loaded[cmd_name] = lazy.load(cmd_name)
        return self._loaded[cmd_name]

    def format_help(self, ctx: Context, formatter: HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


app = typer.Typer(
    cls=LazyGroup,
    help="mailpki: a self-hosted S/MIME PKI for an organisation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback(invoke_without_command=True)
def _main(
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    if version:
        print(f"mailpki {__version__}")
        raise typer.Exit()


def run() -> None:
    app()


if __name__ == "__main__":
    run()
