"""The public certificate directory of a real `mailpki serve`, checked with the real openssl."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import Message
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import update
from starlette.testclient import TestClient

from mailpki.instance.instance import Instance
from mailpki.store.models import CertificateRecord
from mailpki.web.server import InstancePKISource, create_app
from tests.integration.cli_helpers import mailpki, make_csr, openssl

pytestmark = pytest.mark.integration


def issue(home: Path, work: Path, name: str, email: str) -> x509.Certificate:
    out = work / f"{name}.pem"
    result = mailpki(
        "ca", "issue", "--home", home, "--csr", make_csr(work, name),
        "--email", email, "--name", "Alice Smith", "--out", out,
    )  # fmt: skip
    assert result.code == 0, result.err
    return x509.load_pem_x509_certificate(out.read_bytes())


def revoke(home: Path, cert: x509.Certificate) -> None:
    serial = format(cert.serial_number, "X")
    assert mailpki("ca", "revoke", "--home", home, serial, "--reason", "superseded").code == 0


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def openssl_serial(output: str) -> int:
    line = next(line for line in output.splitlines() if line.startswith("serial="))
    return int(line.removeprefix("serial="), 16)


def get(url: str) -> tuple[int, Message, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def test_served_directory_publishes_only_the_valid_certificate(
    sqlite_home: Path, tmp_path: Path, serve: Callable[[], str]
) -> None:
    home = sqlite_home
    revoked = issue(home, tmp_path, "alice1", "alice@example.com")
    # The local part keeps its case in storage; the lookup ignores it.
    valid = issue(home, tmp_path, "alice2", "Alice@example.com")
    revoke(home, revoked)
    url = serve()
    valid_serial, revoked_serial = (format(c.serial_number, "X") for c in (valid, revoked))

    status, headers, body = get(f"{url}/certs?mail=ALICE@EXAMPLE.COM")
    page = body.decode()
    assert status == 200, page
    assert valid_serial in page and revoked_serial not in page
    assert "1 valid certificate " in page
    assert headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "no-referrer"

    ca = home / "ca"
    files = {}
    for ext in ("pem", "cer", "p7c"):
        status, headers, body = get(f"{url}/certs/alice@example.com.{ext}")
        assert status == 200
        assert headers["Content-Disposition"] == f'attachment; filename="alice@example.com.{ext}"'
        files[ext] = tmp_path / f"download.{ext}"
        files[ext].write_bytes(body)
    out = openssl("x509", "-in", files["pem"], "-noout", "-serial", "-email").stdout
    # openssl pads the hex serial to whole bytes; ours has no leading zeros: compare numbers.
    assert openssl_serial(out) == int(valid_serial, 16) and "Alice@example.com" in out
    out = openssl("x509", "-in", files["cer"], "-inform", "DER", "-noout", "-serial").stdout
    assert openssl_serial(out) == int(valid_serial, 16)
    assert files["cer"].read_bytes() == der(valid)
    printed = openssl("pkcs7", "-in", files["p7c"], "-inform", "DER", "-print_certs").stdout
    chain = x509.load_pem_x509_certificates(printed.encode())
    issuing = x509.load_pem_x509_certificate((ca / "issuing.pem").read_bytes())
    root = x509.load_pem_x509_certificate((ca / "root.pem").read_bytes())
    assert set(chain) == {valid, issuing, root}
    # The downloaded certificate chains to the instance's root.
    out = openssl(
        "verify", "-CAfile", ca / "root.pem", "-untrusted", ca / "issuing.pem", files["pem"]
    ).stdout
    assert "OK" in out

    # The revoked certificate cannot be fetched by its serial either; strangers are 404.
    assert get(f"{url}/certs/alice@example.com.cer?serial={revoked_serial}")[0] == 404
    status, _, body = get(f"{url}/certs?mail=nobody@example.com")
    assert status == 404 and b"No valid certificate" in body
    assert get(f"{url}/certs/nobody@example.com.pem")[0] == 404
    status, _, body = get(f"{url}/certs/..%2F..%2Fconfig.toml.pem")
    assert status == 400 and b"config" not in body

    # 30 lookups a minute with a burst of 10 (the default): the flood is cut off.
    for _ in range(15):
        status, headers, _ = get(f"{url}/certs?mail=alice@example.com")
        if status == 429:
            break
    assert status == 429
    assert int(headers["Retry-After"]) >= 1
    assert get(f"{url}/health")[0] == 200  # the other endpoints are not limited


def test_source_contract_on_each_database(home: Path, tmp_path: Path) -> None:
    """valid_certificates: this address in any case, unrevoked, unexpired, newest first."""
    first = issue(home, tmp_path, "a1", "alice@example.com")
    revoked = issue(home, tmp_path, "a2", "alice@example.com")
    expired = issue(home, tmp_path, "a3", "alice@example.com")
    mixed = issue(home, tmp_path, "a4", "ALICE@example.com")
    issue(home, tmp_path, "b1", "bob@example.com")
    issue(home, tmp_path, "c1", "malice@example.com")
    revoke(home, revoked)
    instance = Instance.open(home)
    try:
        with instance.db.transaction() as session:
            session.execute(
                update(CertificateRecord)
                .where(CertificateRecord.serial == format(expired.serial_number, "X"))
                .values(not_after=datetime.now(UTC) - timedelta(seconds=1))
            )
        source = InstancePKISource(instance)
        assert source.valid_certificates("alice@example.com") == [der(mixed), der(first)]
        assert source.valid_certificates("Alice@Example.com") == [der(mixed), der(first)]
        assert source.valid_certificates("nobody@example.com") == []
        assert source.valid_certificates("%@example.com") == []  # no LIKE anywhere
    finally:
        instance.close()


def test_directory_setting(sqlite_home: Path, tmp_path: Path) -> None:
    issue(sqlite_home, tmp_path, "alice", "alice@example.com")
    result = mailpki("config", "set", "--home", sqlite_home, "web.certdir_rate_per_minute", "0")
    assert result.code == 0, result.err
    client = TestClient(create_app(sqlite_home))
    assert client.get("/certs/alice@example.com.pem").status_code == 404  # turned off
    assert client.get("/health").status_code == 200
    assert mailpki("config", "set", "web.certdir_rate_per_minute", "-1", "--home", sqlite_home).code


def test_served_with_the_portal_the_directory_has_its_look_and_a_strict_csp(
    sqlite_home: Path, tmp_path: Path
) -> None:
    """Under `mailpki serve` the directory pages wear the portal's frame (stylesheet,
    logo, navigation), with a CSP that allows no inline style; values stay escaped."""
    issue(sqlite_home, tmp_path, "alice", "alice@example.com")
    client = TestClient(create_app(sqlite_home))
    found = client.get("/certs", params={"mail": "alice@example.com"})
    assert found.status_code == 200
    assert "/static/portal.css" in found.text and 'class="certdir"' in found.text
    assert "unsafe-inline" not in found.headers["content-security-policy"]
    assert "<style" not in found.text
    bad = client.get("/certs", params={"mail": "<script>alert(1)</script>"})
    assert bad.status_code == 400
    assert "<script>alert(1)</script>" not in bad.text and "<script" not in bad.text
    assert "Not a mail address" in bad.text
    assert bad.headers["x-robots-tag"] == "noindex, nofollow"
