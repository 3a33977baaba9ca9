"""`mailpki init`: create an instance."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mailpki.cli.common import HomeOption, console, handle_errors
from mailpki.errors import InputError
from mailpki.instance.actor import cli_actor
from mailpki.instance.bootstrap import InitOptions, PKCS11Options, initialise
from mailpki.instance.config import resolve_home
from mailpki.keystore.key_types import CA_KEY_TYPES


@handle_errors
def init(
    org: Annotated[str, typer.Option("--org", help="Organisation name (in the CA names).")],
    domain: Annotated[str, typer.Option("--domain", help="Main mail domain, e.g. example.com.")],
    org_id: Annotated[
        str | None,
        typer.Option(
            "--org-id",
            help="organizationIdentifier (e.g. NTRGB-12345678) for sponsor-validated certificates.",
        ),
    ] = None,
    ca_key_type: Annotated[
        str, typer.Option("--ca-key-type", help=f"CA key type: {'|'.join(CA_KEY_TYPES)}.")
    ] = "rsa3072",
    database: Annotated[
        str | None,
        typer.Option("--database", help="Database URL (default: SQLite in the home folder)."),
    ] = None,
    base_url: Annotated[
        str | None, typer.Option("--base-url", help="Public URL for CDP, AIA and links.")
    ] = None,
    passphrase_file: Annotated[
        Path | None, typer.Option("--passphrase-file", help="File holding the key passphrase.")
    ] = None,
    passphrase_env: Annotated[
        str | None,
        typer.Option("--passphrase-env", help="Env variable holding the key passphrase."),
    ] = None,
    pkcs11_module: Annotated[Path | None, typer.Option("--pkcs11-module")] = None,
    pkcs11_token: Annotated[str | None, typer.Option("--pkcs11-token")] = None,
    pkcs11_pin_file: Annotated[Path | None, typer.Option("--pkcs11-pin-file")] = None,
    recovery_oaep_hash: Annotated[
        str,
        typer.Option(
            "--recovery-oaep-hash",
            help="RSA-OAEP hash of key recovery blocks: sha256, or sha1 for SoftHSM2 2.6.",
        ),
    ] = "sha256",
    alert_contact: Annotated[
        list[str] | None,
        typer.Option("--alert-contact", help="Who gets key recovery anomaly alerts (repeatable)."),
    ] = None,
    home: HomeOption = None,
) -> None:
    """Create an instance: config, database, CA, OCSP responder, audit key, and an
    embedded key recovery service in HOME/krs."""
    if ca_key_type not in CA_KEY_TYPES:
        raise InputError(f"--ca-key-type must be one of {', '.join(CA_KEY_TYPES)}")
    pkcs11 = None
    given = [pkcs11_module, pkcs11_token, pkcs11_pin_file]
    if any(given):
        if not all(given):
            raise InputError("--pkcs11-module, --pkcs11-token and --pkcs11-pin-file go together")
        assert pkcs11_module and pkcs11_token and pkcs11_pin_file
        pkcs11 = PKCS11Options(pkcs11_module, pkcs11_token, pkcs11_pin_file)
    target = resolve_home(home)
    if recovery_oaep_hash not in ("sha1", "sha256", "sha384", "sha512"):
        raise InputError("--recovery-oaep-hash must be sha1, sha256, sha384 or sha512")
    with console.status("creating keys and CA certificates…"):
        result = initialise(
            target,
            InitOptions(
                org=org,
                domain=domain,
                org_id=org_id,
                ca_key_type=ca_key_type,
                database_url=database,
                base_url=base_url,
                pkcs11=pkcs11,
                passphrase_file=passphrase_file,
                passphrase_env=passphrase_env,
                recovery_oaep_hash=recovery_oaep_hash,
                recovery_alert_contacts=tuple(alert_contact or ()),
            ),
            actor=cli_actor(),
        )
    hierarchy = result.instance.hierarchy
    console.print(f"instance created in {target}", highlight=False)
    console.print(f"  root CA:     {hierarchy.root.subject.rfc4514_string()}", highlight=False)
    console.print(f"  issuing CA:  {hierarchy.issuing.subject.rfc4514_string()}", highlight=False)
    console.print(f"  keys:        {result.instance.keys.describe()}", highlight=False)
    if result.generated_passphrase:
        console.print(
            f"  the key passphrase was generated into {result.generated_passphrase} (mode 600); "
            "for production keep it elsewhere: --passphrase-file or --passphrase-env",
            highlight=False,
        )
    profile = result.instance.config.get("ca.default_profile")
    console.print(f"  default profile: {profile}", highlight=False)
    if not org_id:
        console.print(
            "  no --org-id given: certificates are mailbox-validated (CN=<mail>) until you set "
            "'config set instance.org_id NTR..-...' and 'config set ca.default_profile "
            "sponsored-multipurpose'",
            highlight=False,
        )
    result.instance.close()
