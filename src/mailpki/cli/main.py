"""The `mailpki` command line: a thin layer over instance operations."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mailpki import __version__
from mailpki.cli import (
    admin,
    api_token,
    auth,
    ca,
    demo,
    directory,
    dns,
    enroll,
    invite,
    lifecycle,
    mail,
    maintenance,
    ocsp,
    operator,
    recovery,
    recovery_service,
)
from mailpki.cli.common import HomeOption, console, err_console, handle_errors, open_instance
from mailpki.errors import InputError
from mailpki.instance.bootstrap import InitOptions, PKCS11Options, initialise
from mailpki.instance.config import resolve_home
from mailpki.instance.instance import cli_actor
from mailpki.keystore.keys import CA_KEY_TYPES

app = typer.Typer(
    help="mailpki: a self-hosted S/MIME PKI for an organisation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(ca.app, name="ca")
app.add_typer(ocsp.app, name="ocsp")
app.add_typer(admin.certs_app, name="certs")
app.add_typer(admin.audit_app, name="audit")
app.add_typer(admin.config_app, name="config")
app.add_typer(recovery.admin_app, name="admin")
app.add_typer(recovery.recovery_app, name="recovery")
app.add_typer(recovery_service.service_app, name="recovery-service")
app.add_typer(api_token.app, name="api-token")
app.add_typer(operator.app, name="operator")
recovery_service.register_connect(recovery.recovery_app)
enroll.register(app)
mail.register(app)
directory.register(app)
maintenance.register(app)
auth.register(app)
dns.register(app)
lifecycle.register(app, admin.certs_app)
app.command("invite")(invite.invite)
app.command("demo")(demo.demo)


@app.callback(invoke_without_command=True)
def _main(
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    if version:
        console.print(f"mailpki {__version__}")
        raise typer.Exit()


@app.command()
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


LogLevelOption = Annotated[
    str,
    typer.Option(
        "--log-level",
        help="debug, info (one line per request, the default), warning or error; on stderr.",
    ),
]


@app.command()
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


def run() -> None:
    app()


if __name__ == "__main__":
    run()
