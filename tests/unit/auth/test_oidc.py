"""ID-token checks of the OpenID Connect client, with keys and tokens made by joserfc and
the provider's documents served by httpx's MockTransport (the real provider is in
tests/e2e/test_sso_oidc_browser.py and tests/integration/test_sso_oidc.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, OctKey, RSAKey
from joserfc.util import urlsafe_b64decode, urlsafe_b64encode

from mailpki.auth.oidc import (
    Discovery,
    IdTokenRefused,
    OidcClient,
    OidcProvider,
    check_issuer,
    check_provider_name,
    person_from_claims,
)
from mailpki.errors import ConfigError, InputError

ISSUER = "https://login.example.com/tenant"
CLIENT = "mailpki-portal"
NONCE = "n-0123456789"


class FakeProvider:
    """Discovery document and JWKS of a provider whose keys can roll over."""

    def __init__(self) -> None:
        self.key = ECKey.generate_key("P-256", parameters={"kid": "k1"}, private=True)
        self.published = [self.key]
        self.jwks_fetches = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/.well-known/openid-configuration"):
            return httpx.Response(
                200,
                json={
                    "issuer": ISSUER,
                    "authorization_endpoint": f"{ISSUER}/authorize",
                    "token_endpoint": f"{ISSUER}/token",
                    "jwks_uri": f"{ISSUER}/keys",
                    "code_challenge_methods_supported": ["S256"],
                },
            )
        if request.url.path.endswith("/keys"):
            self.jwks_fetches += 1
            return httpx.Response(200, json=KeySet(self.published).as_dict(private=False))
        return httpx.Response(404)

    def token(self, key: Any = None, header: dict[str, Any] | None = None, **claims: Any) -> str:
        now = int(time.time())
        values = {
            "iss": ISSUER, "aud": CLIENT, "sub": "00u1", "exp": now + 300, "iat": now,
            "nonce": NONCE, "email": "alice@example.com", "email_verified": True,
        }  # fmt: skip
        values.update(claims)
        values = {k: v for k, v in values.items() if v is not None}
        signing = key or self.key
        head = header or {"alg": "ES256", "kid": signing.kid}
        return jwt.encode(head, values, signing)


@pytest.fixture
def fake() -> FakeProvider:
    return FakeProvider()


@pytest.fixture
def client(fake: FakeProvider, tmp_path: Path) -> OidcClient:
    secret = tmp_path / "secret"
    secret.write_text("client-secret-1\n")
    provider = OidcProvider("corp", ISSUER, CLIENT, str(secret))
    return OidcClient(provider, http=httpx.Client(transport=httpx.MockTransport(fake.handler)))


def test_a_good_token_gives_its_claims(client: OidcClient, fake: FakeProvider) -> None:
    claims = client.validate(fake.token(), nonce=NONCE)
    assert claims["email"] == "alice@example.com" and claims["aud"] == CLIENT


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"aud": "another-client"}, "wrong audience"),
        ({"aud": ["another-client", "third"]}, "wrong audience"),
        ({"aud": [CLIENT, "other"], "azp": "other"}, "another client (azp)"),
        ({"aud": [CLIENT, "other"]}, "another client (azp)"),
        ({"iss": "https://evil.example.com"}, "another issuer"),
        ({"exp": int(time.time()) - 3600}, "has expired"),
        ({"exp": None}, "lacks the claim 'exp'"),
        ({"nonce": "an-old-nonce"}, "nonce is not this logon's"),
        ({"nonce": None}, "lacks the claim 'nonce'"),
        ({"iat": int(time.time()) + 3600}, "issue time is in the future"),
        ({"sub": None}, "lacks the claim 'sub'"),
    ],
)
def test_bad_claims_are_refused(
    client: OidcClient, fake: FakeProvider, change: dict[str, Any], reason: str
) -> None:
    with pytest.raises(IdTokenRefused, match=reason.replace("(", r"\(").replace(")", r"\)")):
        client.validate(fake.token(**change), nonce=NONCE)


def test_a_forged_signature_is_refused(client: OidcClient, fake: FakeProvider) -> None:
    stranger = ECKey.generate_key("P-256", parameters={"kid": "k1"}, private=True)
    with pytest.raises(IdTokenRefused, match="bad signature"):
        client.validate(fake.token(key=stranger), nonce=NONCE)
    head, body, signature = fake.token().split(".")
    claims = json.loads(urlsafe_b64decode(body.encode()))
    claims["email"] = "mallory@example.com"
    forged_body = urlsafe_b64encode(json.dumps(claims).encode()).decode()
    with pytest.raises(IdTokenRefused, match="bad signature"):
        client.validate(f"{head}.{forged_body}.{signature}", nonce=NONCE)


def test_alg_none_and_hmac_with_the_client_secret_are_refused(
    client: OidcClient, fake: FakeProvider
) -> None:
    hmac_key = OctKey.import_key(b"client-secret-1-client-secret-1!")
    hs = fake.token(key=hmac_key, header={"alg": "HS256"})
    with pytest.raises(IdTokenRefused, match="algorithm that is not allowed|not a valid"):
        client.validate(hs, nonce=NONCE)
    head = urlsafe_b64encode(b'{"alg":"none"}').decode()
    body = urlsafe_b64encode(json.dumps({"iss": ISSUER}).encode()).decode()
    with pytest.raises(IdTokenRefused):
        client.validate(f"{head}.{body}.", nonce=NONCE)


def test_keys_rolled_over_are_fetched_once_more(client: OidcClient, fake: FakeProvider) -> None:
    client.validate(fake.token(), nonce=NONCE)
    new_key = RSAKey.generate_key(2048, parameters={"kid": "k2"}, private=True)
    fake.published = [fake.key, new_key]
    token = fake.token(key=new_key, header={"alg": "RS256", "kid": "k2"})
    assert client.validate(token, nonce=NONCE)["sub"] == "00u1"
    assert fake.jwks_fetches == 2
    unknown = ECKey.generate_key("P-256", parameters={"kid": "k9"}, private=True)
    with pytest.raises(IdTokenRefused, match="key the provider does not publish"):
        client.validate(fake.token(key=unknown), nonce=NONCE)


@given(st.text(max_size=200))
def test_garbage_tokens_are_refused_cleanly(text: str) -> None:
    fake = FakeProvider()
    provider = OidcProvider("corp", ISSUER, CLIENT, __file__)
    client = OidcClient(provider, http=httpx.Client(transport=httpx.MockTransport(fake.handler)))
    with pytest.raises(IdTokenRefused):
        client.validate(text, nonce=NONCE)


def test_discovery_must_name_the_configured_issuer() -> None:
    with pytest.raises(ConfigError, match="says its issuer is"):
        Discovery.from_document(ISSUER, {"issuer": "https://other.example.com"})
    with pytest.raises(ConfigError, match="no usable token_endpoint"):
        Discovery.from_document(
            ISSUER, {"issuer": ISSUER, "authorization_endpoint": f"{ISSUER}/a", "jwks_uri": "x"}
        )
    with pytest.raises(ConfigError, match="PKCE"):
        Discovery.from_document(
            ISSUER,
            {
                "issuer": ISSUER, "authorization_endpoint": f"{ISSUER}/a",
                "token_endpoint": f"{ISSUER}/t", "jwks_uri": f"{ISSUER}/k",
                "code_challenge_methods_supported": ["plain"],
            },
        )  # fmt: skip


def test_the_authorization_url_carries_pkce_state_and_nonce(client: OidcClient) -> None:
    url = httpx.URL(
        client.authorization_url(
            redirect_uri="https://pki.example.com/oidc/callback",
            state="s" * 43,
            nonce=NONCE,
            code_verifier="v" * 64,
        )
    )
    params = dict(url.params)
    assert str(url).startswith(f"{ISSUER}/authorize?")
    assert params["code_challenge_method"] == "S256" and len(params["code_challenge"]) == 43
    assert params["state"] == "s" * 43 and params["nonce"] == NONCE
    assert params["client_id"] == CLIENT and params["response_type"] == "code"
    assert "v" * 64 not in str(url)  # the verifier itself never leaves the server


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({}, "no usable mail address"),
        ({"email": "not-a-mail"}, "no usable mail address"),
        ({"email": "a@b@c"}, "no usable mail address"),
        ({"email": ["x@y.org"]}, "no usable mail address"),
        ({"email": "x@y.org\n"}, "no usable mail address"),
        ({"email": "x@y.org", "email_verified": False}, "not verified"),
    ],
)
def test_mail_claims_that_cannot_be_used(claims: dict[str, Any], reason: str) -> None:
    provider = OidcProvider("corp", ISSUER, CLIENT, __file__)
    with pytest.raises(IdTokenRefused, match=reason):
        person_from_claims(claims, provider)


def test_claims_mapped_to_a_person() -> None:
    provider = OidcProvider("corp", ISSUER, CLIENT, __file__, "upn", "roles")
    person = person_from_claims(
        {"sub": "1", "upn": "Alice@Example.COM", "name": "Alice", "roles": ["a", 3, "b"]},
        provider,
    )
    assert person.mail == "alice@example.com" and person.groups == ("a", "b")


@pytest.mark.parametrize(
    "issuer", ["http://login.example.com", "ftp://x", "https://", "https://x/?a=1", "https://x#f"]
)
def test_bad_issuers(issuer: str) -> None:
    with pytest.raises(InputError):
        check_issuer(issuer)


@pytest.mark.parametrize("name", ["", "Entra", "a b", "x" * 70, "../x", "-x"])
def test_bad_provider_names(name: str) -> None:
    with pytest.raises(InputError):
        check_provider_name(name)
