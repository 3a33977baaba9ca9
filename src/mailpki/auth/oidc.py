"""OpenID Connect logon: the authorization-code flow with PKCE, for cloud directories
(Entra ID, Google Workspace, Okta, Keycloak, …).

The provider's endpoints come from its discovery document (its `issuer` must be the one
configured); the browser is sent to the authorization endpoint with a fresh `state`,
`nonce` and PKCE challenge (S256); the code that comes back is exchanged at the token
endpoint with the client secret and the PKCE verifier (Authlib). The ID token is then
checked with joserfc: its signature against the provider's JWKS (asymmetric algorithms
only; the key set is fetched again once for an unknown key id), `iss`, `aud` (and
`azp` when there are several audiences), `exp`, `iat` and the `nonce` of this very
logon. No JWT is parsed by hand here.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

from mailpki.errors import AuthenticationError, ConfigError, InputError

__all__ = [
    "ALGORITHMS",
    "Discovery",
    "IdTokenRefused",
    "OidcClient",
    "OidcPerson",
    "OidcProvider",
    "check_claim_name",
    "check_issuer",
    "check_provider_name",
    "person_from_claims",
]

# Asymmetric signatures only: "none" and HMAC (signed with the client secret) are refused.
ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
SCOPE = "openid email profile"
TIMEOUT_SECONDS = 10.0
LEEWAY_SECONDS = 60  # clock difference tolerated on exp / iat
MAX_DOCUMENT = 512 * 1024
_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62})")
_CLAIM = re.compile(r"[A-Za-z_][A-Za-z0-9_.:/-]{0,63}")


class IdTokenRefused(AuthenticationError):
    """The provider's answer or its ID token did not pass a check (the message says which)."""


def check_provider_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise InputError(
            f"{name[:70]!r} is not a provider name: lower-case letters, digits and '-', "
            "at most 63, such as 'entra' or 'google'"
        )
    return name


def check_issuer(issuer: str) -> str:
    """The issuer URL: https (http only for localhost, in tests), no query or fragment."""
    issuer = issuer.strip()
    parts = urlsplit(issuer)
    local = parts.hostname in ("localhost", "127.0.0.1", "::1")
    if parts.scheme != "https" and not (parts.scheme == "http" and local):
        raise InputError(f"the issuer must be an https:// URL, not {issuer[:200]!r}")
    if not parts.hostname or parts.query or parts.fragment or len(issuer) > 400:
        raise InputError(f"{issuer[:200]!r} is not an issuer URL (https://host[/path])")
    return issuer


def check_claim_name(claim: str) -> str:
    if not _CLAIM.fullmatch(claim):
        raise InputError(f"{claim[:70]!r} is not a claim name")
    return claim


