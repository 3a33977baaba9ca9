"""LdapDirectory against real slapd servers: an OpenLDAP directory with 10,000 people
and a slapd imitating Active Directory (tests/fixtures/slapd.py)."""

from __future__ import annotations

import datetime
import random
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ldap3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from cryptography.x509.oid import NameOID
from ldap3.utils.dn import parse_dn

from mailpki.directory.entry import DirectoryEntry
from mailpki.directory.ldap import LdapDirectory
from mailpki.directory.port import Directory
from mailpki.errors import ConfigError, DirectoryError, InputError
from tests.fixtures.slapd import SlapdServer, clear_certificates

pytestmark = pytest.mark.integration

# --- helpers ------------------------------------------------------------------------


def _directory(server: SlapdServer, **overrides: Any) -> LdapDirectory:
    options: dict[str, Any] = {
        "name": f"test-{server.flavour}",
        "url": server.url,
        "base_dn": server.base_dn,
        "bind_dn": server.bind_dn,
        "bind_password": server.bind_password,
        "flavour": server.flavour,
        "domains": server.domains,
        "netbios_domain": server.netbios_domain,
        "timeout": 3.0,
    }
    options.update(overrides)
    return LdapDirectory(**options)


def _dn(dn: str) -> list[tuple[str, str]]:
    """A DN in comparable form (types and values case-folded, escapes as parsed)."""
    return [(t.lower(), v.lower()) for t, v, _ in parse_dn(dn, escape=True)]


def _admin(server: SlapdServer) -> ldap3.Connection:
    return ldap3.Connection(
        ldap3.Server(server.host, port=server.port, get_info=ldap3.NONE),
        server.admin_dn,
        server.admin_password,
        auto_bind=True,
    )


class _CA:
    """A throwaway issuing CA for P-256 leaf certificates (fast to make)."""

    def __init__(self, name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.leaf_key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    def leaf(self, mail: str) -> bytes:
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.EMAIL_ADDRESS, mail)]))
            .issuer_name(self.name)
            .public_key(self.leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(mail)]), critical=False)
            .sign(self.key, hashes.SHA256())
            .public_bytes(Encoding.DER)
        )


@pytest.fixture(scope="module")
def ca() -> _CA:
    return _CA("mailpki test issuing CA")


@pytest.fixture(scope="module")
def other_ca() -> _CA:
    return _CA("Someone else's CA")


@pytest.fixture(scope="module")
def ol(openldap_server: SlapdServer) -> Iterator[LdapDirectory]:
    directory = _directory(openldap_server)
    yield directory
    directory.close()


@pytest.fixture(scope="module")
def ad(ad_server: SlapdServer) -> Iterator[LdapDirectory]:
    directory = _directory(ad_server)
    yield directory
    directory.close()


@dataclass(frozen=True)
class Target:
    server: SlapdServer
    directory: LdapDirectory


@pytest.fixture(params=["openldap", "ad"])
def target(request: pytest.FixtureRequest) -> Target:
    short = {"openldap": "ol", "ad": "ad"}[request.param]
    return Target(
        request.getfixturevalue(f"{request.param}_server"),
        request.getfixturevalue(short),
    )


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)  # the kernel completes handshakes; nobody ever reads
        yield int(sock.getsockname()[1])


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- lookups ------------------------------------------------------------------------


def test_implements_the_directory_port(ol: LdapDirectory) -> None:
    port: Directory = ol  # mypy checks the protocol; this checks the attributes exist
    assert port.name == "test-openldap"
    assert port.domains == ("example.com",)


def test_find_by_login_uid(target: Target) -> None:
    alice = target.server.users["alice"]
    entry = target.directory.find_by_login("alice")
    assert entry is not None
    assert entry.login == "alice"
    assert _dn(entry.dn) == _dn(alice.dn)
    assert entry.mail == alice.mail
    assert entry.directory == target.directory.name
    assert target.directory.find_by_login("  alice ") == entry
    assert target.directory.find_by_login("no-such-person") is None
    assert target.directory.find_by_login("") is None
    bulk = target.server.bulk_login(7)
    found = target.directory.find_by_login(bulk)
    assert found is not None and found.login == bulk


def test_openldap_login_as_mail(ol: LdapDirectory) -> None:
    entry = ol.find_by_login("alice@example.com")
    assert entry is not None and entry.login == "alice"
    assert ol.find_by_login("nobody@example.com") is None
    # OpenLDAP has no NETBIOS domain: DOMAIN\user is nobody here.
    assert ol.find_by_login("EXAMPLE\\alice") is None


