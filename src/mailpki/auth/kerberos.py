"""Kerberos single sign-on through SPNEGO ("Negotiate", RFC 4559), over GSSAPI.

The browser sends `Authorization: Negotiate <base64 token>`; the token is accepted with
the service's key from a keytab (MIT krb5 through python-gssapi). Mutual
authentication, the replay cache and the ticket's client addresses are the GSSAPI
library's; delegated credentials are never asked for and, if a client sends them
anyway, never used. The principal the ticket proves (`alice@CORP.EXAMPLE.COM`) is then
mapped to a directory entry by its realm, and the account must be enabled.

Every refusal is counted by the same lockout as a wrong password: against the client
address (a forged or broken ticket names nobody), and also against the principal once
the ticket proved one.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from mailpki.auth.identity import Identity
from mailpki.auth.limiter import LoginLimiter, limiter_keys
from mailpki.directory.entry import DirectoryEntry
from mailpki.errors import AuthenticationError, ConfigError

__all__ = [
    "MAX_TOKEN",
    "AcceptedTicket",
    "KerberosAuthenticator",
    "KerberosLogon",
    "KerberosRefused",
    "NegotiateAcceptor",
    "Principal",
    "TicketRefused",
    "check_service",
    "parse_negotiate",
]

MAX_TOKEN = 64 * 1024  # base64 characters; Active Directory tickets with a PAC reach ~16k
_SERVICE = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,31}/[A-Za-z0-9.-]{1,253}(@[A-Z0-9.-]{1,253})?")


class KerberosRefused(AuthenticationError):
    """A Negotiate logon was refused; `principal` is who the ticket named, if it got that far."""

    def __init__(self, message: str, principal: str = "") -> None:
        super().__init__(message)
        self.principal = principal


class TicketRefused(KerberosRefused):
    """The Negotiate token was not a valid Kerberos ticket for this service."""


@dataclass(frozen=True)
class Principal:
    """A Kerberos client principal of a person: `user@REALM`, without an instance."""

    user: str
    realm: str

    @classmethod
    def parse(cls, text: str) -> Principal:
        user, sep, realm = text.rpartition("@")
        if not sep or not user or not realm:
            raise TicketRefused(f"the ticket's principal {text[:100]!r} has no realm")
        if "/" in user:
            # host/… or alice/admin: a service or an administrative instance, not a person
            raise TicketRefused(f"the principal {text[:100]} is not a person's")
        if any(ord(c) < 32 or c in "\\@" for c in user) or len(text) > 256:
            raise TicketRefused("the ticket's principal name is not usable")
        return cls(user=user, realm=realm)

    def __str__(self) -> str:
        return f"{self.user}@{self.realm}"


@dataclass(frozen=True)
class AcceptedTicket:
    principal: str
    reply: bytes | None  # the mutual-authentication token for the client, if any


def check_service(service: str) -> str:
    """`HTTP/pki.example.com` (optionally `@REALM`): the service principal the keytab holds."""
    service = service.strip()
    if not _SERVICE.fullmatch(service):
        raise ConfigError(
            f"{service[:100]!r} is not a service principal such as HTTP/pki.example.com"
        )
    return service


def parse_negotiate(header: str) -> bytes | None:
    """The token of an `Authorization: Negotiate <base64>` header; None if the header
    is not Negotiate at all. A Negotiate header with a malformed token is refused."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "negotiate":
        return None
    value = value.strip()
    if not value or len(value) > MAX_TOKEN:
        raise TicketRefused("the Negotiate token is empty or too long")
    try:
        token = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise TicketRefused("the Negotiate token is not base64") from None
    if token.startswith(b"NTLMSSP"):
        raise TicketRefused(
            "NTLM is not accepted, only Kerberos (is the site in the intranet zone?)"
        )
    return token


# GSSAPI minor-status texts (MIT krb5) -> a reason a person or an operator can act on.
_REASONS = (
    ("expired", "the Kerberos ticket has expired: log on to your computer again"),
    ("replay", "the Kerberos ticket was replayed"),
    ("skew", "the clocks of your computer and the server differ too much"),
    ("wrong principal", "the Kerberos ticket is for another service"),
    ("server not found", "the Kerberos ticket is for another service"),
    ("cannot find key", "the Kerberos ticket is for another service (or the keytab is old)"),
    ("no key table entry", "the Kerberos ticket is for another service (or the keytab is old)"),
    ("integrity check", "the Kerberos ticket is forged or for another key"),
    ("decrypt", "the Kerberos ticket is forged or for another key"),
)


