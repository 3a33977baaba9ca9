"""Kerberos logon rules with a stand-in ticket check (the real KDC is in
tests/integration/test_sso_kerberos.py): header parsing, principals, lockout counting."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailpki.auth.kerberos import (
    AcceptedTicket,
    KerberosAuthenticator,
    KerberosRefused,
    Principal,
    TicketRefused,
    check_service,
    parse_negotiate,
)
from mailpki.auth.limiter import LoginLimiter
from mailpki.directory.entry import DirectoryEntry
from mailpki.errors import AuthenticationError, ConfigError, UnknownRealm
from mailpki.store.db import Database

ALICE = DirectoryEntry(directory="corp", dn="uid=alice,dc=x", login="alice", mail="a@x.org")
GOOD = "Negotiate " + base64.b64encode(b"\x60good-ticket").decode()


@pytest.fixture
def limiter(tmp_path: Path) -> Iterator[LoginLimiter]:
    db = Database(f"sqlite:///{tmp_path / 'mailpki.db'}")
    db.migrate()
    yield LoginLimiter(db, max_failures=3, lockout=timedelta(minutes=15))
    db.dispose()


def accept_as(principal: str) -> object:
    def accept(token: bytes) -> AcceptedTicket:
        if token != b"\x60good-ticket":
            raise TicketRefused("the Kerberos ticket is forged or for another key")
        return AcceptedTicket(principal=principal, reply=b"mutual")

    return accept


def find(user: str, realm: str) -> DirectoryEntry | None:
    if realm != "CORP.EXAMPLE.ORG":
        raise UnknownRealm(f"the Kerberos realm {realm} is not mapped to a directory")
    if user == "alice":
        return ALICE
    if user == "dora":
        return DirectoryEntry(directory="corp", dn="uid=dora", login="dora", enabled=False)
    return None


def authenticator(limiter: LoginLimiter, principal: str) -> KerberosAuthenticator:
    return KerberosAuthenticator(accept_as(principal), find, limiter)  # type: ignore[arg-type]


def test_a_good_ticket_gives_the_directory_identity(limiter: LoginLimiter) -> None:
    logon = authenticator(limiter, "alice@CORP.EXAMPLE.ORG").authenticate(GOOD, source="10.0.0.1")
    assert logon.identity.entry == ALICE and logon.identity.method == "kerberos"
    assert logon.principal == "alice@CORP.EXAMPLE.ORG" and logon.reply == b"mutual"


@pytest.mark.parametrize(
    ("principal", "reason"),
    [
        ("dora@CORP.EXAMPLE.ORG", "the account is disabled"),
        ("nemo@CORP.EXAMPLE.ORG", "has no directory entry"),
        ("alice@ELSEWHERE.ORG", "ELSEWHERE.ORG is not mapped to a directory"),
        ("host/web1@CORP.EXAMPLE.ORG", "is not a person"),
        ("alice", "has no realm"),
    ],
)
def test_principals_without_a_usable_entry_are_refused_and_counted(
    limiter: LoginLimiter, principal: str, reason: str
) -> None:
    auth = authenticator(limiter, principal)
    for _ in range(3):
        with pytest.raises(KerberosRefused, match=reason):
            auth.authenticate(GOOD, source="10.0.0.2")
    with pytest.raises(AuthenticationError, match="too many failed logons"):
        auth.authenticate(GOOD, source="10.0.0.2")


def test_bad_tokens_lock_the_address_not_others(limiter: LoginLimiter) -> None:
    auth = authenticator(limiter, "alice@CORP.EXAMPLE.ORG")
    forged = "Negotiate " + base64.b64encode(b"\x60forged").decode()
    for _ in range(3):
        with pytest.raises(TicketRefused, match="forged"):
            auth.authenticate(forged, source="10.0.0.3")
    with pytest.raises(AuthenticationError, match="too many failed logons"):
        auth.authenticate(GOOD, source="10.0.0.3")
    assert auth.authenticate(GOOD, source="10.0.0.4").principal == "alice@CORP.EXAMPLE.ORG"


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("Negotiate", "empty or too long"),
        ("Negotiate " + "A" * 70_000, "empty or too long"),
        ("Negotiate ###", "not base64"),
        ("Negotiate " + base64.b64encode(b"NTLMSSP\x00\x01").decode(), "NTLM is not accepted"),
    ],
)
def test_malformed_negotiate_headers_are_refused(header: str, reason: str) -> None:
    with pytest.raises(TicketRefused, match=reason):
        parse_negotiate(header)


def test_other_schemes_are_not_negotiate() -> None:
    assert parse_negotiate("Basic YWxpY2U6cHc=") is None
    assert parse_negotiate("") is None
    assert parse_negotiate("negotiate " + base64.b64encode(b"x").decode()) == b"x"


@given(st.text(max_size=300))
def test_parse_negotiate_never_raises_anything_else(header: str) -> None:
    try:
        result = parse_negotiate(header)
    except TicketRefused:
        return
    assert result is None or isinstance(result, bytes)


@given(st.text(max_size=300))
def test_principal_parse_never_raises_anything_else(text: str) -> None:
    try:
        principal = Principal.parse(text)
    except TicketRefused:
        return
    assert "/" not in principal.user and "@" not in principal.user and principal.realm


@pytest.mark.parametrize("service", ["HTTP/pki.example.com", "HTTP/pki.example.com@CORP.COM"])
def test_service_principals(service: str) -> None:
    assert check_service(service) == service


@pytest.mark.parametrize("service", ["", "HTTP", "pki.example.com", "HTTP/a b", "HTTP/x@lower"])
def test_bad_service_principals(service: str) -> None:
    with pytest.raises(ConfigError, match="not a service principal"):
        check_service(service)