def test_ad_login_forms(ad: LdapDirectory, ad_server: SlapdServer) -> None:
    alice = ad_server.users["alice"]
    by_sam = ad.find_by_login("alice")
    assert by_sam is not None and _dn(by_sam.dn) == _dn(alice.dn)
    assert ad.find_by_login("alice@corp.example.com") == by_sam  # userPrincipalName
    assert ad.find_by_login("CORP\\alice") == by_sam
    assert ad.find_by_login("corp\\ALICE") == by_sam  # NETBIOS and sAMAccountName: no case
    assert ad.find_by_login("OTHER\\alice") is None
    assert ad.find_by_login("\\alice") is None
    assert ad.find_by_login("CORP\\") is None
    assert ad.find_by_login("CORP\\alice\\x") is None
    # AD logins are not mail addresses: the mail does not log in.
    assert ad.find_by_login(alice.mail or "") is None


def test_find_by_mail(target: Target) -> None:
    bob = target.server.users["bob"]
    assert bob.mail is not None
    entry = target.directory.find_by_mail(bob.mail.upper())
    assert entry is not None and entry.login == "bob" and entry.mail == bob.mail
    assert target.directory.find_by_mail("nobody@" + target.server.domains[0]) is None
    assert target.directory.find_by_mail("not-a-mail") is None
    assert target.directory.find_by_mail("") is None


def test_ambiguous_login_is_an_error(ol: LdapDirectory, openldap_server: SlapdServer) -> None:
    admin = _admin(openldap_server)
    twins = [f"cn=Twin {n},{openldap_server.people_dn}" for n in (1, 2)]
    try:
        for n, dn in enumerate(twins, 1):
            admin.add(
                dn,
                ["inetOrgPerson"],
                {"cn": f"Twin {n}", "sn": "Twin", "uid": "twin", "mail": f"twin{n}@example.com"},
            )
            assert admin.result["result"] == 0, admin.result
        with pytest.raises(DirectoryError, match="ambiguous"):
            ol.find_by_login("twin")
    finally:
        for dn in twins:
            admin.delete(dn)
        admin.unbind()


# --- mapping ------------------------------------------------------------------------


def test_openldap_mapping(ol: LdapDirectory, openldap_server: SlapdServer) -> None:
    alice = ol.find_by_login("alice")
    assert alice == DirectoryEntry(
        directory="test-openldap",
        dn=openldap_server.users["alice"].dn,
        login="alice",
        mail="alice@example.com",
        display_name="Alice Liddell",
        given_name="Alice",
        surname="Liddell",
        organisation="Example Corp",
        site="Berlin",
        enabled=True,
        groups=openldap_server.users["alice"].groups,
        employee_id="4711",
    )
    carol = ol.find_by_login("carol")
    assert carol is not None and carol.enabled is False  # pwdAccountLockedTime present
    dave = ol.find_by_login("dave")
    assert dave is not None and dave.display_name == "Dave (Ops) O'Brien"


def test_ad_mapping(ad: LdapDirectory, ad_server: SlapdServer) -> None:
    alice = ad.find_by_login("alice")
    assert alice is not None
    assert alice.organisation == "Corp Example Ltd"  # company
    assert alice.site == "Security"  # department
    assert alice.employee_id == "A-1001"
    assert [_dn(g) for g in alice.groups] == [_dn(g) for g in ad_server.users["alice"].groups]
    assert alice.enabled is True
    dora = ad.find_by_login("dora")
    assert dora is not None and dora.enabled is False  # userAccountControl 514
    nemo = ad.find_by_login("nemo")
    assert nemo is not None and nemo.mail is None
    smith = ad.find_by_login("jsmith")
    assert smith is not None and smith.display_name == "Smith, John"
    assert _dn(smith.dn) == _dn(ad_server.users["comma"].dn)


# --- search -------------------------------------------------------------------------


def test_search_prefix(target: Target) -> None:
    d = target.directory
    found = d.search("Alice")
    assert "alice" in [e.login for e in found]
    assert [e.login for e in d.search("liddel")] == ["alice"]  # surname, any case
    mail = target.server.users["bob"].mail or ""
    assert [e.login for e in d.search(mail[:5])] == ["bob"]
    assert d.search("zzz-nobody") == []


def test_search_is_paged_and_limited(target: Target) -> None:
    d, server = target.directory, target.server
    prefix = server.bulk_login_prefix
    for limit in (7, 250, 1000 if server.bulk_users > 1000 else 999):
        found = d.search(prefix, limit=limit)
        assert len(found) == limit
        names = [(e.display_name or e.login).casefold() for e in found]
        assert names == sorted(names)
        assert len({e.dn for e in found}) == limit
    assert len(d.search(prefix)) == 50  # the default limit