_FOR_KEY = re.compile(r"ticket for (\S+) using keytab key for (\S+)", re.IGNORECASE)


def _reason(exc: Exception) -> str:
    mismatch = _FOR_KEY.search(str(exc))
    if mismatch and mismatch.group(1) != mismatch.group(2):
        return f"the Kerberos ticket is for another service ({mismatch.group(1)[:100]})"
    text = str(exc).lower()
    for needle, reason in _REASONS:
        if needle in text:
            return reason
    return "the Negotiate token is not a valid Kerberos ticket for this service"


class NegotiateAcceptor:
    """Accepts SPNEGO/Kerberos tokens with the service key of `keytab` (one round trip:
    Kerberos needs no continuation, so a context that is not complete is refused)."""

    def __init__(self, keytab: Path, service: str) -> None:
        import gssapi
        import gssapi.raw.misc

        self.keytab = keytab
        self.service = check_service(service)
        if not keytab.is_file():
            raise ConfigError(f"auth.kerberos.keytab {keytab} does not exist")
        try:
            name = gssapi.Name(self.service, gssapi.NameType.kerberos_principal)
            self._creds = gssapi.Credentials(
                name=name, usage="accept", store={"keytab": str(keytab)}
            )
            self._creds.inquire()  # a keytab without the service's key fails here, not later
        except gssapi.raw.misc.GSSError as exc:
            raise ConfigError(
                f"cannot use {self.service} from the keytab {keytab}: {' '.join(str(exc).split())[:300]}"
            ) from None

    def accept(self, token: bytes) -> AcceptedTicket:
        import gssapi
        import gssapi.raw.misc

        context = gssapi.SecurityContext(creds=self._creds, usage="accept")
        try:
            reply = context.step(token)
            complete = context.complete  # SPNEGO reports the inner mechanism's error here
            principal = str(context.initiator_name) if complete else ""
        except gssapi.raw.misc.GSSError as exc:
            raise TicketRefused(_reason(exc)) from None
        if not complete:
            raise TicketRefused("the Negotiate exchange needs more than one step (not Kerberos)")
        # delegated_creds, if a client sent them, are dropped with the context: never used.
        return AcceptedTicket(principal=principal, reply=reply)


@dataclass(frozen=True)
class KerberosLogon:
    identity: Identity
    principal: str
    reply: bytes | None


class KerberosAuthenticator:
    """Negotiate logon: the ticket, then the principal's directory entry.

    `accept` is the ticket check (NegotiateAcceptor.accept); `find` the realm-routed
    directory lookup, which raises UnknownRealm for a realm mapped to no directory. A
    DirectoryError propagates uncounted: an outage is not a forged ticket."""

    def __init__(
        self,
        accept: Callable[[bytes], AcceptedTicket],
        find: Callable[[str, str], DirectoryEntry | None],
        limiter: LoginLimiter,
    ) -> None:
        self._accept = accept
        self._find = find
        self._limiter = limiter

    def _refuse(
        self, keys: tuple[str, ...], exc: AuthenticationError, principal: str = ""
    ) -> NoReturn:
        for key in keys:
            self._limiter.failed(key)
        if isinstance(exc, KerberosRefused) and exc.principal == principal:
            raise exc
        raise KerberosRefused(str(exc), principal) from None

    def authenticate(self, header: str, *, source: str) -> KerberosLogon:
        """The logon an `Authorization` header's Negotiate token proves (`source`: the
        client address, a lockout key)."""
        source_keys = (f"negotiate\x1f{source}",)
        for key in source_keys:
            self._limiter.check(key)
        try:
            token = parse_negotiate(header)
            if token is None:
                raise TicketRefused("the request carries no Negotiate token")
            ticket = self._accept(token)
            principal = Principal.parse(ticket.principal)
        except AuthenticationError as exc:
            self._refuse(source_keys, exc)
        name = str(principal)
        keys = (*source_keys, *limiter_keys(name, source))
        for key in keys[1:]:
            try:
                self._limiter.check(key)
            except AuthenticationError as exc:
                raise KerberosRefused(str(exc), name) from None
        try:
            entry = self._find(principal.user, principal.realm)
        except AuthenticationError as exc:  # UnknownRealm
            self._refuse(keys, exc, name)
        if entry is None:
            self._refuse(keys, AuthenticationError(f"{name} has no directory entry"), name)
        if not entry.enabled:
            self._refuse(keys, AuthenticationError("the account is disabled"), name)
        for key in keys:
            self._limiter.succeeded(key)
        return KerberosLogon(
            identity=Identity(entry=entry, method="kerberos"),
            principal=str(principal),
            reply=ticket.reply,
        )
