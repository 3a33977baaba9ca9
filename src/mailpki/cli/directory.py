"""`mailpki directory …`, `pins import` and `requests …`: who people are, and approval."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mailpki.ca.serials import show_serial
from mailpki.cli.common import (
    HomeOption,
    console,
    handle_errors,
    open_instance,
    print_json,
    read_input,
    read_password_file,
    report_outcome,
)
from mailpki.directory.entry import MAPPINGS, DirectoryEntry
from mailpki.directory.registry import DirectorySettings
from mailpki.errors import InputError
from mailpki.instance import directory_ops as ops
from mailpki.instance.actor import cli_actor
from mailpki.instance.lifecycle import sync_with_leavers

directory_app = typer.Typer(
    help="Directories (OpenLDAP, Active Directory, embedded): people and published certificates.",
    no_args_is_help=True,
)
pins_app = typer.Typer(help="One-time enrollment PINs from an HR list.", no_args_is_help=True)
requests_app = typer.Typer(
    help="The queue of enrollment requests waiting for an officer.", no_args_is_help=True
)

MAX_IMPORT_BYTES = 50 * 1024 * 1024


def _print_entry(entry: DirectoryEntry) -> None:
    for key, value in entry.to_dict().items():
        shown = ", ".join(value) if isinstance(value, list) else value
        console.print(
            f"{key:>13}: {shown if shown not in (None, '') else '-'}", highlight=False, markup=False
        )


@directory_app.command("add")
@handle_errors
def directory_add(
    name: Annotated[str, typer.Argument(help="A name for this directory, e.g. corp-ad.")],
    url: Annotated[
        str, typer.Option("--url", help="ldaps://host[:port] (or ldap:// with --starttls).")
    ],
    base_dn: Annotated[str, typer.Option("--base-dn")],
    bind_dn: Annotated[str, typer.Option("--bind-dn", help="The service account.")],
    bind_password_file: Annotated[
        Path,
        typer.Option(
            "--bind-password-file",
            help="File holding the service account's password (it stays there).",
        ),
    ],
    flavour: Annotated[str, typer.Option("--flavour", help="openldap or ad.")],
    domain: Annotated[
        list[str],
        typer.Option("--domain", help="Mail domain routed to this directory (repeatable)."),
    ],
    starttls: Annotated[bool, typer.Option("--starttls", help="StartTLS on ldap://.")] = False,
    ca_file: Annotated[
        Path | None,
        typer.Option("--ca-file", help="CA certificate(s) of the directory's TLS certificate."),
    ] = None,
    netbios_domain: Annotated[
        str, typer.Option("--netbios-domain", help="AD: the DOMAIN of DOMAIN\\user logins.")
    ] = "",
    timeout: Annotated[
        int,
        typer.Option(
            "--timeout", help="Seconds before a directory that does not answer is an error."
        ),
    ] = 5,
    mapping: Annotated[
        list[str] | None,
        typer.Option(
            "--map",
            help="Override one attribute of the flavour's mapping, e.g. "
            "--map site=physicalDeliveryOfficeName (repeatable).",
        ),
    ] = None,
    kerberos_realm: Annotated[
        str,
        typer.Option(
            "--kerberos-realm",
            help="Kerberos realm whose principals are people of this directory "
            "(single sign-on), e.g. CORP.EXAMPLE.COM.",
        ),
    ] = "",
    home: HomeOption = None,
) -> None:
    """Add an LDAP directory (the connection and service account are tested first)."""
    overrides: dict[str, str] = {}
    for item in mapping or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise InputError(f"--map takes KEY=ATTRIBUTE, not {item!r}")
        overrides[key.strip()] = value.strip()
    if flavour.strip().lower() in MAPPINGS:
        MAPPINGS[flavour.strip().lower()].with_overrides(overrides)  # ConfigError names bad keys
    if not 1 <= timeout <= 120:
        raise InputError("--timeout must be between 1 and 120 seconds")
    if ca_file is not None and not ca_file.is_file():
        raise InputError(f"the CA file {ca_file} does not exist")
    settings = DirectorySettings(
        name=name,
        flavour=flavour.strip().lower(),
        url=url.strip(),
        base_dn=base_dn,
        bind_dn=bind_dn,
        bind_password_file=str(bind_password_file.resolve()),
        domains=tuple(sorted({d.strip().lower() for d in domain if d.strip()})),
        netbios_domain=netbios_domain.strip().upper(),
        starttls=starttls,
        ca_file=str(ca_file.resolve()) if ca_file else "",
        timeout_seconds=timeout,
        mapping=json.dumps(overrides, sort_keys=True),
        kerberos_realm=kerberos_realm.strip(),
    )
    instance = open_instance(home)
    try:
        ops.add_directory(instance, settings, actor=cli_actor())
    finally:
        instance.close()
    console.print(
        f"directory {name} added ({settings.flavour}, {url}; domains {', '.join(settings.domains)})",
        highlight=False,
    )


@directory_app.command("list")
@handle_errors
def directory_list(
    as_json: Annotated[bool, typer.Option("--json")] = False, home: HomeOption = None
) -> None:
    """The configured directories (none: the embedded directory is used)."""
    instance = open_instance(home)
    try:
        rows = [s.describe() for s in instance.directories.settings()]
    finally:
        instance.close()
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print(
            "no LDAP directory: the embedded directory is used ('directory import')",
            highlight=False,
        )
    for r in rows:
        console.print(
            f"{r['name']}  {r['flavour']}  {r['url']}  {r['base_dn']}  domains {', '.join(r['domains'])}"
            + (f"  realm {r['kerberos_realm']}" if r["kerberos_realm"] else ""),
            highlight=False,
            markup=False,
        )


@directory_app.command("remove")
@handle_errors
def directory_remove(name: Annotated[str, typer.Argument()], home: HomeOption = None) -> None:
    """Forget a directory (nothing in the directory itself is changed)."""
    instance = open_instance(home)
    try:
        ops.remove_directory(instance, name, actor=cli_actor())
    finally:
        instance.close()
    console.print(f"directory {name} removed", highlight=False)


@directory_app.command("import")
@handle_errors
def directory_import(
    file: Annotated[
        Path,
        typer.Argument(
            help="people.csv (login,mail,name[,given_name,surname,organisation,site,groups,employee_id,enabled]) or people.ldif."
        ),
    ],
    full: Annotated[
        bool,
        typer.Option(
            "--full",
            help="The file is the whole directory: people it does not list are removed "
            "(leavers; 'lifecycle run' then applies lifecycle.on_leave).",
        ),
    ] = False,
    home: HomeOption = None,
) -> None:
    """Load people into the embedded directory (the default when no LDAP directory is added)."""
    kind = file.suffix.lower().lstrip(".")
    if kind not in ("csv", "ldif"):
        raise InputError("the file must end in .csv or .ldif")
    data = read_input(file, "import", MAX_IMPORT_BYTES)
    instance = open_instance(home)
    try:
        report = ops.import_embedded(instance, data, kind, actor=cli_actor(), full=full)  # type: ignore[arg-type]
    finally:
        instance.close()
    report_outcome(
        f"{report.added} added, {report.updated} updated, {len(report.errors)} refused"
        + (f", {report.removed} removed" if full else ""),
        report.errors,
        failed=bool(report.errors),
    )


@directory_app.command("search")
@handle_errors
def directory_search(
    text: Annotated[str, typer.Argument(help="Start of a name, mail or login.")],
    limit: Annotated[int, typer.Option("--limit")] = 25,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    home: HomeOption = None,
) -> None:
    """The address-list search: name / mail / login prefix, across every directory."""
    if not 1 <= limit <= 1000:
        raise InputError("--limit must be between 1 and 1000")
    instance = open_instance(home)
    try:
        found = instance.directories.search(text, limit=limit)
    finally:
        instance.close()
    if as_json:
        print_json([e.to_dict() for e in found])
        return
    for e in found:
        console.print(
            f"{e.display_name or '-'}  <{e.mail or '-'}>  {e.login}  [{e.directory}]",
            highlight=False,
            markup=False,
        )
    if not found:
        console.print("nobody found", highlight=False)


@directory_app.command("show")
@handle_errors
def directory_show(
    login: Annotated[str, typer.Argument(help="uid, sAMAccountName, user@domain or DOMAIN\\user.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
    home: HomeOption = None,
) -> None:
    """The entry as mailpki maps it."""
    instance = open_instance(home)
    try:
        entry = ops.show(instance, login)
    finally:
        instance.close()
    if as_json:
        print_json(entry.to_dict())
        return
    _print_entry(entry)


@directory_app.command("authenticate")
@handle_errors
def directory_authenticate(
    login: Annotated[str, typer.Argument()],
    password_file: Annotated[
        Path, typer.Option("--password-file", help="File holding the user's password.")
    ],
    home: HomeOption = None,
) -> None:
    """Try a directory logon (for admins diagnosing logon problems); audited, lockout applies."""
    password = read_password_file(password_file).decode("utf-8", errors="strict")
    instance = open_instance(home)
    try:
        identity = ops.authenticate(instance, login, password, actor=cli_actor())
    finally:
        instance.close()
    console.print(
        f"ok: {identity.entry.login} ({identity.entry.dn}) in {identity.entry.directory}",
        highlight=False,
        markup=False,
    )


@directory_app.command("sync")
@handle_errors
def directory_sync(home: HomeOption = None) -> None:
    """Apply lifecycle.on_leave to leavers, deliver queued publications, publish missing
    certificates, remove stale ones."""
    instance = open_instance(home)
    try:
        leavers, report = sync_with_leavers(instance, actor=cli_actor())
    finally:
        instance.close()
    try:
        report_outcome(
            f"{report.published} published, {report.unpublished} removed, "
            f"{report.skipped} without entry, {report.failed} failed",
            report.errors,
            failed=bool(report.failed),
            limit=20,
        )
    finally:  # after the summary line, which scripts read first
        for leaver in leavers.leavers:
            console.print(f"leaver: {leaver.email} ({leaver.why})", highlight=False, markup=False)
        for serial in leavers.revoked:
            console.print(f"revoked {show_serial(serial)} (affiliationChanged)", highlight=False)
        if leavers.stopped and not report.unavailable:  # an outage is reported above
            console.print(f"leaver check stopped: {leavers.stopped}", highlight=False, markup=False)


@pins_app.command("import")
@handle_errors
def pins_import(
    file: Annotated[
        Path | None,
        typer.Argument(
            help="CSV: employee_id,mail,name,pin (or use --from-sql).", show_default=False
        ),
    ] = None,
    from_sql: Annotated[
        bool,
        typer.Option(
            "--from-sql",
            help="Read the rows from the HR database (settings pins.sql_url, pins.sql_query).",
        ),
    ] = False,
    home: HomeOption = None,
) -> None:
    """Import one-time PINs from HR (hashed with argon2 on import; the file is yours to delete)."""
    if from_sql and file is not None:
        raise InputError("give either a PIN file or --from-sql, not both")
    if not from_sql and file is None:
        raise InputError("give a PIN file (CSV: employee_id,mail,name,pin) or --from-sql")
    data = read_input(file, "PIN list", MAX_IMPORT_BYTES) if file is not None else b""
    instance = open_instance(home)
    try:
        if from_sql:
            report = ops.import_hr_pins_from_sql(instance, actor=cli_actor())
        else:
            report = ops.import_hr_pins(instance, data, actor=cli_actor())
    finally:
        instance.close()
    report_outcome(
        f"{report.added} PINs added, {report.replaced} replaced, {len(report.errors)} refused",
        report.errors,
        failed=bool(report.errors),
    )


@requests_app.command("list")
@handle_errors
def requests_list(
    state: Annotated[
        str | None, typer.Option("--state", help="pending, approved, rejected or enrolled.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    home: HomeOption = None,
) -> None:
    """Enrollment requests and their state."""
    instance = open_instance(home)
    try:
        rows = instance.approvals.list(state)
    finally:
        instance.close()
    if as_json:
        print_json([r.to_dict() for r in rows])
        return
    if not rows:
        console.print("no requests", highlight=False)
    for r in rows:
        console.print(
            f"{r.id}  {r.state:<8}  {r.login} <{r.mail or '-'}>  [{r.directory}]  {'; '.join(r.reasons)}",
            highlight=False,
            markup=False,
        )


def _decide(request_id: int, approve: bool, note: str, home: Path | None) -> None:
    instance = open_instance(home)
    try:
        view = ops.decide_request(
            instance, request_id, approve=approve, actor=cli_actor(), note=note
        )
    finally:
        instance.close()
    console.print(f"request {view.id} ({view.login}) {view.state}", highlight=False)


@requests_app.command("approve")
@handle_errors
def requests_approve(
    request_id: Annotated[int, typer.Argument(metavar="ID")],
    note: Annotated[str, typer.Option("--note")] = "",
    home: HomeOption = None,
) -> None:
    """Approve a waiting request: the person's next enrollment goes through."""
    _decide(request_id, True, note, home)


@requests_app.command("reject")
@handle_errors
def requests_reject(
    request_id: Annotated[int, typer.Argument(metavar="ID")],
    note: Annotated[str, typer.Option("--note")] = "",
    home: HomeOption = None,
) -> None:
    """Reject a waiting request."""
    _decide(request_id, False, note, home)
