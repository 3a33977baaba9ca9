"""SMIMEA in the DNS against a real BIND 9 (dynamic updates with TSIG, DNSSEC-signed
zone) and a real unbound validating resolver: records, the outbox with retries, and
`mail encrypt --dns` accepting only validated answers."""

from __future__ import annotations

import hashlib
import re
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from mailpki.instance.housekeeping import Housekeeping
from mailpki.instance.instance import Instance
from tests.fixtures.dns_servers import BindServer, UnboundResolver
from tests.integration.cli_helpers import mailpki, make_csr, openssl


def owner(address: str) -> str:
    """RFC 8162 section 3, computed here independently of the product."""
    local, domain = address.split("@")
    return hashlib.sha256(local.encode()).hexdigest()[:56] + "._smimecert." + domain + "."


def issue(
    home: Path, work: Path, local: str, *, queued: bool = False
) -> tuple[x509.Certificate, Path]:
    csr = make_csr(work, local, key="rsa")
    out = work / f"{local}-{uuid.uuid4().hex[:6]}.pem"
    result = mailpki(
        "ca", "issue", "--home", home, "--csr", csr, "--email", f"{local}@example.com",
        "--name", "Alice Smith", "--out", out,
    )  # fmt: skip
    assert result.code == 0, result.err
    # When the DNS server cannot take the update now, one line says it waits.
    assert ("SMIMEA update(s) wait in the outbox" in result.err) == queued, result.err
    return x509.load_pem_x509_certificate(out.read_bytes()), work / f"{local}.key"


def smimea_in_bind(bind: BindServer, address: str) -> list[bytes]:
    """The certificates BIND serves for an address, read with the real dig."""
    answer = bind.dig(owner(address), "SMIMEA", "+noall", "+answer")
    assert answer.returncode == 0, answer.stderr
    found = []
    for line in answer.stdout.splitlines():
        parts = line.split(None, 4)
        if len(parts) == 5 and parts[3] == "SMIMEA":
            rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.SMIMEA, parts[4])
            assert (rdata.usage, rdata.selector, rdata.mtype) == (3, 0, 0)
            found.append(rdata.cert)
    return found


def configure(home: Path, bind: BindServer, key_file: Path | None = None) -> None:
    for key, value in (
        ("dns.update_server", bind.address),
        ("dns.zone", "example.com"),
        ("dns.tsig_key_file", str(key_file or bind.key_file)),
        ("dns.timeout_seconds", "2"),
    ):
        result = mailpki("config", "set", key, value, "--home", home)
        assert result.code == 0, result.err


def pending(home: Path) -> int:
    result = mailpki("dns", "sync", "--home", home)
    match = re.search(r"(\d+) updates queued", result.out)
    assert match, result.out + result.err
    return int(match.group(1))


# -- records ------------------------------------------------------------------------------


