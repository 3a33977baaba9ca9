"""The directory through the CLI, against real slapd servers (tests/fixtures/slapd.py):
`directory add/list/search/show/authenticate/sync/import`, enrollment of directory
users, publication checked with the real `ldapsearch` and `openssl`, the approval
queue, a directory outage, HR PINs and the embedded directory."""

from __future__ import annotations

import base64
import datetime
import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import ldap3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from mailpki.errors import AuthenticationError
from mailpki.instance.instance import Instance
from mailpki.store.models import AuditRecord, DirectoryConfig
from tests.fixtures.ci_policy import in_ci
from tests.fixtures.slapd import SlapdServer, clear_certificates
from tests.integration.cli_helpers import Result, mailpki

pytestmark = pytest.mark.integration

OL, AD = "corp-ldap", "corp-ad"
CERT_ATTR, SMIME_ATTR = "userCertificate;binary", "userSMIMECertificate"
INJECTIONS = ["*", ")(uid=*", "*)(|(objectClass=*", "alice*", "*alice", "\\2a"]


# --- helpers ------------------------------------------------------------------------


def ok(result: Result) -> Result:
    assert result.code == 0, f"exit {result.code}\nstdout: {result.out}\nstderr: {result.err}"
    return result


def init_home(target: Path) -> Path:
    ok(
        mailpki(
            "init", "--home", target, "--org", "Example Corp", "--domain", "example.com",
            "--ca-key-type", "p256", "--org-id", "NTRGB-12345678",
        )
    )  # fmt: skip
    return target


def domains(server: SlapdServer) -> list[str]:
    return [arg for d in server.domains for arg in ("--domain", d)]


def add_openldap(home: Path, server: SlapdServer, *extra: str | Path) -> Result:
    """OpenLDAP over ldaps:// with the directory's CA."""
    return mailpki(
        "directory", "add", OL, "--home", home, "--url", server.ldaps_url,
        "--base-dn", server.base_dn, "--bind-dn", server.bind_dn,
        "--bind-password-file", server.bind_password_file, "--flavour", "openldap",
        *domains(server), "--ca-file", server.ca_file, *extra,
    )  # fmt: skip


def add_ad(home: Path, server: SlapdServer) -> Result:
    """The AD imitation over StartTLS on ldap://."""
    return mailpki(
        "directory", "add", AD, "--home", home, "--url", server.url, "--starttls",
        "--base-dn", server.base_dn, "--bind-dn", server.bind_dn,
        "--bind-password-file", server.bind_password_file, "--flavour", "ad",
        *domains(server), "--ca-file", server.ca_file,
        "--netbios-domain", server.netbios_domain,
    )  # fmt: skip


def show(home: Path, login: str) -> dict[str, object]:
    return json.loads(ok(mailpki("directory", "show", login, "--json", "--home", home)).out)


def password_file(folder: Path, password: str, name: str = "pw") -> Path:
    path = folder / name
    path.write_text(password + "\n")
    return path


def enroll_user(home: Path, login: str, out: Path) -> Result:
    return mailpki("enroll", "--home", home, "--user", login, "--out", out, "--key-type", "p256")


def serial_of(result: Result) -> str:
    found = re.search(r"certificate ([0-9A-F]+)", result.out)
    assert found, result.out
    return found.group(1)


def requests(home: Path) -> list[dict[str, object]]:
    return json.loads(ok(mailpki("requests", "list", "--json", "--home", home)).out)


def audit_events(home: Path) -> list[tuple[str, dict[str, object]]]:
    instance = Instance.open(home)
    try:
        with instance.db.session() as session:
            rows = session.execute(
                select(AuditRecord.event, AuditRecord.data).order_by(AuditRecord.seq)
            ).all()
    finally:
        instance.close()
    return [(event, json.loads(data)) for event, data in rows]


@pytest.fixture(scope="session")
def ldap_utils() -> None:
    if shutil.which("ldapsearch") is None:
        reason = "ldapsearch not found (install ldap-utils)"
        if in_ci():
            pytest.fail(f"{reason} (CI=true: the test command must install it)", pytrace=False)
        pytest.skip(reason)


