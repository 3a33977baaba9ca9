"""`mailpki auth oidc …`: OpenID Connect providers people may log on with."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mailpki.auth.oidc import OidcProvider
from mailpki.cli.common import HomeOption, console, handle_errors, open_instance, print_json
from mailpki.instance import sso
from mailpki.instance.actor import cli_actor

auth_app = typer.Typer(
    help="Single sign-on: how people log on besides passwords.", no_args_is_help=True
)
oidc_app = typer.Typer(
    help="OpenID Connect providers (Entra ID, Google Workspace, Okta, Keycloak, …).",
    no_args_is_help=True,
)


auth_app.add_typer(oidc_app, name="oidc")


@oidc_app.command("add")
@handle_errors
def oidc_add(
    name: Annotated[str, typer.Argument(help="A short name shown on the logon page, e.g. entra.")],
    issuer: Annotated[str, typer.Option("--issuer", help="The provider's issuer URL (https).")],
    client_id: Annotated[str, typer.Option("--client-id", help="This portal's client id.")],
    client_secret_file: Annotated[
        Path,
        typer.Option(
            "--client-secret-file", help="File holding the client secret (it stays there)."
        ),
    ],
    claim_mail: Annotated[
        str, typer.Option("--claim-mail", help="ID-token claim holding the mail address.")
    ] = "email",
    claim_groups: Annotated[
        str, typer.Option("--claim-groups", help="ID-token claim listing groups (optional).")
    ] = "",
    home: HomeOption = None,
) -> None:
    """Add an OpenID provider (its discovery document and keys are fetched first).

    Register the portal at the provider with the redirect URI WEB_BASE_URL/oidc/callback."""
    provider = OidcProvider(
        name=name.strip(),
        issuer=issuer.strip(),
        client_id=client_id.strip(),
        client_secret_file=str(client_secret_file.resolve()),
        claim_mail=claim_mail.strip(),
        claim_groups=claim_groups.strip(),
    )
    instance = open_instance(home)
    try:
        discovery = sso.add_oidc_provider(instance, provider, actor=cli_actor())
        redirect = sso.OidcLogons(instance).redirect_uri
    finally:
        instance.close()
    console.print(
        f"OpenID provider {provider.name} added ({discovery.issuer}); its redirect URI for "
        f"this portal is {redirect}",
        highlight=False,
        markup=False,
    )


@oidc_app.command("list")
@handle_errors
def oidc_list(
    as_json: Annotated[bool, typer.Option("--json")] = False, home: HomeOption = None
) -> None:
    """The configured OpenID providers."""
    instance = open_instance(home)
    try:
        rows = [p.describe() for p in sso.oidc_providers(instance)]
    finally:
        instance.close()
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("no OpenID provider ('mailpki auth oidc add')", highlight=False)
    for r in rows:
        console.print(
            f"{r['name']}  {r['issuer']}  client {r['client_id']}  mail claim {r['claim_mail']}"
            + (f"  groups claim {r['claim_groups']}" if r["claim_groups"] else ""),
            highlight=False,
            markup=False,
        )


@oidc_app.command("remove")
@handle_errors
def oidc_remove(name: Annotated[str, typer.Argument()], home: HomeOption = None) -> None:
    """Forget an OpenID provider (nothing at the provider is changed)."""
    instance = open_instance(home)
    try:
        sso.remove_oidc_provider(instance, name, actor=cli_actor())
    finally:
        instance.close()
    console.print(f"OpenID provider {name} removed", highlight=False)
