"""`mailpki recovery-service …`: the Key Recovery Service on its own, and `recovery connect`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mailpki.cli.common import (
    console,
    err_console,
    handle_errors,
    open_instance,
    print_json,
    read_input,
)
from mailpki.errors import InputError
from mailpki.instance.actor import cli_actor
from mailpki.instance.recovery_link import connect_remote
from mailpki.recovery.rotation import rotate_transport_key
from mailpki.recovery.service import RecoveryService
from mailpki.recovery.setup import ServiceOptions, init_service

service_app = typer.Typer(
    help="The Key Recovery Service: its own home, keys, database and log.", no_args_is_help=True
)
service_config_app = typer.Typer(
    help="The service's settings (service.toml).", no_args_is_help=True
)
service_app.add_typer(service_config_app, name="config")

ServiceHome = Annotated[Path, typer.Option("--home", help="The recovery service's home folder.")]


@service_app.command("init")
@handle_errors
def service_init(
    home: ServiceHome,
    trust: Annotated[
        Path,
        typer.Option(
            "--trust",
            help="The instance's CA chain (PEM: issuing CA and root; 'mailpki ca chain').",
        ),
    ],
    quorum: Annotated[
        int, typer.Option("--quorum", help="Approvals by distinct officers per recovery.")
    ] = 2,
    oaep_hash: Annotated[
        str, typer.Option("--oaep-hash", help="sha256 (default), or sha1 for SoftHSM2 2.6.")
    ] = "sha256",
    alert_contact: Annotated[
        list[str] | None,
        typer.Option("--alert-contact", help="Who gets anomaly alerts (repeat for more)."),
    ] = None,
    database: Annotated[
        str | None, typer.Option("--database", help="Database URL (default: SQLite in the home).")
    ] = None,
    passphrase_file: Annotated[Path | None, typer.Option("--passphrase-file")] = None,
    pkcs11_module: Annotated[Path | None, typer.Option("--pkcs11-module")] = None,
    pkcs11_token: Annotated[str | None, typer.Option("--pkcs11-token")] = None,
    pkcs11_pin_file: Annotated[Path | None, typer.Option("--pkcs11-pin-file")] = None,
    role_oid_arc: Annotated[
        str | None,
        typer.Option("--role-oid-arc", help="Same as the instance's admin.role_oid_arc."),
    ] = None,
    label_prefix: Annotated[
        str | None,
        typer.Option(
            "--label-prefix",
            help="Prefix of the key labels (default krs); distinct per service sharing a token.",
        ),
    ] = None,
) -> None:
    """Create a recovery service: transport key (file or token), audit key, database."""
    settings: dict[str, str] = {"recovery.quorum": str(quorum), "transport.oaep_hash": oaep_hash}
    if alert_contact:
        settings["alerts.contacts"] = ",".join(alert_contact)
    if database:
        settings["database.url"] = database
    if passphrase_file:
        settings["keys.passphrase_file"] = str(passphrase_file.resolve())
    if role_oid_arc:
        settings["trust.role_oid_arc"] = role_oid_arc
    if label_prefix is not None:
        settings["keys.label_prefix"] = label_prefix
    given = [pkcs11_module, pkcs11_token, pkcs11_pin_file]
    if any(given):
        if not all(given):
            raise InputError("--pkcs11-module, --pkcs11-token and --pkcs11-pin-file go together")
        settings |= {
            "keys.backend": "pkcs11",
            "keys.pkcs11_module": str(pkcs11_module),
            "keys.pkcs11_token": str(pkcs11_token),
            "keys.pkcs11_pin_file": str(Path(str(pkcs11_pin_file)).resolve()),
        }
    trust_pem = read_input(trust, "trust")
    with console.status("creating the transport key…"):
        service = init_service(
            home, ServiceOptions(trust_pem=trust_pem, settings=settings), actor=cli_actor()
        )
    try:
        console.print(f"key recovery service created in {home}", highlight=False)
        console.print(
            f"  service id (pin it on the CA side): {service.service_id}", highlight=False
        )
        console.print(f"  keys: {service.keys.describe()}", highlight=False)
        console.print(f"  quorum: {service.quorum}", highlight=False)
    finally:
        service.close()


@service_app.command("serve")
@handle_errors
def service_serve(
    home: ServiceHome,
    port: Annotated[int, typer.Option("--port")] = 8443,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
) -> None:
    """Serve the recovery service over HTTP (put TLS in front of it in production)."""
    from mailpki.web.recovery import run_recovery_server

    service = RecoveryService.open(home)
    console.print(
        f"recovery service {service.service_id[:16]}… on http://{host}:{port}; Ctrl-C stops",
        highlight=False,
    )
    service.close()
    run_recovery_server(home, host=host, port=port)


@service_app.command("confirm")
@handle_errors
def service_confirm(
    alert: Annotated[int, typer.Argument(help="The alert number from the alert mail.")],
    token: Annotated[str, typer.Option("--token", help="The token from the alert mail.")],
    home: ServiceHome,
) -> None:
    """Confirm an anomaly alert (the second contact); lifts its hold on recoveries."""
    service = RecoveryService.open(home)
    try:
        service.confirm_alert(alert, token, actor=cli_actor())
    finally:
        service.close()
    console.print(f"alert {alert} confirmed", highlight=False)


@service_app.command("alerts")
@handle_errors
def service_alerts(
    home: ServiceHome, as_json: Annotated[bool, typer.Option("--json")] = False
) -> None:
    """Anomaly alerts: rule, contact, whether they hold recoveries, confirmation."""
    service = RecoveryService.open(home)
    try:
        rows = service.alerts()
    finally:
        service.close()
    if as_json:
        print_json(rows)
        return
    for a in rows:
        state = (
            f"confirmed {a['confirmed_at']}"
            if a["confirmed_at"]
            else ("HOLDING" if a["holds"] else "open")
        )
        console.print(
            f"{a['id']}  {a['created_at']}  {a['rule']}  {a['detail']}  -> {a['contact']}  {state}",
            highlight=False,
        )


@service_app.command("rotate-key")
@handle_errors
def service_rotate_key(home: ServiceHome) -> None:
    """Make a new transport key pair (RSA + ML-KEM-768); the old ones stay for unwrapping.
    Then run 'mailpki keys rewrap' on the instance."""
    service = RecoveryService.open(home)
    try:
        with console.status("creating the new transport keys…"):
            generation = rotate_transport_key(service, actor=cli_actor())
        console.print(f"new transport key {generation.key_id}", highlight=False)
        console.print(
            f"  {len(service.transport.generations)} key generations kept for unwrapping",
            highlight=False,
        )
        console.print(
            "  embedded service: run 'mailpki keys rewrap' on the instance; a service that "
            "runs apart: 'mailpki recovery connect --url URL --service-id "
            f"{generation.key_id}'",
            highlight=False,
        )
    finally:
        service.close()


@service_app.command("verify")
@handle_errors
def service_verify(home: ServiceHome) -> None:
    """Verify the service's audit log (exit 0 only if intact)."""
    service = RecoveryService.open(home)
    try:
        report = service.verify_audit()
    finally:
        service.close()
    if report.ok:
        console.print(f"recovery audit log intact: {report.records} records", highlight=False)
        return
    for problem in report.problems:
        err_console.print(str(problem), highlight=False, markup=False)
    raise typer.Exit(1)


