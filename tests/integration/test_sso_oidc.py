"""OpenID Connect against a real provider (node-oidc-provider): `mailpki auth oidc`
commands and their bad input, and ID tokens the provider really signed, checked and
then tampered with (signature, audience, nonce, expiry)."""

from __future__ import annotations

import json
import re
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from joserfc.util import urlsafe_b64decode, urlsafe_b64encode

from mailpki.auth.oidc import IdTokenRefused, OidcClient, OidcProvider
from tests.fixtures.oidc import OidcProviderServer, follow_provider_pages
from tests.integration.cli_helpers import mailpki

pytestmark = pytest.mark.integration

REDIRECT = "http://localhost:9/oidc/callback"  # never opened: the code is read from it


@pytest.fixture
def provider(oidc_provider: Any) -> OidcProviderServer:
    server: OidcProviderServer = oidc_provider(REDIRECT)
    return server


def configured(server: OidcProviderServer, client_id: str | None = None) -> OidcProvider:
    return OidcProvider(
        "cloud", server.issuer, client_id or server.client_id, str(server.secret_file)
    )


def real_id_token(server: OidcProviderServer, login: str) -> tuple[str, str]:
    """(ID token, nonce) of a logon as `login`, through the provider's own pages."""
    client = OidcClient(configured(server))
    state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
    url = client.authorization_url(
        redirect_uri=REDIRECT, state=state, nonce=nonce, code_verifier=verifier
    )
    location = follow_provider_pages(url, login)
    assert location.startswith(REDIRECT)
    query = parse_qs(urlsplit(location).query)
    assert query["state"] == [state]
    token = client.exchange(code=query["code"][0], redirect_uri=REDIRECT, code_verifier=verifier)
    client.close()
    return token, nonce


def test_real_tokens_pass_and_tampered_ones_do_not(provider: OidcProviderServer) -> None:
    token, nonce = real_id_token(provider, "alice")
    client = OidcClient(configured(provider))
    claims = client.validate(token, nonce=nonce)
    assert claims["email"] == "alice@example.com" and claims["aud"] == provider.client_id

    head, body, signature = token.split(".")
    changed = json.loads(urlsafe_b64decode(body.encode()))
    changed["email"] = "mallory@example.com"
    forged = f"{head}.{urlsafe_b64encode(json.dumps(changed).encode()).decode()}.{signature}"
    with pytest.raises(IdTokenRefused, match="bad signature"):
        client.validate(forged, nonce=nonce)
    with pytest.raises(IdTokenRefused, match="nonce is not this logon's"):
        client.validate(token, nonce="the nonce of another logon")
    later = OidcClient(configured(provider), clock=lambda: time.time() + 7200)
    with pytest.raises(IdTokenRefused, match="has expired"):
        later.validate(token, nonce=nonce)
    other = OidcClient(configured(provider, client_id="another-portal"))
    with pytest.raises(IdTokenRefused, match="wrong audience"):
        other.validate(token, nonce=nonce)
    for each in (client, later, other):
        each.close()


def test_a_code_is_good_once(provider: OidcProviderServer) -> None:
    client = OidcClient(configured(provider))
    with pytest.raises(IdTokenRefused, match="refused the authorization code"):
        client.exchange(code="made-up-code", redirect_uri=REDIRECT, code_verifier="v" * 64)
    client.close()


def test_auth_oidc_commands(sqlite_home: Path, provider: OidcProviderServer) -> None:
    home = sqlite_home
    added = mailpki(
        "auth", "oidc", "add", "cloud", "--home", home, "--issuer", provider.issuer,
        "--client-id", provider.client_id, "--client-secret-file", provider.secret_file,
        "--claim-mail", "email", "--claim-groups", "groups",
    )  # fmt: skip
    assert added.code == 0, added.err
    assert re.search(r"redirect URI for this portal is http://\S+/oidc/callback", added.out)
    listed = json.loads(mailpki("auth", "oidc", "list", "--json", "--home", home).out)
    assert [(p["name"], p["issuer"], p["claim_groups"]) for p in listed] == [
        ("cloud", provider.issuer, "groups")
    ]
    again = mailpki(
        "auth", "oidc", "add", "cloud", "--home", home, "--issuer", provider.issuer,
        "--client-id", "x", "--client-secret-file", provider.secret_file,
    )  # fmt: skip
    assert again.code == 2 and "exists" in again.err
    assert mailpki("auth", "oidc", "remove", "cloud", "--home", home).code == 0
    gone = mailpki("auth", "oidc", "remove", "cloud", "--home", home)
    assert gone.code == 3 and "no OpenID provider named 'cloud'" in gone.err


@pytest.mark.parametrize(
    ("change", "code", "message"),
    [
        ({"--issuer": "http://idp.example.com"}, 2, "must be an https:// URL"),
        ({"name": "Cloud Provider"}, 2, "is not a provider name"),
        ({"--client-secret-file": "/nonexistent/secret"}, 1, "cannot read the OIDC client secret"),
        ({"--claim-mail": "mail claim"}, 2, "is not a claim name"),
        ({"--issuer": "ISSUER_AS_IP"}, 1, "says its issuer is"),
        ({"--issuer": "http://localhost:9"}, 1, "cannot fetch the discovery document"),
    ],
)
def test_auth_oidc_add_refusals_store_nothing(
    sqlite_home: Path, provider: OidcProviderServer, change: dict[str, str], code: int, message: str
) -> None:
    options = {
        "--issuer": provider.issuer,
        "--client-id": provider.client_id,
        "--client-secret-file": str(provider.secret_file),
        "--claim-mail": "email",
    }
    name = change.pop("name", "cloud")
    options.update(change)
    if options["--issuer"] == "ISSUER_AS_IP":  # the same provider under another name
        options["--issuer"] = provider.issuer.replace("localhost", "127.0.0.1")
    args = [arg for pair in options.items() for arg in pair]
    result = mailpki("auth", "oidc", "add", name, "--home", sqlite_home, *args)
    assert result.code == code, (result.out, result.err)
    assert message in result.err and "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 1
    listed = json.loads(mailpki("auth", "oidc", "list", "--json", "--home", sqlite_home).out)
    assert listed == []