def test_search_refuses_bad_input(ol: LdapDirectory) -> None:
    for text in ("", "   ", "x" * 101):
        with pytest.raises(InputError):
            ol.search(text)
    for limit in (0, -1, 1001):
        with pytest.raises(InputError):
            ol.search("alice", limit=limit)
    assert ol.search("x" * 100) == []


def test_search_matches_metacharacters_literally(ol: LdapDirectory, ad: LdapDirectory) -> None:
    assert [e.login for e in ol.search("Dave (")] == ["dave"]
    assert [e.login for e in ol.search("O'Brien")] == ["dave"]
    assert [e.login for e in ad.search("Smith, J")] == ["jsmith"]


INJECTIONS = [
    "*",
    ")(uid=*",
    "\x00",
    "*)(|(objectClass=*",
    "alice)(|(uid=*",
    "(",
    "\\",
    "alice*",
    "*alice",
    "a*",
    "\\2a",
    "alice\\",
    "alice)",
    "CORP\\*",
    "CORP\\)(sAMAccountName=*",
    "*@example.com",
    "alice\x00",
]


def _literal(entry: DirectoryEntry, text: str) -> bool:
    fields = (entry.login, entry.mail, entry.display_name, entry.given_name, entry.surname)
    return any(f is not None and f.casefold().startswith(text.casefold()) for f in fields)


@pytest.mark.parametrize("payload", INJECTIONS, ids=repr)
def test_ldap_injection(target: Target, payload: str) -> None:
    d = target.directory
    assert d.find_by_login(payload) is None
    assert d.find_by_mail(payload) is None
    try:
        found = d.search(payload)
    except InputError:
        return
    assert all(_literal(e, payload.strip()) for e in found), found


# --- passwords ----------------------------------------------------------------------


def test_verify_password(target: Target) -> None:
    d, users = target.directory, target.server.users
    alice = d.find_by_login("alice")
    assert alice is not None and users["alice"].password is not None
    assert d.verify_password(alice, users["alice"].password) is True
    assert d.verify_password(alice, users["alice"].password + "x") is False
    assert d.verify_password(alice, "") is False  # never an unauthenticated bind
    assert d.verify_password(alice, "x" * 1025) is False
    assert d.verify_password(alice, users["bob"].password or "x") is False
    ghost = DirectoryEntry(
        directory=d.name, dn=f"cn=Nobody Here,{target.server.people_dn}", login="ghost"
    )
    assert d.verify_password(ghost, "whatever") is False
    garbage = DirectoryEntry(directory=d.name, dn="not a dn", login="x")
    assert d.verify_password(garbage, "whatever") is False


def test_locked_openldap_account_cannot_bind(
    ol: LdapDirectory, openldap_server: SlapdServer
) -> None:
    carol = ol.find_by_login("carol")
    assert carol is not None
    assert ol.verify_password(carol, openldap_server.users["carol"].password or "") is False


# --- TLS ----------------------------------------------------------------------------


def _other_ca_file(tmp_path: Path) -> Path:
    path = tmp_path / "other-ca.pem"
    path.write_bytes(_CA("not the directory's CA").cert.public_bytes(serialization.Encoding.PEM))
    return path


def test_ldaps_and_starttls(target: Target) -> None:
    server = target.server
    for options in (
        {"url": server.ldaps_url, "ca_file": server.ca_file},
        {"url": server.url, "starttls": True, "ca_file": server.ca_file},
    ):
        with _directory(server, **options) as d:
            alice = d.find_by_login("alice")
            assert alice is not None
            assert d.verify_password(alice, server.users["alice"].password or "") is True
            assert len(d.search(server.bulk_login_prefix, limit=10)) == 10


def test_tls_with_the_wrong_ca_fails(openldap_server: SlapdServer, tmp_path: Path) -> None:
    wrong = _other_ca_file(tmp_path)
    for options in (
        {"url": openldap_server.ldaps_url, "ca_file": wrong},
        {"url": openldap_server.url, "starttls": True, "ca_file": wrong},
        {"url": openldap_server.ldaps_url},  # system CAs do not know the test CA
    ):
        with _directory(openldap_server, **options) as d:
            with pytest.raises(DirectoryError) as info:
                d.find_by_login("alice")
            assert str(options["url"]) in str(info.value)
            alice = DirectoryEntry(
                directory=d.name, dn=openldap_server.users["alice"].dn, login="alice"
            )
            with pytest.raises(DirectoryError):
                d.verify_password(alice, openldap_server.users["alice"].password or "")