def ldapsearch(server: SlapdServer, dn: str, folder: Path) -> dict[str, list[bytes]]:
    """The certificate attributes of `dn` as the real ldapsearch reads them (over ldaps,
    bound as the service account): {attribute: [DER value, ...]}."""
    pw = folder / "ldapsearch.pw"  # -y takes the whole file: no newline
    pw.write_text(server.bind_password)
    pw.chmod(0o600)
    proc = subprocess.run(
        [
            "ldapsearch", "-x", "-H", server.ldaps_url, "-D", server.bind_dn, "-y", str(pw),
            "-b", dn, "-s", "base", "-LLL", "-o", "ldif-wrap=no", CERT_ATTR, SMIME_ATTR,
        ],
        env={**os.environ, "LDAPTLS_CACERT": str(server.ca_file), "LDAPTLS_REQCERT": "demand"},
        capture_output=True,
        text=True,
        timeout=30,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    values: dict[str, list[bytes]] = {CERT_ATTR: [], SMIME_ATTR: []}
    for line in proc.stdout.splitlines():
        name, sep, value = line.partition(":: ")
        if sep and name in values:
            values[name].append(base64.b64decode(value))
    return values


def openssl_der(*args: str, data: bytes) -> str:
    proc = subprocess.run(["openssl", *args], input=data, capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout.decode()


def x509_text(der: bytes) -> str:
    return openssl_der(
        "x509", "-inform", "DER", "-noout", "-subject", "-serial", "-issuer",
        "-ext", "subjectAltName", "-nameopt", "RFC2253", data=der,
    )  # fmt: skip


def serials_in(values: dict[str, list[bytes]]) -> tuple[set[str], set[str]]:
    """Serials (hex, as openssl prints them) in userCertificate;binary and in the
    PKCS#7 bundles of userSMIMECertificate, each read by openssl."""
    certs = {
        re.search(r"serial=([0-9A-F]+)", x509_text(der)).group(1)  # type: ignore[union-attr]
        for der in values[CERT_ATTR]
    }
    bundled: set[str] = set()
    for blob in values[SMIME_ATTR]:
        pems = openssl_der("pkcs7", "-inform", "DER", "-print_certs", data=blob)
        for pem in re.findall(
            r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", pems, re.S
        ):
            der = x509.load_pem_x509_certificate(pem.encode()).public_bytes(Encoding.DER)
            bundled.add(re.search(r"serial=([0-9A-F]+)", x509_text(der)).group(1))  # type: ignore[union-attr]
    return certs, bundled


def strip0(serial: str) -> str:
    return serial.lstrip("0").upper()


def foreign_certificate(mail: str) -> x509.Certificate:
    """A certificate of someone else's CA for `mail`."""
    key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Someone Else's CA")])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.EMAIL_ADDRESS, mail)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(mail)]), critical=False)
        .sign(key, hashes.SHA256())
    )


def put_certificate(server: SlapdServer, dn: str, cert: x509.Certificate) -> None:
    conn = ldap3.Connection(
        ldap3.Server(server.host, port=server.port, get_info=ldap3.NONE),
        server.admin_dn,
        server.admin_password,
        auto_bind=True,
    )
    try:
        conn.modify(
            dn,
            {
                CERT_ATTR: [(ldap3.MODIFY_ADD, [cert.public_bytes(Encoding.DER)])],
                SMIME_ATTR: [
                    (ldap3.MODIFY_ADD, [pkcs7.serialize_certificates([cert], Encoding.DER)])
                ],
            },
        )
        assert conn.result["result"] == 0, conn.result
    finally:
        conn.unbind()


@pytest.fixture(scope="module")
def routed_home(
    tmp_path_factory: pytest.TempPathFactory,
    openldap_server: SlapdServer,
    ad_server: SlapdServer,
) -> Path:
    """One instance with both directories, for the tests that only read."""
    home = init_home(tmp_path_factory.mktemp("routed") / "corp")
    ok(add_openldap(home, openldap_server))
    ok(add_ad(home, ad_server))
    return home


# --- adding directories -------------------------------------------------------------


def test_add_both_flavours_and_route_by_domain(
    sqlite_home: Path, openldap_server: SlapdServer, ad_server: SlapdServer
) -> None:
    home = sqlite_home
    assert "no LDAP directory" in ok(mailpki("directory", "list", "--home", home)).out
    added = ok(add_openldap(home, openldap_server))
    assert f"directory {OL} added (openldap, {openldap_server.ldaps_url}" in added.out
    ok(add_ad(home, ad_server))

    listed = {d["name"]: d for d in json.loads(ok(mailpki("directory", "list", "--json", "--home", home)).out)}  # fmt: skip
    assert list(listed) == [OL, AD]
    assert listed[OL]["flavour"] == "openldap" and listed[OL]["url"] == openldap_server.ldaps_url
    assert listed[OL]["starttls"] is False
    assert listed[OL]["ca_file"] == str(openldap_server.ca_file.resolve())
    assert listed[OL]["domains"] == list(openldap_server.domains)
    assert listed[AD]["flavour"] == "ad" and listed[AD]["url"] == ad_server.url
    assert listed[AD]["starttls"] is True and listed[AD]["netbios_domain"] == "CORP"
    assert listed[AD]["domains"] == list(ad_server.domains)
    assert "password" not in json.dumps(listed).replace("bind_password_file", "")

    # A mail (or user@domain) goes to the directory of its domain.
    for login, directory in (
        (f"bob@{openldap_server.domains[0]}", OL),
        (f"bob@{ad_server.domains[0]}", AD),  # AD: the userPrincipalName
    ):
        entry = show(home, login)
        assert entry["directory"] == directory and entry["login"] == "bob"
    assert mailpki("directory", "show", "bob@elsewhere.org", "--home", home).code == 3

    # A domain is routed to one directory only; a name is used once.
    clash = mailpki(
        "directory", "add", "second", "--home", home, "--url", openldap_server.ldaps_url,
        "--base-dn", openldap_server.base_dn, "--bind-dn", openldap_server.bind_dn,
        "--bind-password-file", openldap_server.bind_password_file, "--flavour", "openldap",
        *domains(openldap_server), "--ca-file", openldap_server.ca_file,
    )  # fmt: skip
    assert clash.code == 2 and "already routed elsewhere" in clash.err
    again = add_openldap(home, openldap_server)
    assert again.code == 2 and "exists" in again.err
    events = [event for event, _ in audit_events(home)]
    assert events.count("directory.added") == 2

    ok(mailpki("directory", "remove", AD, "--home", home))
    assert [d["name"] for d in json.loads(ok(mailpki("directory", "list", "--json", "--home", home)).out)] == [OL]  # fmt: skip


def test_add_refusals_store_nothing(
    sqlite_home: Path, openldap_server: SlapdServer, tmp_path: Path
) -> None:
    home = sqlite_home
    base = [
        "--base-dn", openldap_server.base_dn, "--bind-dn", openldap_server.bind_dn,
        "--flavour", "openldap", "--domain", "example.com", "--home", home,
    ]  # fmt: skip
    service = ["--bind-password-file", openldap_server.bind_password_file]

    # Plain ldap:// is refused before anything is sent: a listener sees no connection.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        for url in (f"ldap://127.0.0.1:{port}", openldap_server.url):
            plain = mailpki("directory", "add", "plain", "--url", url, *base, *service)
            assert plain.code == 2, plain
            assert "refusing to send passwords over plain ldap://" in plain.err
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected, so no bind with the password

    wrong = password_file(tmp_path, "not-the-Service-password")
    refused = mailpki(
        "directory", "add", "wrongpw", "--url", openldap_server.ldaps_url,
        "--ca-file", openldap_server.ca_file, "--bind-password-file", wrong, *base,
    )  # fmt: skip
    assert refused.code == 1, refused
    assert "not added" in refused.err and "service account refused" in refused.err
    assert "not-the-Service-password" not in refused.out + refused.err

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]  # closed again: nothing listens there
    dead = mailpki(
        "directory", "add", "dead", "--url", f"ldaps://127.0.0.1:{dead_port}",
        "--ca-file", openldap_server.ca_file, "--timeout", "2", *base, *service,
    )  # fmt: skip
    assert dead.code == 1, dead
    assert "not added" in dead.err and f"127.0.0.1:{dead_port}" in dead.err
    assert "\n" not in dead.err.strip()

    # ldaps:// without the directory's CA: the system CAs do not know it.
    untrusted = mailpki(
        "directory", "add", "untrusted", "--url", openldap_server.ldaps_url, *base, *service
    )
    assert untrusted.code == 1 and "not added" in untrusted.err

    empty = password_file(tmp_path, "", "empty")
    no_password = mailpki(
        "directory", "add", "nopw", "--url", openldap_server.ldaps_url,
        "--ca-file", openldap_server.ca_file, "--bind-password-file", empty, *base,
    )  # fmt: skip
    assert no_password.code != 0 and "empty" in no_password.err

    assert json.loads(ok(mailpki("directory", "list", "--json", "--home", home)).out) == []
    assert "directory.added" not in [event for event, _ in audit_events(home)]


