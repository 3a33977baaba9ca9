"""`mailpki ca …`: chain, issue, revoke, CRLs and the offline root."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from mailpki.base.files import write_atomically
from mailpki.ca.crl import parse_reason, reason_name
from mailpki.ca.serials import parse_serial, show_serial
from mailpki.cli.common import (
    HomeOption,
    check_output,
    console,
    err_console,
    handle_errors,
    open_instance,
    print_json,
    read_input,
)
from mailpki.errors import CAError, InputError, MailPKIError
from mailpki.instance.actor import cli_actor
from mailpki.instance.enrollments import flush_mail
from mailpki.instance.instance import Instance
from mailpki.instance.operations import (
    export_root_key,
    import_root_key,
    issue_from_csr,
    remove_root_key,
    renew_issuing_ca,
    rollover_issuing_ca,
    write_crls,
)
from mailpki.policy.profile import list_profiles

app = typer.Typer(
    help="The certificate authority: chain, issue, revoke, CRLs.", no_args_is_help=True
)
issuing_app = typer.Typer(help="The issuing CA's own certificate.", no_args_is_help=True)
app.add_typer(issuing_app, name="issuing")
root_app = typer.Typer(
    help="The offline root: export, remove, import its key.", no_args_is_help=True
)
app.add_typer(root_app, name="root")


def _note_waiting_dns_updates(instance: Instance) -> None:
    """One line on stderr when SMIMEA updates could not be sent just now (they wait)."""
    try:
        publisher = instance.dns_publisher
        waiting = publisher.pending() if publisher is not None else 0
    except MailPKIError as exc:
        err_console.print(f"[yellow]note:[/] SMIMEA updates wait: {exc}", highlight=False)
        return
    if waiting:
        err_console.print(
            f"[yellow]note:[/] {waiting} SMIMEA update(s) wait in the outbox and are retried; "
            "'mailpki dns sync' says why",
            highlight=False,
        )


@app.command()
@handle_errors
def chain(home: HomeOption = None) -> None:
    """Print the issuing CAs (newest first, after a rollover) then the root, PEM."""
    instance = open_instance(home)
    sys.stdout.write(instance.chain_pem().decode())


@app.command()
@handle_errors
def issue(
    csr: Annotated[
        Path, typer.Option("--csr", help="CSR file (PEM or DER); only its key is used.")
    ],
    email: Annotated[str, typer.Option("--email", help="Mail address of the subscriber.")],
    name: Annotated[str, typer.Option("--name", help="Full name of the subscriber.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the certificate (PEM).")],
    profile: Annotated[str | None, typer.Option("--profile", help="Certificate profile.")] = None,
    organisation: Annotated[
        str | None, typer.Option("--org", help="Organisation (default: the instance's).")
    ] = None,
    site: Annotated[str | None, typer.Option("--site", help="Site / department (OU).")] = None,
    given_name: Annotated[
        str | None, typer.Option("--given-name", help="Given name (default: split from --name).")
    ] = None,
    surname: Annotated[
        str | None, typer.Option("--surname", help="Surname (default: split from --name).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out.")] = False,
    home: HomeOption = None,
) -> None:
    """Issue a certificate for the key in a CSR, shaped by a profile and linted first."""
    check_output(out, force)
    csr_data = read_input(csr, "CSR")
    instance = open_instance(home)
    issued = issue_from_csr(
        instance,
        csr_data,
        name=name,
        email=email,
        organisation=organisation,
        site=site,
        profile=profile,
        actor=cli_actor(),
        given_name=given_name,
        surname=surname,
    )
    instance.publish_pending()  # directory and SMIMEA now (else: queued, retried)
    _note_waiting_dns_updates(instance)
    instance.seal()
    write_atomically(out, issued.pem)
    console.print(
        f"issued serial [bold]{show_serial(issued.serial)}[/] ({issued.profile}) for {issued.subject}, "
        f"valid until {issued.not_after:%Y-%m-%d}; written to {out}",
        highlight=False,
    )


@app.command()
@handle_errors
def profiles(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    home: HomeOption = None,
) -> None:
    """The certificate profiles --profile accepts (shipped and this instance's own)."""
    instance = open_instance(home)
    default = str(instance.config.get("ca.default_profile"))
    found = list_profiles(instance.ca_settings.profile_dir)
    if as_json:
        print_json(
            [
                {
                    "name": p.name,
                    "lint_type": p.lint_type,
                    "default": p.name == default,
                    "description": p.description,
                    "validity_days": p.validity_days,
                }
                for p in found
            ]
        )
        return
    for profile in found:
        mark = " (default)" if profile.name == default else ""
        console.print(f"[bold]{profile.name}[/]{mark}: {profile.description}", highlight=False)


@app.command()
@handle_errors
def revoke(
    serial: Annotated[str, typer.Argument(help="Serial number in hex, as 'certs list' prints it.")],
    reason: Annotated[
        str, typer.Option("--reason", help="RFC 5280 reason, e.g. keyCompromise, superseded.")
    ] = "unspecified",
    home: HomeOption = None,
) -> None:
    """Revoke a certificate (it appears on the next CRL; OCSP answers at once)."""
    number = parse_serial(serial)
    flag = parse_reason(reason)
    instance = open_instance(home)
    info = instance.ca.revoke(number, flag, actor=cli_actor())
    instance.publish_pending()  # remove it from the directory now (else: queued, retried)
    _note_waiting_dns_updates(instance)
    instance.seal()
    console.print(
        f"revoked {show_serial(info.serial)} ({info.subject}) for {reason_name(flag)}",
        highlight=False,
    )
    if info.email:
        delivery = flush_mail(instance)
        sent = delivery is not None and not delivery.failed and not delivery.skipped
        console.print(
            f"{info.email} is told by mail"
            + ("" if sent else " (queued: 'mailpki mail flush' or the server sends it)"),
            highlight=False,
        )


@app.command()
@handle_errors
def crl(
    out: Annotated[Path, typer.Option("--out", help="Folder to write every CRL file into.")],
    home: HomeOption = None,
) -> None:
    """Sign fresh CRLs (full, every partition, root) and write them for a customer-hosted CDP."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    instance = open_instance(home)
    with err_console.status("signing CRLs (a large CRL takes seconds)…"):
        written, warning = write_crls(instance, out, actor=cli_actor())
    for info in written:
        console.print(
            f"{info.name}: number {info.number}, {max(info.entries, 0)} entries, "
            f"next update {info.next_update:%Y-%m-%d %H:%M} UTC",
            highlight=False,
        )
    if warning:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False)


@app.command("trust-kit")
@handle_errors
def trust_kit(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the kit into.")],
    force: Annotated[bool, typer.Option("--force", help="Replace files already there.")] = False,
    home: HomeOption = None,
) -> None:
    """Write what outside correspondents need to trust the root into a folder.

    root.pem, root.cer (DER), root.p7c, root.mobileconfig (iPhone/iPad, unsigned),
    fingerprints.txt and README.html with step-by-step instructions (the same as the
    /trust page of 'mailpki serve')."""
    from mailpki.instance.trust_kit import KIT_FILES, TrustKit
    from mailpki.web.portal.theme import Theme

    instance = open_instance(home)
    try:
        kit = TrustKit.of(instance)
        instructions = Theme(instance.home).render(
            "trust_kit.html", org=kit.organisation, kit=kit, links={n: n for n in KIT_FILES}
        )
        written = kit.write(out, instructions=instructions, force=force)
    finally:
        instance.close()
    for path in written:
        console.print(f"  {path}", highlight=False, markup=False)
    console.print(f"root SHA-256 fingerprint: {kit.sha256}", highlight=False)


@root_app.command("export")
@handle_errors
def root_export(
    out: Annotated[Path, typer.Option("--out", help="Encrypted PKCS#8 PEM file to write.")],
    passphrase_file: Annotated[
        Path, typer.Option("--passphrase-file", help="File with the passphrase for the export.")
    ],
    force: Annotated[bool, typer.Option("--force")] = False,
    home: HomeOption = None,
) -> None:
    """Export the root key, encrypted, to take it offline."""
    check_output(out, force)
    passphrase = read_input(passphrase_file, "passphrase").rstrip(b"\r\n")
    instance = open_instance(home)
    write_atomically(out, export_root_key(instance, passphrase, actor=cli_actor()), private=True)
    console.print(f"root key exported to {out}; keep it offline, then run 'mailpki ca root remove'")


@root_app.command("remove")
@handle_errors
def root_remove(
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: the key has been exported.")] = False,
    home: HomeOption = None,
) -> None:
    """Remove the root key from the instance (offline root)."""
    if not yes:
        raise CAError("removing the root key needs --yes (export it first with 'ca root export')")
    instance = open_instance(home)
    remove_root_key(instance, actor=cli_actor())
    console.print(
        "root key removed; the root CRL and issuing CA can be re-signed after 'ca root import'"
    )


@root_app.command("import")
@handle_errors
def root_import(
    key: Annotated[Path, typer.Option("--key", help="The exported root key (encrypted PEM).")],
    passphrase_file: Annotated[Path, typer.Option("--passphrase-file")],
    home: HomeOption = None,
) -> None:
    """Bring the root key back (to re-sign the root CRL or the issuing CA)."""
    pem = read_input(key, "key")
    passphrase = read_input(passphrase_file, "passphrase").rstrip(b"\r\n")
    instance = open_instance(home)
    import_root_key(instance, pem, passphrase, actor=cli_actor())
    console.print("root key imported")


@issuing_app.command("renew")
@handle_errors
def issuing_renew(
    years: Annotated[int, typer.Option("--years", min=1, max=20, help="Validity in years.")] = 10,
    home: HomeOption = None,
) -> None:
    """Re-sign the issuing CA (same name and key) with the root key, which must be here."""
    instance = open_instance(home)
    renewed = renew_issuing_ca(instance, years=years, actor=cli_actor())
    console.print(
        f"issuing CA re-signed: serial {show_serial(renewed.serial_number)}, valid until "
        f"{renewed.not_valid_after_utc:%Y-%m-%d}; the old certificate is kept in ca/",
        highlight=False,
    )


@issuing_app.command("rollover")
@handle_errors
def issuing_rollover(
    years: Annotated[int, typer.Option("--years", min=1, max=20, help="Validity in years.")] = 10,
    home: HomeOption = None,
) -> None:
    """Make a new issuing CA (new key) under the root; new certificates come from it,
    the old one keeps signing its CRLs and OCSP answers. The root key must be here."""
    instance = open_instance(home)
    rolled = rollover_issuing_ca(instance, years=years, actor=cli_actor())
    console.print(
        f"new issuing CA {rolled.label}: {rolled.issuing.subject.rfc4514_string()}, serial "
        f"{show_serial(rolled.issuing.serial_number)}, valid until "
        f"{rolled.issuing.not_valid_after_utc:%Y-%m-%d}; new certificates come from it",
        highlight=False,
    )