def test_tls_configuration_errors(openldap_server: SlapdServer, tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        _directory(openldap_server, ca_file=tmp_path / "missing.pem")
    with pytest.raises(ConfigError):
        _directory(openldap_server, url=openldap_server.ldaps_url, starttls=True)
    with pytest.raises(ConfigError):
        _directory(openldap_server, url="http://127.0.0.1")


# --- certificates -------------------------------------------------------------------


def _smime_values(server: SlapdServer, dn: str) -> list[bytes]:
    admin = _admin(server)
    try:
        admin.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["userSMIMECertificate"])
        raw = admin.response[0]["raw_attributes"]
        return list(raw.get("userSMIMECertificate") or [])
    finally:
        admin.unbind()


@pytest.mark.usefixtures("reset_certificates")
def test_publish_unpublish(target: Target, ca: _CA) -> None:
    d, server = target.directory, target.server
    for key in ("alice", "comma") if server.flavour == "ad" else ("alice",):
        dn = server.users[key].dn
        first, second = ca.leaf("a@example.com"), ca.leaf("b@example.com")
        assert d.certificates(dn) == []
        assert d.publish(dn, first) is True
        assert d.publish(dn, first) is True  # idempotent
        assert d.certificates(dn) == [first]  # byte-identical
        assert d.publish(dn, second) is True
        assert sorted(d.certificates(dn)) == sorted([first, second])
        smimes = _smime_values(server, dn)
        assert len(smimes) == 2
        inside = [c for v in smimes for c in pkcs7.load_der_pkcs7_certificates(v)]
        assert sorted(c.public_bytes(Encoding.DER) for c in inside) == sorted([first, second])

        assert d.unpublish(dn, first) is True
        assert d.unpublish(dn, first) is True  # idempotent
        assert d.certificates(dn) == [second]
        remaining = _smime_values(server, dn)
        assert [
            pkcs7.load_der_pkcs7_certificates(v)[0].public_bytes(Encoding.DER) for v in remaining
        ] == [second]
        assert d.unpublish(dn, second) is True
        assert d.certificates(dn) == [] and _smime_values(server, dn) == []


@pytest.mark.usefixtures("reset_certificates")
def test_smime_value_is_pkcs7_for_openssl(
    ol: LdapDirectory, openldap_server: SlapdServer, ca: _CA
) -> None:
    dn = openldap_server.users["bob"].dn
    der = ca.leaf("bob@example.com")
    assert ol.publish(dn, der) is True
    [blob] = _smime_values(openldap_server, dn)
    out = subprocess.run(
        ["openssl", "pkcs7", "-inform", "DER", "-print_certs"],
        input=blob,
        capture_output=True,
        check=True,
    ).stdout.decode()
    pem = x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM).decode()
    assert "emailAddress = bob@example.com" in out or "emailAddress=bob@example.com" in out
    assert pem.strip() in out


@pytest.mark.usefixtures("reset_certificates")
def test_unpublish_leaves_other_values_alone(target: Target, ca: _CA, other_ca: _CA) -> None:
    d, server = target.directory, target.server
    dn = server.users["bob"].dn
    ours, theirs = ca.leaf("bob@example.com"), other_ca.leaf("bob@example.com")
    theirs_p7 = pkcs7.serialize_certificates([x509.load_der_x509_certificate(theirs)], Encoding.DER)
    junk = b"\x04\x03not pkcs7"
    admin = _admin(server)
    try:
        admin.modify(
            dn,
            {
                "userCertificate;binary": [(ldap3.MODIFY_ADD, [theirs])],
                "userSMIMECertificate": [(ldap3.MODIFY_REPLACE, [theirs_p7, junk])],
            },
        )
        assert admin.result["result"] == 0, admin.result
    finally:
        admin.unbind()
    assert d.publish(dn, ours) is True
    assert sorted(d.certificates(dn)) == sorted([ours, theirs])
    assert len(_smime_values(server, dn)) == 3
    assert d.unpublish(dn, ours) is True
    assert d.certificates(dn) == [theirs]
    assert sorted(_smime_values(server, dn)) == sorted([theirs_p7, junk])