# --- search and show ----------------------------------------------------------------


def test_search_across_directories(routed_home: Path, openldap_server: SlapdServer) -> None:
    found = json.loads(
        ok(mailpki("directory", "search", "Alice", "--json", "--home", routed_home)).out
    )
    alices = sorted((e["directory"], e["mail"]) for e in found if e["login"] == "alice")
    assert alices == [(AD, "alice.liddell@corp.example.com"), (OL, "alice@example.com")]
    text = ok(mailpki("directory", "search", "Liddell", "--home", routed_home)).out
    assert f"<alice@example.com>  alice  [{OL}]" in text
    assert f"[{AD}]" in text

    # Bulk users: the limit holds across both directories.
    bulk = json.loads(
        ok(
            mailpki("directory", "search", "Anna", "--limit", "30", "--json", "--home", routed_home)
        ).out
    )
    assert len(bulk) == 30 and {e["directory"] for e in bulk} <= {OL, AD}
    assert "nobody found" in ok(mailpki("directory", "search", "zz-nobody", "--home", routed_home)).out  # fmt: skip
    assert [e["login"] for e in json.loads(ok(mailpki("directory", "search", "Dave (", "--json", "--home", routed_home)).out)] == ["dave"]  # fmt: skip
    assert mailpki("directory", "search", "x", "--limit", "0", "--home", routed_home).code == 2