def _read_secret(path: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the OIDC client secret file {path}: {exc}") from None
    secret = text.splitlines()[0].strip() if text.strip() else ""
    if not secret:
        raise ConfigError(f"the OIDC client secret file {path} is empty")
    return secret


@dataclass(frozen=True)
class OidcProvider:
    """One configured provider (`mailpki auth oidc add`); the secret stays in its file."""

    name: str
    issuer: str
    client_id: str
    client_secret_file: str
    claim_mail: str = "email"
    claim_groups: str = ""

    def check(self) -> None:
        check_provider_name(self.name)
        check_issuer(self.issuer)
        if (
            not self.client_id.strip()
            or len(self.client_id) > 400
            or any(ord(c) < 33 for c in self.client_id)
        ):
            raise InputError("the client id is empty, too long or has spaces")
        check_claim_name(self.claim_mail)
        if self.claim_groups:
            check_claim_name(self.claim_groups)
        _read_secret(self.client_secret_file)

    @property
    def client_secret(self) -> str:
        return _read_secret(self.client_secret_file)

    def describe(self) -> dict[str, str]:
        return {
            "name": self.name,
            "issuer": self.issuer,
            "client_id": self.client_id,
            "client_secret_file": self.client_secret_file,
            "claim_mail": self.claim_mail,
            "claim_groups": self.claim_groups,
        }


@dataclass(frozen=True)
class Discovery:
    """The endpoints of the provider's discovery document that this flow uses."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str

    @classmethod
    def from_document(cls, issuer: str, document: Mapping[str, Any]) -> Discovery:
        if document.get("issuer") != issuer:
            raise ConfigError(
                f"the provider says its issuer is {str(document.get('issuer'))[:200]!r}, "
                f"not {issuer!r}: use exactly its issuer URL"
            )
        values = {}
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            value = document.get(key)
            if not isinstance(value, str) or urlsplit(value).scheme not in ("https", "http"):
                raise ConfigError(f"the provider's discovery document has no usable {key}")
            values[key] = value
        methods = document.get("code_challenge_methods_supported")
        if isinstance(methods, list) and "S256" not in methods:
            raise ConfigError("the provider does not support PKCE with S256")
        return cls(issuer=issuer, **values)


@dataclass(frozen=True)
class OidcPerson:
    """Who the verified claims say the person is (still outside data: checked again)."""

    subject: str
    mail: str
    name: str = ""
    given_name: str = ""
    family_name: str = ""
    groups: tuple[str, ...] = field(default=())


def _text(claims: Mapping[str, Any], key: str, limit: int = 256) -> str:
    value = claims.get(key)
    if not isinstance(value, str) or len(value) > limit or any(ord(c) < 32 for c in value):
        return ""
    return value.strip()


def person_from_claims(claims: Mapping[str, Any], provider: OidcProvider) -> OidcPerson:
    """The mail claim (and name, groups) of verified ID-token claims."""
    mail = _text(claims, provider.claim_mail, 254).lower()
    if not mail or mail.count("@") != 1 or mail.startswith("@") or mail.endswith("@"):
        raise IdTokenRefused(f"the ID token has no usable mail address in '{provider.claim_mail}'")
    if provider.claim_mail == "email" and claims.get("email_verified") is False:
        raise IdTokenRefused(f"the provider has not verified the mail address {mail}")
    groups: tuple[str, ...] = ()
    if provider.claim_groups:
        raw = claims.get(provider.claim_groups)
        if isinstance(raw, list):
            groups = tuple(g for g in raw if isinstance(g, str) and 0 < len(g) <= 256)[:200]
    return OidcPerson(
        subject=_text(claims, "sub"),
        mail=mail,
        name=_text(claims, "name"),
        given_name=_text(claims, "given_name"),
        family_name=_text(claims, "family_name"),
        groups=groups,
    )


class OidcClient:
    """One provider's client: discovery and the JWKS are fetched lazily and cached."""

    def __init__(
        self,
        provider: OidcProvider,
        *,
        http: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.provider = provider
        self._http = http or httpx.Client(timeout=TIMEOUT_SECONDS, follow_redirects=False)
        self._clock = clock
        self._lock = threading.Lock()
        self._discovery: Discovery | None = None
        self._keys: KeySet | None = None

    # -- provider documents -----------------------------------------------------------

    def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            response = self._http.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise ConfigError(f"cannot fetch the {what} of {self.provider.name}: {exc}") from None
        if response.status_code != 200 or len(response.content) > MAX_DOCUMENT:
            raise ConfigError(
                f"the {what} of {self.provider.name} ({url}) answered HTTP {response.status_code}"
            )
        try:
            document = json.loads(response.content)
        except ValueError:
            raise ConfigError(f"the {what} of {self.provider.name} is not JSON") from None
        if not isinstance(document, dict):
            raise ConfigError(f"the {what} of {self.provider.name} is not a JSON object")
        return document

    def discovery(self) -> Discovery:
        with self._lock:
            if self._discovery is None:
                url = self.provider.issuer.rstrip("/") + "/.well-known/openid-configuration"
                self._discovery = Discovery.from_document(
                    self.provider.issuer, self._get_json(url, "discovery document")
                )
            return self._discovery

    def key_set(self, refresh: bool = False) -> KeySet:
        """The provider's signing keys (fetched again when `refresh`)."""
        discovery = self.discovery()
        with self._lock:
            if self._keys is None or refresh:
                document = self._get_json(discovery.jwks_uri, "key set (JWKS)")
                try:
                    self._keys = KeySet.import_key_set(document)  # type: ignore[arg-type]
                except (JoseError, ValueError, TypeError, KeyError):
                    raise ConfigError(f"the key set of {self.provider.name} is unusable") from None
            return self._keys

    # -- the flow ---------------------------------------------------------------------

    def _oauth(self, redirect_uri: str) -> Any:
        from authlib.integrations.httpx_client import OAuth2Client

        return OAuth2Client(
            client_id=self.provider.client_id,
            client_secret=self.provider.client_secret,
            token_endpoint_auth_method="client_secret_basic",  # noqa: S106 (a method name)
            scope=SCOPE,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            timeout=TIMEOUT_SECONDS,
        )

    def authorization_url(
        self, *, redirect_uri: str, state: str, nonce: str, code_verifier: str
    ) -> str:
        """Where to send the browser (PKCE S256 challenge of `code_verifier`)."""
        endpoint = self.discovery().authorization_endpoint
        with self._oauth(redirect_uri) as client:
            url, _ = client.create_authorization_url(
                endpoint, state=state, nonce=nonce, code_verifier=code_verifier
            )
        return str(url)

    def exchange(self, *, code: str, redirect_uri: str, code_verifier: str) -> str:
        """The ID token for an authorization code (IdTokenRefused if there is none)."""
        from authlib.common.errors import AuthlibBaseError

        endpoint = self.discovery().token_endpoint
        try:
            with self._oauth(redirect_uri) as client:
                token = client.fetch_token(
                    endpoint,
                    grant_type="authorization_code",
                    code=code,
                    code_verifier=code_verifier,
                )
        except AuthlibBaseError as exc:
            raise IdTokenRefused(
                f"the provider refused the authorization code ({str(exc)[:200]})"
            ) from None
        except httpx.HTTPError as exc:
            raise ConfigError(
                f"cannot reach the token endpoint of {self.provider.name}: {exc}"
            ) from None
        id_token = token.get("id_token") if isinstance(token, Mapping) else None
        if not isinstance(id_token, str) or not id_token:
            raise IdTokenRefused("the provider's answer holds no ID token")
        return id_token

    def validate(self, id_token: str, *, nonce: str) -> dict[str, Any]:
        """The claims of `id_token` if it is signed by the provider's key and was issued
        to this client, for this logon (`nonce`), and is still valid."""
        self.discovery()
        if len(id_token) > 64 * 1024:
            raise IdTokenRefused("the ID token is too large")
        try:
            token = self._decode(id_token, self.key_set())
        except _UnknownKey:
            try:  # the provider may have rolled its keys over: fetch them once more
                token = self._decode(id_token, self.key_set(refresh=True))
            except _UnknownKey:
                raise IdTokenRefused(
                    "the ID token is signed with a key the provider does not publish"
                ) from None
        claims = dict(token.claims)
        registry = JWTClaimsRegistry(
            now=int(self._clock()),
            leeway=LEEWAY_SECONDS,
            iss={"essential": True, "value": self.provider.issuer},
            aud={"essential": True, "value": self.provider.client_id},
            sub={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
            nonce={"essential": True, "value": nonce},
        )
        try:
            registry.validate(claims)
        except JoseError as exc:
            raise IdTokenRefused(_claim_reason(exc)) from None
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != self.provider.client_id:
            raise IdTokenRefused("the ID token was issued to another client (azp)")
        return claims

    def _decode(self, id_token: str, keys: KeySet) -> jwt.Token:
        try:
            return jwt.decode(id_token, keys, algorithms=list(ALGORITHMS))
        except JoseError as exc:
            if type(exc).__name__ == "InvalidKeyIdError":
                raise _UnknownKey from None
            raise IdTokenRefused(_signature_reason(exc)) from None
        except (ValueError, TypeError):
            raise IdTokenRefused("the ID token is not a signed JWT") from None

    def close(self) -> None:
        self._http.close()


class _UnknownKey(Exception):
    pass


def _signature_reason(exc: JoseError) -> str:
    name = type(exc).__name__
    if "Signature" in name:
        return "the ID token's signature is not the provider's (bad signature)"
    if "Algorithm" in name or "algorithm" in str(exc).lower():
        return "the ID token is signed with an algorithm that is not allowed"
    return f"the ID token is not a valid signed JWT ({name})"


def _claim_reason(exc: JoseError) -> str:
    claim = str(getattr(exc, "claim", None) or "")
    if type(exc).__name__ == "ExpiredTokenError":
        return "the ID token has expired"
    if type(exc).__name__ == "MissingClaimError":
        return f"the ID token lacks the claim '{claim}'"
    reasons = {
        "nonce": "the ID token's nonce is not this logon's (replayed or mixed up)",
        "aud": "the ID token was issued to another client (wrong audience)",
        "iss": "the ID token comes from another issuer",
        "iat": "the ID token's issue time is in the future",
        "exp": "the ID token has expired",
    }
    return reasons.get(claim, f"the ID token's claims are not valid ({str(exc)[:120]})")