@service_config_app.command("set")
@handle_errors
def service_config_set(key: str, value: str, home: ServiceHome) -> None:
    """Change one setting of the service."""
    service = RecoveryService.open(home)
    try:
        new = service.set_config(key, value, actor=cli_actor())
    finally:
        service.close()
    console.print(f"{key} = {new}", highlight=False)


@service_config_app.command("show")
@handle_errors
def service_config_show(home: ServiceHome) -> None:
    """Every setting with its value."""
    service = RecoveryService.open(home)
    for key, value, is_default in service.config.items():
        console.print(f"{key} = {value!r}{'  (default)' if is_default else ''}", highlight=False)


def register_connect(recovery_app: typer.Typer) -> None:
    @recovery_app.command("connect")
    @handle_errors
    def recovery_connect(
        url: Annotated[
            str,
            typer.Option("--url", help="The recovery service, e.g. https://krs.example.com:8443."),
        ],
        service_id: Annotated[
            str,
            typer.Option(
                "--service-id",
                help="The id 'recovery-service init' printed (checked, then pinned).",
            ),
        ],
        home: Annotated[Path | None, typer.Option("--home")] = None,
    ) -> None:
        """Use a recovery service that runs apart: fetch, check and pin its transport key."""
        service_id = service_id.strip().lower()
        instance = open_instance(home)
        try:
            connect_remote(instance, url=url, service_id=service_id, actor=cli_actor())
        finally:
            instance.close()
        console.print(
            f"connected to {url}; new keys are escrowed to service {service_id[:16]}…",
            highlight=False,
        )