def test_show_login_forms(routed_home: Path, ad_server: SlapdServer) -> None:
    ad_domain = ad_server.domains[0]
    by_netbios = show(routed_home, "CORP\\alice")
    assert by_netbios["directory"] == AD and by_netbios["login"] == "alice"
    assert by_netbios["mail"] == "alice.liddell@corp.example.com"
    assert by_netbios["site"] == "Security" and by_netbios["enabled"] is True
    assert show(routed_home, f"alice@{ad_domain}") == by_netbios
    ol_alice = show(routed_home, "alice@example.com")
    assert ol_alice["directory"] == OL and ol_alice["employee_id"] == "4711"
    assert show(routed_home, "CORP\\dora")["enabled"] is False

    text = ok(mailpki("directory", "show", "CORP\\jsmith", "--home", routed_home)).out
    assert "display_name: Smith, John" in text

    both = mailpki("directory", "show", "alice", "--home", routed_home)
    assert both.code == 1
    assert "several directories" in both.err and OL in both.err and AD in both.err
    assert "user@domain" in both.err

    missing = mailpki("directory", "show", "no-such-person", "--home", routed_home)
    assert missing.code == 3 and "no directory entry" in missing.err
    assert mailpki("directory", "show", "OTHER\\alice", "--home", routed_home).code == 3


@pytest.mark.parametrize("payload", INJECTIONS, ids=repr)
def test_injection_finds_nothing_more_than_literal(routed_home: Path, payload: str) -> None:
    found = mailpki("directory", "search", payload, "--json", "--home", routed_home)
    assert found.code == 0, found
    for entry in json.loads(found.out):
        fields = [entry[k] for k in ("login", "mail", "display_name", "given_name", "surname")]
        assert any(
            f is not None and str(f).casefold().startswith(payload.casefold()) for f in fields
        ), entry
    assert mailpki("directory", "show", payload, "--home", routed_home).code == 3


# --- logon --------------------------------------------------------------------------


