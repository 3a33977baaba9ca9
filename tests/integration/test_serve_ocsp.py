"""`mailpki serve`: the real openssl asks the instance's OCSP responder and fetches CRLs."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from cryptography import x509

from mailpki.web.server import create_app
from tests.integration.cli_helpers import mailpki, make_csr, openssl


@pytest.fixture
def server(home: Path) -> Iterator[str]:
    """The instance's HTTP app in uvicorn on a free port (as 'mailpki serve' runs it)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(home), log_level="warning"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert srv.started
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)
    sock.close()


def issue(home: Path, tmp_path: Path, name: str) -> tuple[Path, str]:
    out = tmp_path / f"{name}.pem"
    result = mailpki(
        "ca",
        "issue",
        "--home",
        home,
        "--csr",
        make_csr(tmp_path, name),
        "--email",
        f"{name}@example.com",
        "--name",
        f"{name.title()} Smith",
        "--out",
        out,
    )
    assert result.code == 0, result.err
    return out, format(x509.load_pem_x509_certificate(out.read_bytes()).serial_number, "X")


def ocsp(home: Path, url: str, cert: Path, *extra: str) -> str:
    ca = home / "ca"
    result = openssl(
        "ocsp",
        *extra,
        "-issuer",
        ca / "issuing.pem",
        "-cert",
        cert,
        "-url",
        f"{url}/ocsp",
        "-CAfile",
        ca / "root.pem",
        "-verify_other",
        ca / "issuing.pem",
        check=False,
    )
    return result.stdout + result.stderr


def test_openssl_ocsp_good_revoked_unknown(home: Path, tmp_path: Path, server: str) -> None:
    good, _ = issue(home, tmp_path, "alice")
    revoked, serial = issue(home, tmp_path, "bob")
    assert mailpki("ca", "revoke", "--home", home, serial, "--reason", "keyCompromise").code == 0

    out = ocsp(home, server, good)
    assert "Response verify OK" in out and f"{good}: good" in out
    out = ocsp(home, server, revoked)
    assert "Response verify OK" in out and f"{revoked}: revoked" in out
    assert "Reason: keyCompromise" in out
    # A serial this CA never issued: unknown.
    ca = home / "ca"
    result = openssl(
        "ocsp",
        "-issuer",
        ca / "issuing.pem",
        "-serial",
        "0x123456789ABCDEF",
        "-url",
        f"{server}/ocsp",
        "-CAfile",
        ca / "root.pem",
        "-verify_other",
        ca / "issuing.pem",
    )
    assert "Response verify OK" in result.stderr + result.stdout
    assert "0x123456789ABCDEF: unknown" in result.stdout
    # The nonce is checked by openssl by default; -no_nonce also works (cached path).
    out = ocsp(home, server, good, "-no_nonce")
    assert "Response verify OK" in out and ": good" in out


def test_crls_and_ca_certificates_over_http(home: Path, tmp_path: Path, server: str) -> None:
    _, serial = issue(home, tmp_path, "carol")
    assert mailpki("ca", "revoke", "--home", home, serial, "--reason", "superseded").code == 0
    # The partition CRL was signed before the revocation: the server re-signs it on demand.
    with urllib.request.urlopen(f"{server}/crl/issuing-0.crl") as response:
        assert response.headers["Content-Type"] == "application/pkix-crl"
        crl = x509.load_der_x509_crl(response.read())
    assert crl.get_revoked_certificate_by_serial_number(int(serial, 16)) is not None
    issuing = x509.load_pem_x509_certificate((home / "ca" / "issuing.pem").read_bytes())
    assert crl.is_signature_valid(issuing.public_key())  # type: ignore[arg-type]
    with urllib.request.urlopen(f"{server}/ca/issuing.crt") as response:
        assert x509.load_der_x509_certificate(response.read()) == issuing
    with urllib.request.urlopen(f"{server}/crl/root.crl") as response:
        x509.load_der_x509_crl(response.read())
    for bad in ("/crl/..%2Fconfig.toml", "/crl/issuing-99.crl", "/ca/../config.toml"):
        try:
            urllib.request.urlopen(f"{server}{bad}")
        except urllib.error.HTTPError as exc:
            assert exc.code == 404
        else:
            raise AssertionError(f"{bad} was served")
    # The refresh was audited and the log still verifies.
    verify = json.loads(mailpki("audit", "verify", "--home", home, "--json").out)
    assert verify["ok"]


def test_full_crl_is_refreshed_in_the_background(home: Path, tmp_path: Path, server: str) -> None:
    _, serial = issue(home, tmp_path, "dora")
    assert (
        mailpki("ca", "revoke", "--home", home, serial, "--reason", "affiliationChanged").code == 0
    )
    # The stored full CRL is still valid: it is served at once, and re-signed behind it.
    with urllib.request.urlopen(f"{server}/crl/issuing.crl") as response:
        first = x509.load_der_x509_crl(response.read())
    assert first.get_revoked_certificate_by_serial_number(int(serial, 16)) is None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{server}/crl/issuing.crl") as response:
            crl = x509.load_der_x509_crl(response.read())
        if crl.get_revoked_certificate_by_serial_number(int(serial, 16)) is not None:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the full CRL was never re-signed with the revocation")
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number > first.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
