"""Single sign-on use cases: Kerberos (Negotiate) and OpenID Connect logons, audited and
counted by the lockout like a password logon.

A refusal is audited as `logon.refused` with its reason and the principal when the
ticket got far enough to name one; a success as `logon.succeeded` with the entry's DN.
The identity that comes out is the same as a password logon's, so approval treats both
alike.
"""

from __future__ import annotations

import base64
import threading
from dataclasses import dataclass

from mailpki.auth.identity import Identity
from mailpki.auth.kerberos import KerberosRefused
from mailpki.auth.limiter import limiter_keys
from mailpki.auth.oidc import (
    Discovery,
    IdTokenRefused,
    OidcClient,
    OidcPerson,
    OidcProvider,
    check_provider_name,
    person_from_claims,
)
from mailpki.auth.oidc_store import OidcProviders, PendingLogons
from mailpki.directory.entry import DirectoryEntry
from mailpki.errors import AuthenticationError
from mailpki.instance.instance import Instance

__all__ = [
    "CALLBACK_PATH",
    "NegotiateOutcome",
    "OidcLogons",
    "OidcOutcome",
    "add_oidc_provider",
    "audit_logon",
    "negotiate",
    "oidc_providers",
    "remove_oidc_provider",
]

CALLBACK_PATH = "/oidc/callback"


@dataclass(frozen=True)
class NegotiateOutcome:
    identity: Identity
    principal: str
    reply: str | None  # base64 mutual-authentication token for WWW-Authenticate


def audit_logon(
    instance: Instance,
    *,
    method: str,
    login: str,
    actor: str,
    reason: str | None = None,
    dn: str | None = None,
    provider: str = "",
) -> None:
    """One `logon.refused` (with `reason`) or `logon.succeeded` (with `dn`) record."""
    data = {"login": login[:256], "method": method}
    if provider:
        data["provider"] = provider
    if reason is not None:
        event, data = "logon.refused", {**data, "reason": reason[:300]}
    else:
        event, data = "logon.succeeded", {**data, "dn": dn or ""}
    with instance.db.transaction() as session:
        instance.audit.append(session, event, actor=actor, data=data)


def negotiate(instance: Instance, header: str, *, source: str, actor: str) -> NegotiateOutcome:
    """Log on with the Kerberos ticket in an `Authorization: Negotiate …` header.

    Raises AuthenticationError (audited, counted by the lockout) with a reason a person
    can act on; a header that is not Negotiate at all is refused the same way."""
    try:
        logon = instance.kerberos_logon.authenticate(header, source=source)
    except AuthenticationError as exc:
        principal = exc.principal if isinstance(exc, KerberosRefused) else ""
        audit_logon(instance, method="kerberos", login=principal, actor=actor, reason=str(exc))
        raise
    audit_logon(
        instance, method="kerberos", login=logon.principal, actor=actor, dn=logon.identity.entry.dn
    )
    reply = base64.b64encode(logon.reply).decode("ascii") if logon.reply else None
    return NegotiateOutcome(identity=logon.identity, principal=logon.principal, reply=reply)


# -- OpenID Connect ------------------------------------------------------------------------


@dataclass(frozen=True)
class OidcOutcome:
    identity: Identity
    next_page: str