def test_authenticate_lockout_and_audit(
    sqlite_home: Path, openldap_server: SlapdServer, ad_server: SlapdServer, tmp_path: Path
) -> None:
    home = sqlite_home
    ok(add_openldap(home, openldap_server))
    ok(add_ad(home, ad_server))
    ok(mailpki("config", "set", "auth.max_failures", "3", "--home", home))
    ok(mailpki("config", "set", "auth.lockout_minutes", "30", "--home", home))

    def auth(login: str, password: str) -> Result:
        pw = password_file(tmp_path, password) if password else tmp_path / "empty"
        if not password:
            pw.write_text("")
        return mailpki("directory", "authenticate", login, "--password-file", pw, "--home", home)

    dave = openldap_server.users["dave"]
    right = ok(auth("dave", dave.password or ""))
    assert f"ok: dave ({dave.dn}) in {OL}" in right.out
    assert f"in {AD}" in ok(auth("CORP\\jsmith", ad_server.users["comma"].password or "")).out

    generic = "wrong login or password"
    for login, password in (
        ("dave", "not-daves-Password"),  # wrong password
        ("nobody-at-all", "whatever-1"),  # unknown login: the same answer
        ("carol", openldap_server.users["carol"].password or ""),  # locked by ppolicy
    ):
        refused = auth(login, password)
        assert refused.code == 4, refused
        assert generic in refused.err and password not in refused.err
    dora = auth("CORP\\dora", ad_server.users["disabled"].password or "")
    assert dora.code == 4 and "disabled" in dora.err

    empty = auth("dave", "")
    assert empty.code == 2 and "empty" in empty.err

    # auth.max_failures = 3: two more wrong passwords (the first one counted), then
    # even the right password is refused until the lockout ends.
    for _ in range(2):
        assert auth("dave", "still-Wrong-42").code == 4
    started = datetime.datetime.now(datetime.UTC)
    locked = auth("dave", dave.password or "")
    assert locked.code == 4, locked
    found = re.search(r"too many failed logons: try again after (\d\d):(\d\d) UTC", locked.err)
    assert found, locked.err
    until = started.replace(
        hour=int(found.group(1)), minute=int(found.group(2)), second=0, microsecond=0
    )
    if until < started:
        until += datetime.timedelta(days=1)  # past midnight
    assert datetime.timedelta(minutes=29) <= until - started <= datetime.timedelta(minutes=31)
    # Another login is not affected.
    ok(auth("CORP\\jsmith", ad_server.users["comma"].password or ""))

    ok(mailpki("audit", "verify", "--home", home))
    logons = [(e, d) for e, d in audit_events(home) if e.startswith("logon.")]
    assert [d["login"] for e, d in logons if e == "logon.succeeded"] == [
        "dave", "CORP\\jsmith", "CORP\\jsmith",
    ]  # fmt: skip
    refused_logins = [d["login"] for e, d in logons if e == "logon.refused"]
    assert refused_logins == [
        "dave", "nobody-at-all", "carol", "CORP\\dora", "dave", "dave", "dave",
    ]  # fmt: skip
    reasons = [str(d["reason"]) for e, d in logons if e == "logon.refused"]
    assert reasons[3] == "the account is disabled"
    assert reasons[-1].startswith("too many failed logons")
    serialized = json.dumps(logons)
    for secret in ("not-daves-Password", "still-Wrong-42", dave.password or "x"):
        assert secret not in serialized


# --- enrollment and publication -----------------------------------------------------


@pytest.mark.usefixtures("ldap_utils", "reset_certificates")
def test_enroll_publish_revoke_keeps_foreign_certificates(
    sqlite_home: Path, openldap_server: SlapdServer, tmp_path: Path
) -> None:
    home = sqlite_home
    alice = openldap_server.users["alice"]
    ok(add_openldap(home, openldap_server))
    foreign = foreign_certificate(alice.mail or "")
    foreign_serial = f"{foreign.serial_number:X}"
    put_certificate(openldap_server, alice.dn, foreign)

    enrolled = ok(enroll_user(home, "alice", tmp_path / "alice.p12"))
    serial = serial_of(enrolled)
    assert "alice@example.com" in enrolled.out

    # Right after the command: in both attributes, next to the other CA's certificate.
    values = ldapsearch(openldap_server, alice.dn, tmp_path)
    assert len(values[CERT_ATTR]) == 2 and len(values[SMIME_ATTR]) == 2
    certs, bundled = serials_in(values)
    assert {strip0(s) for s in certs} == {strip0(serial), strip0(foreign_serial)}
    assert {strip0(s) for s in bundled} == {strip0(serial), strip0(foreign_serial)}
    [ours] = [d for d in values[CERT_ATTR] if strip0(serial) in x509_text(d)]
    text = x509_text(ours)
    subject = text.split("subject=", 1)[1].splitlines()[0]
    assert "CN=Alice Liddell" in subject
    assert "GN=Alice" in subject and "SN=Liddell" in subject
    assert "O=Example Corp" in subject
    assert "email:alice@example.com" in text
    assert "email:" + (alice.mail or "") == re.search(r"email:\S+", text).group(0)  # type: ignore[union-attr]

    # A sync changes nothing: ours is wanted, the other CA's is not ours to touch.
    synced = ok(mailpki("directory", "sync", "--home", home))
    assert "0 published, 0 removed" in synced.out
    assert len(ldapsearch(openldap_server, alice.dn, tmp_path)[CERT_ATTR]) == 2

    ok(mailpki("ca", "revoke", serial, "--reason", "superseded", "--home", home))
    certs, bundled = serials_in(ldapsearch(openldap_server, alice.dn, tmp_path))
    assert {strip0(s) for s in certs} == {strip0(foreign_serial)}
    assert {strip0(s) for s in bundled} == {strip0(foreign_serial)}

    ok(mailpki("directory", "sync", "--home", home))
    values = ldapsearch(openldap_server, alice.dn, tmp_path)
    assert values[CERT_ATTR] == [foreign.public_bytes(Encoding.DER)]
    assert values[SMIME_ATTR] == [pkcs7.serialize_certificates([foreign], Encoding.DER)]