def test_publish_to_missing_entry_and_bad_input(target: Target, ca: _CA) -> None:
    d, server = target.directory, target.server
    missing = f"cn=Nobody Here,{server.people_dn}"
    der = ca.leaf("x@example.com")
    assert d.publish(missing, der) is False
    assert d.unpublish(missing, der) is False
    assert d.certificates(missing) == []
    with pytest.raises(InputError):
        d.publish(server.users["alice"].dn, b"not a certificate")
    with pytest.raises(InputError):
        d.publish("not a dn", der)
    with pytest.raises(InputError):
        d.certificates("")


def test_publish_many(ol: LdapDirectory, openldap_server: SlapdServer, ca: _CA) -> None:
    dns = [f"uid={openldap_server.bulk_login(i)},{openldap_server.people_dn}" for i in range(500)]
    items = [(dn, ca.leaf(f"{i}@example.com")) for i, dn in enumerate(dns)]
    try:
        started = time.perf_counter()
        assert ol.publish_many(items) == 500
        elapsed = time.perf_counter() - started
        print(f"publish_many: 500 certificates in {elapsed:.2f} s ({500 / elapsed:.0f}/s)")
        assert ol.publish_many(items[:50]) == 50  # idempotent
        for dn, der in random.sample(items, 20):
            assert ol.certificates(dn) == [der]
        missing = f"uid=nobody,{openldap_server.people_dn}"
        assert ol.publish_many([(missing, items[0][1])]) == 0
        with pytest.raises(InputError):
            ol.publish_many([(dns[0], items[0][1]), (dns[1], b"junk")])
    finally:
        clear_certificates(openldap_server, dns)


# --- failures -----------------------------------------------------------------------


def test_nothing_listening_fails_fast(openldap_server: SlapdServer) -> None:
    port = _closed_port()
    d = _directory(openldap_server, url=f"ldap://127.0.0.1:{port}", timeout=2.0)
    started = time.perf_counter()
    with pytest.raises(DirectoryError) as info:
        d.find_by_login("alice")
    # Far below the 2 s timeout on an idle machine; the bound only catches a hang.
    assert time.perf_counter() - started < 6.0
    message = str(info.value)
    assert "test-openldap" in message and f"127.0.0.1:{port}" in message
    assert "\n" not in message and openldap_server.bind_password not in message


@pytest.mark.parametrize("scheme", ["ldap", "ldaps"])
def test_silent_server_times_out(
    openldap_server: SlapdServer, silent_port: int, scheme: str
) -> None:
    d = _directory(
        openldap_server,
        url=f"{scheme}://127.0.0.1:{silent_port}",
        ca_file=openldap_server.ca_file,
        timeout=2.0,
    )
    started = time.perf_counter()
    with pytest.raises(DirectoryError):
        d.search("alice")
    elapsed = time.perf_counter() - started
    assert 1.5 < elapsed < 6.0  # waited for the timeout, then gave up (no hang)


def test_service_account_refused(openldap_server: SlapdServer) -> None:
    secret = "wrong-Secret-123"
    d = _directory(openldap_server, bind_password=secret)
    with pytest.raises(DirectoryError, match="service account") as info:
        d.find_by_login("alice")
    assert secret not in str(info.value)
    assert secret not in repr(d) and openldap_server.bind_password not in repr(
        _directory(openldap_server)
    )


def test_outage_and_reconnect(openldap_server: SlapdServer) -> None:
    d = _directory(openldap_server, timeout=2.0)
    try:
        assert d.find_by_login("alice") is not None
        pid = openldap_server.pid
        # A restart between two calls is invisible: the broken connection is re-opened.
        openldap_server.stop()
        openldap_server.start()
        assert openldap_server.pid != pid
        assert d.find_by_login("alice") is not None

        openldap_server.stop()
        started = time.perf_counter()
        with pytest.raises(DirectoryError):
            d.find_by_login("alice")
        with pytest.raises(DirectoryError):
            d.search("alice")
        alice = DirectoryEntry(directory=d.name, dn=openldap_server.users["alice"].dn, login="a")
        with pytest.raises(DirectoryError):
            d.verify_password(alice, "whatever")
        assert time.perf_counter() - started < 10.0  # three quick failures, no hang
        openldap_server.start()
        assert d.find_by_login("alice") is not None  # the same object works again
    finally:
        if not openldap_server.running:
            openldap_server.start()
        d.close()


def test_concurrent_use_of_one_directory(ol: LdapDirectory, openldap_server: SlapdServer) -> None:
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(40):
                login = openldap_server.bulk_login(rng.randrange(openldap_server.bulk_users))
                entry = ol.find_by_login(login)
                assert entry is not None and entry.login == login
                if rng.random() < 0.2:
                    assert len(ol.search(login[:-1], limit=20)) >= 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