class OidcLogons:
    """The OpenID Connect logons of one instance (one per server process: it caches each
    provider's discovery document and keys)."""

    def __init__(self, instance: Instance) -> None:
        self.instance = instance
        self.providers = OidcProviders(instance.db)
        self.pending = PendingLogons(instance.db)
        self._clients: dict[str, OidcClient] = {}
        self._lock = threading.Lock()

    @property
    def redirect_uri(self) -> str:
        return str(self.instance.config.get("web.base_url")).rstrip("/") + CALLBACK_PATH

    def names(self) -> list[str]:
        return [p.name for p in self.providers.list()]

    def client(self, name: str) -> OidcClient:
        provider = self.providers.get(name)
        with self._lock:
            client = self._clients.get(name)
            if client is None or client.provider != provider:
                client = OidcClient(provider)
                self._clients[name] = client
            return client

    def begin(self, name: str, *, browser: str, next_page: str) -> str:
        """The provider's authorization URL for a new logon bound to `browser`."""
        client = self.client(check_provider_name(name))
        pending = self.pending.begin(client.provider.name, browser=browser, next_page=next_page)
        return client.authorization_url(
            redirect_uri=self.redirect_uri,
            state=pending.state,
            nonce=pending.nonce,
            code_verifier=pending.code_verifier,
        )

    def finish(
        self,
        *,
        state: str,
        code: str,
        error: str,
        browser: str,
        source: str,
        actor: str,
        issuer: str = "",
    ) -> OidcOutcome:
        """The identity of a callback from the provider; AuthenticationError (audited,
        counted by the lockout) says why not."""
        limiter = self.instance.login_limiter
        keys: tuple[str, ...] = (f"oidc\x1f{source}",)
        login, provider = "", ""
        try:
            for key in keys:
                limiter.check(key)
            pending = self.pending.take(state, browser=browser)
            if pending is None:
                raise IdTokenRefused(
                    "this logon is not valid, was used already or has expired: start again"
                )
            provider = pending.provider
            client = self.client(provider)
            if issuer and issuer != client.provider.issuer:  # RFC 9207: a mixed-up answer
                raise IdTokenRefused("the answer comes from another provider (iss)")
            if error:
                raise IdTokenRefused(f"the provider did not log you on ({error[:100]})")
            if not code or len(code) > 2048:
                raise IdTokenRefused("the provider's answer holds no authorization code")
            id_token = client.exchange(
                code=code, redirect_uri=self.redirect_uri, code_verifier=pending.code_verifier
            )
            claims = client.validate(id_token, nonce=pending.nonce)
            person = person_from_claims(claims, client.provider)
            login = person.mail
            keys = (*keys, *limiter_keys(login, source))
            for key in keys[1:]:
                limiter.check(key)
            entry = self._entry(person, provider)
        except AuthenticationError as exc:
            if not str(exc).startswith("too many failed logons"):
                for key in keys:
                    limiter.failed(key)
            audit_logon(
                self.instance, method="oidc", login=login, actor=actor, reason=str(exc),
                provider=provider,
            )  # fmt: skip
            raise
        for key in keys:
            limiter.succeeded(key)
        audit_logon(
            self.instance, method="oidc", login=login, actor=actor, dn=entry.dn, provider=provider
        )
        return OidcOutcome(Identity(entry=entry, method="oidc"), pending.next_page)

    def _entry(self, person: OidcPerson, provider: str) -> DirectoryEntry:
        """The directory entry of the mail claim; with no LDAP directory, the embedded
        one's or the person the claims describe. Within approval.allowed_domains only."""
        domain = person.mail.rsplit("@", 1)[1]
        allowed = self.instance.approval_rules.allowed_domains
        if allowed and domain not in {d.lower() for d in allowed}:
            raise IdTokenRefused(f"the mail domain {domain} is not one this PKI serves")
        registry = self.instance.directories
        entry = registry.find_by_mail(person.mail)
        if entry is None and registry.settings():
            raise IdTokenRefused(f"{person.mail} has no directory entry")
        if entry is None:
            entry = DirectoryEntry(
                directory=f"oidc:{provider}",
                dn="",
                login=person.mail,
                mail=person.mail,
                display_name=person.name or None,
                given_name=person.given_name or None,
                surname=person.family_name or None,
                groups=person.groups,
            )
        if not entry.enabled:
            raise AuthenticationError("the account is disabled")
        return entry

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()


def add_oidc_provider(instance: Instance, provider: OidcProvider, *, actor: str) -> Discovery:
    """Check the settings, fetch the discovery document and the keys (so a typo fails
    now, not at the first logon), then store the provider; audited."""
    provider.check()
    client = OidcClient(provider)
    try:
        discovery = client.discovery()
        client.key_set()
    finally:
        client.close()
    OidcProviders(instance.db).add(provider)
    with instance.db.transaction() as session:
        # The secret file's path stays out: the audit log refuses anything secret-like.
        data = {k: v for k, v in provider.describe().items() if k != "client_secret_file"}
        instance.audit.append(session, "oidc.added", actor=actor, data=data)
    return discovery


def remove_oidc_provider(instance: Instance, name: str, *, actor: str) -> None:
    OidcProviders(instance.db).remove(name)
    with instance.db.transaction() as session:
        instance.audit.append(session, "oidc.removed", actor=actor, data={"name": name})


def oidc_providers(instance: Instance) -> list[OidcProvider]:
    return OidcProviders(instance.db).list()