@pytest.mark.usefixtures("ldap_utils", "reset_certificates")
def test_approval_queue(
    sqlite_home: Path, openldap_server: SlapdServer, ad_server: SlapdServer, tmp_path: Path
) -> None:
    home = sqlite_home
    ok(add_openldap(home, openldap_server))
    ok(add_ad(home, ad_server))
    # approval.allowed_domains defaults to the instance domain: the OpenLDAP one only.
    assert ad_server.domains[0] not in openldap_server.domains

    # Disabled in AD: queued, then rejected.
    dora = enroll_user(home, "CORP\\dora", tmp_path / "dora.p12")
    assert dora.code == 5, dora
    assert "waits for an officer" in dora.err and "disabled" in dora.err
    assert not (tmp_path / "dora.p12").exists()
    [request] = requests(home)
    assert request["state"] == "pending" and request["login"] == "dora"
    assert request["directory"] == AD
    assert any("disabled" in str(r) for r in request["reasons"])  # type: ignore[union-attr]
    assert f"{request['id']}  pending" in ok(mailpki("requests", "list", "--home", home)).out
    ok(mailpki("requests", "reject", str(request["id"]), "--note", "left", "--home", home))
    assert requests(home)[0]["state"] == "rejected"
    again = mailpki("requests", "approve", str(request["id"]), "--home", home)
    assert again.code == 2 and "already rejected" in again.err

    # Outside the allowed domains: queued, approved, then the next enrollment works.
    bob = ad_server.users["bob"]
    queued = enroll_user(home, f"bob@{ad_server.domains[0]}", tmp_path / "bob.p12")
    assert queued.code == 5, queued
    assert f"mail domain {ad_server.domains[0]} is not allowed" in queued.err
    pending = [r for r in requests(home) if r["state"] == "pending"]
    assert [r["login"] for r in pending] == ["bob"]
    # Asking again does not queue a second request.
    assert enroll_user(home, "CORP\\bob", tmp_path / "bob.p12").code == 5
    assert len([r for r in requests(home) if r["state"] == "pending"]) == 1
    ok(mailpki("requests", "approve", str(pending[0]["id"]), "--home", home))
    enrolled = ok(enroll_user(home, "CORP\\bob", tmp_path / "bob.p12"))
    serial = serial_of(enrolled)
    assert bob.mail in enrolled.out
    [done] = [r for r in requests(home) if r["id"] == pending[0]["id"]]
    assert done["state"] == "enrolled" and serial in str(done["note"])
    certs, bundled = serials_in(ldapsearch(ad_server, bob.dn, tmp_path))
    assert {strip0(s) for s in certs} == {strip0(serial)} == {strip0(s) for s in bundled}
    # The approval is used up: the next enrollment goes through the rules again.
    assert enroll_user(home, "CORP\\bob", tmp_path / "bob2.p12").code == 5

    nemo = enroll_user(home, "CORP\\nemo", tmp_path / "nemo.p12")
    assert nemo.code == 2 and "has no mail address" in nemo.err
    unknown = enroll_user(home, "no-such-person", tmp_path / "x.p12")
    assert unknown.code == 3 and "no directory entry" in unknown.err

    ok(mailpki("audit", "verify", "--home", home))
    events = [event for event, _ in audit_events(home)]
    assert {"request.decided", "request.rejected", "request.approved"} <= set(events)


@pytest.mark.usefixtures("reset_certificates")
def test_required_groups(sqlite_home: Path, openldap_server: SlapdServer, tmp_path: Path) -> None:
    home = sqlite_home
    ok(add_openldap(home, openldap_server))
    ok(mailpki("config", "set", "approval.required_groups", "pki-admins", "--home", home))
    assert "pki-admins" in ",".join(openldap_server.users["alice"].groups)
    assert "pki-admins" not in ",".join(openldap_server.users["bob"].groups)

    ok(enroll_user(home, "alice", tmp_path / "alice.p12"))
    bob = enroll_user(home, "bob", tmp_path / "bob.p12")
    assert bob.code == 5 and "not a member of pki-admins" in bob.err
    assert [(r["login"], r["state"]) for r in requests(home)] == [("bob", "pending")]
    decided = [d for e, d in audit_events(home) if e == "request.decided"]
    assert [(d["login"], d["approved"]) for d in decided] == [("alice", True), ("bob", False)]