def test_records_prints_one_zone_line_per_valid_certificate(
    sqlite_home: Path, tmp_path: Path
) -> None:
    cert, _ = issue(sqlite_home, tmp_path, "rec")
    result = mailpki("dns", "records", "--home", sqlite_home)
    assert result.code == 0, result.err
    lines = result.out.strip().splitlines()
    assert len(lines) == 1
    name, ttl, klass, rdtype, data = lines[0].split(None, 4)
    assert (name, ttl, klass, rdtype) == (owner("rec@example.com"), "3600", "IN", "SMIMEA")
    rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.SMIMEA, data)
    assert (rdata.usage, rdata.selector, rdata.mtype) == (3, 0, 0)
    assert rdata.cert == cert.public_bytes(Encoding.DER)

    # The line is valid zone-file syntax for BIND's own checker.
    zone = tmp_path / "example.com.db"
    zone.write_text(
        "$TTL 300\n@ IN SOA ns1 host 1 3600 600 86400 60\n@ IN NS ns1\nns1 IN A 127.0.0.1\n"
        + result.out
    )
    check = subprocess.run(
        ["named-checkzone", "example.com", str(zone)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr

    one = mailpki("dns", "records", "--home", sqlite_home, "--email", "REC@example.com")
    assert one.code == 0 and one.out == result.out
    none = mailpki("dns", "records", "--home", sqlite_home, "--email", "nobody@example.com")
    assert none.code == 3 and "no valid certificate" in none.err
    bad = mailpki("dns", "records", "--home", sqlite_home, "--email", "no-at-sign")
    assert bad.code != 0 and "not a mail address" in bad.err


def test_sync_without_settings_says_what_to_set(sqlite_home: Path) -> None:
    result = mailpki("dns", "sync", "--home", sqlite_home)
    assert result.code != 0
    assert "dns.update_server" in result.err and len(result.err.strip().splitlines()) == 1


def test_bad_dns_settings_are_refused(sqlite_home: Path, tmp_path: Path) -> None:
    for key, value, words in (
        ("dns.update_server", "dns.example.com", "not a host name"),
        ("dns.update_server", "127.0.0.1:70000", "port"),
        ("dns.zone", "bad zone", "zone"),
    ):
        result = mailpki("config", "set", key, value, "--home", sqlite_home)
        assert result.code != 0 and words in result.err, (key, value, result.err)
    garbage = tmp_path / "garbage.key"
    garbage.write_text('key "k" { algorithm hmac-md5; secret "c2VjcmV0c2VjcmV0c2VjcmV0"; };')
    for key, value in (
        ("dns.update_server", "127.0.0.1:1"),
        ("dns.zone", "example.com"),
        ("dns.tsig_key_file", str(garbage)),
    ):
        assert mailpki("config", "set", key, value, "--home", sqlite_home).code == 0
    result = mailpki("dns", "sync", "--home", sqlite_home)
    assert result.code != 0 and "hmac-md5" in result.err and "c2Vj" not in result.err


# -- dynamic updates against BIND -------------------------------------------------------------


@pytest.mark.slow
def test_issue_renew_revoke_update_the_signed_zone(
    sqlite_home: Path, tmp_path: Path, bind_server: BindServer
) -> None:
    configure(sqlite_home, bind_server)
    local = f"upd-{uuid.uuid4().hex[:8]}"
    address = f"{local}@example.com"
    first, _ = issue(sqlite_home, tmp_path, local)
    assert smimea_in_bind(bind_server, address) == [first.public_bytes(Encoding.DER)]
    # The zone is signed: the new record carries an RRSIG made by BIND.
    signed = bind_server.dig(owner(address), "SMIMEA", "+dnssec", "+noall", "+answer")
    assert "RRSIG\tSMIMEA" in signed.stdout or "RRSIG SMIMEA" in signed.stdout

    second, _ = issue(sqlite_home, tmp_path, local)  # renewal: a new certificate
    assert sorted(smimea_in_bind(bind_server, address)) == sorted(
        [first.public_bytes(Encoding.DER), second.public_bytes(Encoding.DER)]
    )
    revoked = mailpki(
        "ca", "revoke", format(first.serial_number, "X"), "--reason", "superseded",
        "--home", sqlite_home,
    )  # fmt: skip
    assert revoked.code == 0, revoked.err
    assert smimea_in_bind(bind_server, address) == [second.public_bytes(Encoding.DER)]
    revoked = mailpki(
        "ca", "revoke", format(second.serial_number, "X"), "--home", sqlite_home
    )  # fmt: skip
    assert revoked.code == 0, revoked.err
    assert smimea_in_bind(bind_server, address) == []
    assert pending(sqlite_home) == 0

    audit = mailpki("audit", "verify", "--home", sqlite_home)
    assert audit.code == 0, audit.err


@pytest.mark.slow
def test_a_refused_tsig_key_leaves_the_update_queued(
    sqlite_home: Path, tmp_path: Path, bind_server: BindServer
) -> None:
    configure(sqlite_home, bind_server, key_file=bind_server.wrong_key_file)
    local = f"tsig-{uuid.uuid4().hex[:8]}"
    cert, _ = issue(sqlite_home, tmp_path, local, queued=True)  # issued; the update waits
    assert smimea_in_bind(bind_server, f"{local}@example.com") == []

    result = mailpki("dns", "sync", "--home", sqlite_home)
    assert result.code == 1
    assert "refused the TSIG key 'mailpki-update'" in result.err
    assert "1 updates queued" in result.out
    secret = re.search(r'secret "([^"]+)"', bind_server.wrong_key_file.read_text())
    assert secret and secret.group(1) not in result.out + result.err

    configure(sqlite_home, bind_server)  # the right key: the queued update goes out
    assert pending(sqlite_home) == 0
    assert smimea_in_bind(bind_server, f"{local}@example.com") == [cert.public_bytes(Encoding.DER)]


@pytest.mark.slow
def test_a_server_that_is_down_gets_the_update_when_it_is_back(
    sqlite_home: Path, tmp_path: Path, bind_server: BindServer
) -> None:
    configure(sqlite_home, bind_server)
    local = f"down-{uuid.uuid4().hex[:8]}"
    bind_server.stop()
    try:
        cert, _ = issue(sqlite_home, tmp_path, local, queued=True)
        noted = mailpki("ca", "revoke", "FFFF", "--home", sqlite_home)  # a refusal: no note
        assert "SMIMEA" not in noted.err
        result = mailpki("dns", "sync", "--home", sqlite_home)
        assert result.code == 1
        assert "did not answer" in result.err or "unreachable" in result.err
        assert "1 updates queued" in result.out
    finally:
        bind_server.start()
    assert pending(sqlite_home) == 0
    assert smimea_in_bind(bind_server, f"{local}@example.com") == [cert.public_bytes(Encoding.DER)]


# -- looking correspondents up with --dns ------------------------------------------------------


def _encrypt(
    work: Path, to: str, resolver: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[object, Path]:
    """`mail encrypt --dns` as an outside correspondent runs it: no instance, no contacts."""
    monkeypatch.chdir(work)
    monkeypatch.delenv("MAILPKI_HOME", raising=False)
    message = work / "hello.eml"
    message.write_bytes(b"From: zoe@example.org\r\nTo: " + to.encode() + b"\r\n"
                        b"Subject: hello\r\n\r\nsecret plans\r\n")  # fmt: skip
    out = work / f"to-{uuid.uuid4().hex[:6]}.eml"
    result = mailpki(
        "mail", "encrypt", message, out, "--to", to, "--dns", "--resolver", resolver,
        "--contacts", work / "contacts",
    )  # fmt: skip
    return result, out


@pytest.mark.slow
def test_encrypt_finds_a_validated_smimea_record(
    sqlite_home: Path,
    tmp_path: Path,
    bind_server: BindServer,
    unbound_resolver: UnboundResolver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configure(sqlite_home, bind_server)
    local = f"look-{uuid.uuid4().hex[:8]}"
    cert, key = issue(sqlite_home, tmp_path, local)
    outside = tmp_path / "outside"
    outside.mkdir()
    result, out = _encrypt(outside, f"{local}@example.com", unbound_resolver.address, monkeypatch)
    assert result.code == 0, result.err  # type: ignore[attr-defined]
    assert "DNS SMIMEA" in result.err  # type: ignore[attr-defined]
    cert_file = tmp_path / "cert.pem"
    cert_file.write_bytes(cert.public_bytes(Encoding.PEM))
    plain = openssl("cms", "-decrypt", "-in", out, "-recip", cert_file, "-inkey", key)
    assert "secret plans" in plain.stdout


@pytest.mark.slow
def test_encrypt_refuses_an_answer_that_is_not_validated(
    sqlite_home: Path,
    tmp_path: Path,
    bind_server: BindServer,
    unbound_resolver: UnboundResolver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configure(sqlite_home, bind_server)
    local = f"nov-{uuid.uuid4().hex[:8]}"
    issue(sqlite_home, tmp_path, local)
    outside = tmp_path / "outside"
    outside.mkdir()
    # BIND itself is authoritative, not validating: its answer has no AD bit.
    result, out = _encrypt(outside, f"{local}@example.com", bind_server.address, monkeypatch)
    err = result.err.strip()  # type: ignore[attr-defined]
    assert result.code != 0 and not out.exists()  # type: ignore[attr-defined]
    assert "not DNSSEC-validated" in err and len(err.splitlines()) == 1

    # An unsigned zone through the validating resolver: insecure, no AD bit either.
    record = mailpki("dns", "records", "--home", sqlite_home, "--email", f"{local}@example.com")
    data = record.out.split(None, 4)[4].strip()
    plain_owner = owner(f"{local}@{bind_server.unsigned_zone}")
    update = subprocess.run(
        ["nsupdate", "-k", str(bind_server.key_file)],
        input=f"server 127.0.0.1 {bind_server.port}\nzone {bind_server.unsigned_zone}\n"
        f"update add {plain_owner} 60 SMIMEA {data}\nsend\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert update.returncode == 0, update.stderr
    assert bind_server.dig(plain_owner, "SMIMEA", "+short").stdout.startswith("3 0 0")
    result, out = _encrypt(
        outside, f"{local}@{bind_server.unsigned_zone}", unbound_resolver.address, monkeypatch
    )
    err = result.err.strip()  # type: ignore[attr-defined]
    assert result.code != 0 and not out.exists()  # type: ignore[attr-defined]
    assert "not DNSSEC-validated" in err and len(err.splitlines()) == 1


def test_resolver_without_dns_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    message = tmp_path / "m.eml"
    message.write_bytes(b"Subject: x\r\n\r\nx\r\n")
    result = mailpki(
        "mail", "encrypt", message, tmp_path / "o.eml", "--to", "a@example.com",
        "--resolver", "127.0.0.1:53",
    )  # fmt: skip
    assert result.code != 0 and "add --dns" in result.err


@pytest.mark.slow
def test_housekeeping_retries_a_queued_update_after_its_backoff(
    sqlite_home: Path, tmp_path: Path, bind_server: BindServer
) -> None:
    configure(sqlite_home, bind_server)
    assert mailpki("config", "set", "keymanager.pool_size", "0", "--home", sqlite_home).code == 0
    local = f"hk-{uuid.uuid4().hex[:8]}"
    bind_server.stop()
    try:
        cert, _ = issue(sqlite_home, tmp_path, local, queued=True)  # first try fails
    finally:
        bind_server.start()
    instance = Instance.open(sqlite_home)
    try:
        publisher = instance.dns_publisher
        assert publisher is not None and publisher.pending() == 1
        chores = Housekeeping(instance)
        chores.run_once()  # within its backoff: not tried again yet
        assert publisher.pending() == 1
        assert smimea_in_bind(bind_server, f"{local}@example.com") == []
        publisher._clock = lambda: datetime.now(UTC) + timedelta(minutes=5)
        chores.run_once()
        assert publisher.pending() == 0
    finally:
        instance.close()
    assert smimea_in_bind(bind_server, f"{local}@example.com") == [cert.public_bytes(Encoding.DER)]