@pytest.mark.usefixtures("ldap_utils")
def test_outage_queues_publication_until_sync(
    home: Path, openldap_server: SlapdServer, tmp_path: Path
) -> None:
    ok(add_openldap(home, openldap_server, "--timeout", "2"))
    domain = openldap_server.domains[0]
    numbers = (9990, 9991, 9992)
    logins = [openldap_server.bulk_login(n) for n in numbers]
    dns = [f"uid={login},{openldap_server.people_dn}" for login in logins]
    serials: dict[str, str] = {}
    clear_certificates(openldap_server, dns)
    openldap_server.stop()
    try:
        for login in logins:
            enrolled = mailpki(
                "enroll", "--home", home, "--email", f"{login}@{domain}",
                "--name", f"Outage {login}", "--key-type", "p256",
                "--out", tmp_path / f"{login}.p12",
            )  # fmt: skip
            assert enrolled.code == 0, enrolled  # the directory is not needed to enroll
            serials[login] = serial_of(enrolled)
        instance = Instance.open(home)
        try:
            assert instance.publisher.pending() == 3
        finally:
            instance.close()
        down = mailpki("directory", "sync", "--home", home)
        assert down.code == 1, down
        assert down.out.startswith("0 published, 0 removed"), down.out
        assert int(re.search(r"(\d+) failed", down.out).group(1)) >= 3  # type: ignore[union-attr]
        assert OL in down.err and "Connection refused" in down.err
    finally:
        openldap_server.start()
    try:
        synced = ok(mailpki("directory", "sync", "--home", home))
        assert synced.out.startswith("3 published"), synced.out
        for login, dn in zip(logins, dns, strict=True):
            certs, bundled = serials_in(ldapsearch(openldap_server, dn, tmp_path))
            assert {strip0(s) for s in certs} == {strip0(serials[login])}, login
            assert {strip0(s) for s in bundled} == {strip0(serials[login])}, login
        instance = Instance.open(home)
        try:
            assert instance.publisher.pending() == 0
        finally:
            instance.close()
        again = ok(mailpki("directory", "sync", "--home", home))
        assert again.out.startswith("0 published, 0 removed")
    finally:
        clear_certificates(openldap_server, dns)


def test_sync_gives_up_on_a_silent_directory_once(
    sqlite_home: Path, openldap_server: SlapdServer, tmp_path: Path
) -> None:
    """A directory that accepts connections and never answers costs one timeout per
    sync, not one per certificate."""
    home = sqlite_home
    ok(add_openldap(home, openldap_server, "--timeout", "1"))
    logins = [openldap_server.bulk_login(n) for n in (9980, 9981, 9982, 9983)]
    dns = [f"uid={login},{openldap_server.people_dn}" for login in logins]
    try:
        for login in logins:
            ok(
                mailpki(
                    "enroll", "--home", home, "--email", f"{login}@{openldap_server.domains[0]}",
                    "--name", f"Silent {login}", "--key-type", "p256",
                    "--out", tmp_path / f"{login}.p12",
                )
            )  # fmt: skip
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen(16)  # the kernel completes handshakes; nobody ever reads
            instance = Instance.open(home)
            try:
                with instance.db.transaction() as session:
                    row = session.get(DirectoryConfig, OL)
                    assert row is not None
                    row.url = f"ldaps://127.0.0.1:{silent.getsockname()[1]}"
            finally:
                instance.close()
            started = time.monotonic()
            result = mailpki("directory", "sync", "--home", home)
            elapsed = time.monotonic() - started
        assert result.code == 1, result
        assert "0 published, 0 removed, 0 without entry, 4 failed" in result.out
        assert len(result.err.strip().splitlines()) == 1, result.err
        assert elapsed < 2.5, f"{elapsed:.1f} s: the silent directory was asked more than once"
    finally:
        clear_certificates(openldap_server, dns)


# --- HR PINs ------------------------------------------------------------------------


def test_pins_import_hashed_and_used_once(sqlite_home: Path, tmp_path: Path) -> None:
    home = sqlite_home
    pins = {"E1001": "482913", "E1002": "739201"}
    csv_file = tmp_path / "pins.csv"
    csv_file.write_text(
        "employee_id,mail,name,pin\n"
        f"E1001,ann@example.com,Ann Archer,{pins['E1001']}\n"
        f"E1002,ben@example.com,Ben Baker,{pins['E1002']}\n"
        "E1003,not-a-mail,Cat Cole,615243\n"
        "E1004,dan@example.com,Dan Dyer,12\n"
        "E1001,eve@example.com,Eve Ellis,908172\n"
        "E1005,fay@example.com,Fay Ford\n"
    )
    result = mailpki("pins", "import", csv_file, "--home", home)
    assert result.code == 1, result
    assert "2 PINs added, 0 replaced, 4 refused" in result.out
    lines = result.err.strip().splitlines()
    assert [line.split(":", 1)[0] for line in lines] == [
        "line 4", "line 5", "line 6", "line 7",
    ]  # fmt: skip
    for pin in ("615243", "12", "908172"):
        assert f" {pin}" not in result.err and f"{pin}\n" not in result.err

    database = b"".join(p.read_bytes() for p in home.glob("mailpki.db*"))
    assert database.count(b"$argon2id$") >= 2
    for pin in pins.values():
        assert pin.encode() not in database
        assert pin.encode("utf-16-le") not in database

    instance = Instance.open(home)
    try:
        identity = instance.pin_logon.authenticate("E1001", pins["E1001"], source="test")
        assert identity.method == "pin" and identity.entry.mail == "ann@example.com"
        assert identity.entry.display_name == "Ann Archer"
        with pytest.raises(AuthenticationError, match="already used"):
            instance.pin_logon.authenticate("E1001", pins["E1001"], source="test")
        with pytest.raises(AuthenticationError, match="wrong employee id or PIN"):
            instance.pin_logon.authenticate("E1002", "000000", source="test")
        by_mail = instance.pin_logon.authenticate("ben@example.com", pins["E1002"])
        assert by_mail.entry.login == "E1002"
    finally:
        instance.close()


# --- the embedded directory ---------------------------------------------------------


def test_embedded_directory_then_ldap(
    sqlite_home: Path, openldap_server: SlapdServer, tmp_path: Path
) -> None:
    home = sqlite_home
    people = tmp_path / "people.csv"
    people.write_text(
        "login,mail,name,given_name,surname,site,groups\n"
        "erin,erin@example.com,Erin Embed,Erin,Embed,Leeds,staff\n"
        "fred,fred@example.com,Fred Flat,Fred,Flat,York,staff\n"
        "bad login,x@example.com,Bad,,,,\n"
    )
    imported = mailpki("directory", "import", people, "--home", home)
    assert imported.code == 1 and "2 added, 0 updated, 1 refused" in imported.out
    assert "line 4" in imported.err
    assert show(home, "erin")["directory"] == "embedded"
    found = json.loads(ok(mailpki("directory", "search", "Fre", "--json", "--home", home)).out)
    assert [e["login"] for e in found] == ["fred"]

    enrolled = ok(enroll_user(home, "erin", tmp_path / "erin.p12"))
    serial = serial_of(enrolled)
    instance = Instance.open(home)
    try:
        der = instance.ca.certificate_der(int(serial, 16))
        entry = instance.directories.find_by_login("erin")
        assert entry is not None
        # Published to the embedded directory, like to an LDAP one.
        assert instance.directories.named("embedded").certificates(entry.dn) == [der]
    finally:
        instance.close()
    text = x509_text(der)
    assert "CN=Erin Embed" in text and "email:erin@example.com" in text

    ok(add_openldap(home, openldap_server))
    refused = mailpki("directory", "import", people, "--home", home)
    assert refused.code == 2 and "uses LDAP directories" in refused.err
    # The LDAP directory now answers; the embedded people are not consulted.
    assert mailpki("directory", "show", "erin", "--home", home).code == 3
    assert show(home, "alice")["directory"] == OL


@pytest.fixture(autouse=True)
def _servers_running(request: pytest.FixtureRequest) -> Iterator[None]:
    """An outage test that failed half-way must not leave a server stopped."""
    yield
    for name in ("openldap_server", "ad_server"):
        if name in request.fixturenames:
            server: SlapdServer = request.getfixturevalue(name)
            if not server.running:
                server.start()
