"""Issuing-CA rollover checked by the real openssl: chains, CRLs and OCSP of both issuers."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import AuthorityInformationAccessOID
from sqlalchemy import select

from mailpki.instance.instance import Instance
from mailpki.store.models import AuditRecord
from tests.fixtures.softhsm import SoftHSMToken
from tests.integration.cli_helpers import mailpki, make_csr, openssl
from tests.integration.test_pkilint_cli import pkilint_cli


@contextmanager
def serving(home: Path) -> Iterator[str]:
    """The instance's HTTP app in uvicorn on a free port, started now (after a rollover)."""
    import uvicorn

    from mailpki.web.server import create_app

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
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(10)
        sock.close()


def issue(home: Path, tmp_path: Path, name: str) -> tuple[Path, x509.Certificate]:
    out = tmp_path / f"{name}.pem"
    result = mailpki(
        "ca", "issue", "--home", home, "--csr", make_csr(tmp_path, name),
        "--email", f"{name}@example.com", "--name", f"{name.title()} Smith", "--out", out,
    )  # fmt: skip
    assert result.code == 0, result.err
    return out, x509.load_pem_x509_certificate(out.read_bytes())


def rollover(home: Path) -> str:
    result = mailpki("ca", "issuing", "rollover", "--home", home)
    assert result.code == 0, result.err
    return result.out


def urls_of(cert: x509.Certificate) -> tuple[str, str]:
    """(CDP, AIA caIssuers) of a certificate."""
    cdp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    crl = cdp[0].full_name[0].value  # type: ignore[index]
    issuers = [
        d.access_location.value
        for d in aia
        if d.access_method == AuthorityInformationAccessOID.CA_ISSUERS
    ]
    return str(crl), str(issuers[0])


def ocsp(home: Path, url: str, cert: Path, issuer: Path, chain: Path) -> str:
    result = openssl(
        "ocsp", "-issuer", issuer, "-cert", cert, "-url", f"{url}/ocsp",
        "-CAfile", home / "ca" / "root.pem", "-verify_other", chain, check=False,
    )  # fmt: skip
    return result.stdout + result.stderr


def test_rollover_old_and_new_issuer_verify_crl_and_ocsp(home: Path, tmp_path: Path) -> None:
    ca = home / "ca"
    old_pem, old = issue(home, tmp_path, "alice")
    gone_pem, gone = issue(home, tmp_path, "bob")

    out = rollover(home)
    assert "issuing-g2" in out
    new_issuer = x509.load_pem_x509_certificate((ca / "issuing-g2.pem").read_bytes())
    first = x509.load_pem_x509_certificate((ca / "issuing.pem").read_bytes())
    assert new_issuer.subject != first.subject and new_issuer.public_key() != first.public_key()
    new_pem, new = issue(home, tmp_path, "carol")
    revoked_new_pem, revoked_new = issue(home, tmp_path, "dave")
    assert new.issuer == new_issuer.subject and old.issuer == first.subject
    # Each certificate names its own issuer's CRL and certificate.
    old_crl, old_aia = urls_of(old)
    new_crl, new_aia = urls_of(new)
    assert old_aia.endswith("/ca/issuing.crt") and new_aia.endswith("/ca/issuing-g2.crt")
    assert "/crl/issuing-g2-" in new_crl and "/crl/issuing-g2-" not in old_crl

    # ca chain: both issuing CAs and the root; openssl verifies certificates of both.
    chain = tmp_path / "chain.pem"
    result = mailpki("ca", "chain", "--home", home)
    assert result.code == 0, result.err
    chain.write_text(result.out)
    assert result.out.count("BEGIN CERTIFICATE") == 3
    for pem in (old_pem, new_pem):
        verified = openssl(
            "verify", "-purpose", "smimesign", "-CAfile", ca / "root.pem",
            "-untrusted", chain, pem,
        )  # fmt: skip
        assert verified.stdout.strip().endswith("OK")

    # Revocations land on the CRL of the issuer that signed the certificate.
    for serial in (gone.serial_number, revoked_new.serial_number):
        result = mailpki("ca", "revoke", "--home", home, f"{serial:X}", "--reason", "superseded")
        assert result.code == 0, result.err
    cdp = tmp_path / "cdp"
    result = mailpki("ca", "crl", "--home", home, "--out", cdp)
    assert result.code == 0, result.err
    names = sorted(p.name for p in cdp.iterdir())
    assert {"issuing.crl", "issuing-g2.crl", "root.crl"} <= set(names)
    assert new_crl.rsplit("/", 1)[1] in names and old_crl.rsplit("/", 1)[1] in names
    for name, issuer, revoked, other in (
        ("issuing.crl", ca / "issuing.pem", gone, revoked_new),
        ("issuing-g2.crl", ca / "issuing-g2.pem", revoked_new, gone),
    ):
        checked = openssl("crl", "-inform", "DER", "-in", cdp / name, "-CAfile", issuer, "-noout")
        assert "verify OK" in checked.stdout + checked.stderr
        crl = x509.load_der_x509_crl((cdp / name).read_bytes())
        assert crl.get_revoked_certificate_by_serial_number(revoked.serial_number) is not None
        assert crl.get_revoked_certificate_by_serial_number(other.serial_number) is None
    # The CRL signed by the wrong issuer does not verify.
    wrong = openssl(
        "crl", "-inform", "DER", "-in", cdp / "issuing-g2.crl", "-CAfile", ca / "issuing.pem",
        "-noout", check=False,
    )  # fmt: skip
    assert "verify OK" not in wrong.stdout + wrong.stderr

    # OCSP over HTTP: each issuer's certificates are answered and signed for that issuer.
    with serving(home) as url:
        out = ocsp(home, url, old_pem, ca / "issuing.pem", chain)
        assert "Response verify OK" in out and f"{old_pem}: good" in out, out
        out = ocsp(home, url, gone_pem, ca / "issuing.pem", chain)
        assert "Response verify OK" in out and f"{gone_pem}: revoked" in out, out
        out = ocsp(home, url, new_pem, ca / "issuing-g2.pem", chain)
        assert "Response verify OK" in out and f"{new_pem}: good" in out, out
        out = ocsp(home, url, revoked_new_pem, ca / "issuing-g2.pem", chain)
        assert "Response verify OK" in out and f"{revoked_new_pem}: revoked" in out, out
        # A new certificate asked about under the old issuer is not that issuer's.
        out = ocsp(home, url, new_pem, ca / "issuing.pem", chain)
        assert ": good" not in out, out
        # The CDP and AIA of the new certificate resolve to its issuer's CRL and certificate.
        local = new_crl.replace(new_crl.split("/crl/")[0], url)
        with urllib.request.urlopen(local) as response:
            crl = x509.load_der_x509_crl(response.read())
        assert crl.is_signature_valid(new_issuer.public_key())  # type: ignore[arg-type]
        with urllib.request.urlopen(f"{url}/ca/issuing-g2.crt") as response:
            assert x509.load_der_x509_certificate(response.read()) == new_issuer
        with urllib.request.urlopen(f"{url}/ca/issuing.crt") as response:
            assert x509.load_der_x509_certificate(response.read()) == first
        # The certificate directory publishes both and names each one's own issuer (.p7c).
        root = x509.load_pem_x509_certificate((ca / "root.pem").read_bytes())
        for person, cert, issuer in (("alice", old, first), ("carol", new, new_issuer)):
            with urllib.request.urlopen(f"{url}/certs/{person}@example.com.p7c") as response:
                bundle = tmp_path / f"{person}.p7c"
                bundle.write_bytes(response.read())
            printed = openssl("pkcs7", "-in", bundle, "-inform", "DER", "-print_certs").stdout
            assert set(x509.load_pem_x509_certificates(printed.encode())) == {cert, issuer, root}

    # A second rollover: three generations, all still chaining to the root.
    assert "issuing-g3" in rollover(home)
    third_pem, third = issue(home, tmp_path, "erin")
    result = mailpki("ca", "chain", "--home", home)
    chain.write_text(result.out)
    assert result.out.count("BEGIN CERTIFICATE") == 4
    for pem in (old_pem, new_pem, third_pem):
        openssl("verify", "-CAfile", ca / "root.pem", "-untrusted", chain, pem)
    g3 = x509.load_pem_x509_certificate((ca / "issuing-g3.pem").read_bytes())
    assert third.issuer == g3.subject

    # Audited, and the log still verifies.
    instance = Instance.open(home)
    try:
        with instance.db.session() as session:
            events = session.scalars(
                select(AuditRecord.event).where(AuditRecord.event == "ca.issuing_rolled_over")
            ).all()
        assert len(events) == 2
    finally:
        instance.close()
    assert mailpki("audit", "verify", "--home", home).code == 0


def test_rollover_needs_the_root_key(home: Path, tmp_path: Path) -> None:
    assert mailpki("ca", "root", "remove", "--home", home, "--yes").code == 0
    result = mailpki("ca", "issuing", "rollover", "--home", home)
    assert result.code != 0
    assert "root key is offline" in result.err
    assert len(result.err.strip().splitlines()) == 1, result.err
    assert not (home / "ca" / "issuing-g2.pem").exists()
    assert not (home / "keys" / "issuing-g2.pem").exists()
    # Nothing changed: certificates still come from the first issuing CA.
    _, cert = issue(home, tmp_path, "frank")
    first = x509.load_pem_x509_certificate((home / "ca" / "issuing.pem").read_bytes())
    assert cert.issuer == first.subject


def test_renew_after_rollover_is_refused(home: Path) -> None:
    rollover(home)
    result = mailpki("ca", "issuing", "renew", "--home", home)
    assert result.code != 0 and "rollover" in result.err


def test_mail_signed_before_the_rollover_still_verifies(home: Path, tmp_path: Path) -> None:
    """A message signed with a certificate of the old issuer, checked by the toolkit after
    the rollover (its CRL and OCSP come from the old issuer); and one of the new issuer."""
    password = tmp_path / "pw"
    password.write_text("correct horse battery staple\n")
    message = tmp_path / "note.eml"
    message.write_bytes(
        b"From: alice@example.com\r\nTo: bob@example.com\r\nSubject: hi\r\n\r\nhello\r\n"
    )

    def enroll(name: str) -> Path:
        p12 = tmp_path / f"{name}.p12"
        result = mailpki(
            "enroll", "--home", home, "--email", f"{name}@example.com",
            "--name", f"{name.title()} Smith", "--out", p12, "--password-file", password,
        )  # fmt: skip
        assert result.code == 0, result.err
        return p12

    before = tmp_path / "alice-signed.eml"
    result = mailpki(
        "mail", "sign", "--p12", enroll("alice"), "--password-file", password, message, before
    )
    assert result.code == 0, result.err
    rollover(home)
    # The new issuer's certificate signs with the real openssl (a second, outside signer).
    key, cert, after = tmp_path / "bob.key", tmp_path / "bob.pem", tmp_path / "bob-signed.eml"
    p12 = enroll("bob")
    openssl("pkcs12", "-in", p12, "-passin", f"file:{password}", "-nodes", "-nocerts", "-out", key)
    openssl(
        "pkcs12", "-in", p12, "-passin", f"file:{password}", "-clcerts", "-nokeys", "-out", cert
    )
    body = tmp_path / "body.txt"
    body.write_bytes(b"Content-Type: text/plain\r\n\r\nhello\r\n")
    signed = tmp_path / "bob-openssl.eml"
    openssl("cms", "-sign", "-in", body, "-signer", cert, "-inkey", key, "-out", signed)
    # The outer headers are not signed; the sender's address must be the signer's.
    after.write_bytes(
        b"From: bob@example.com\r\nTo: alice@example.com\r\nSubject: hi\r\n" + signed.read_bytes()
    )
    for signed in (before, after):
        result = mailpki("mail", "verify", signed, "--home", home, "--require-revocation")
        assert result.code == 0, result.out + result.err
        assert any(line.strip() == "VALID" for line in result.out.splitlines()), result.out


def test_rollover_with_ca_keys_in_a_softhsm_token(
    softhsm_token: SoftHSMToken, tmp_path: Path
) -> None:
    """The new issuing key is generated in the token (no key file appears); certificates
    of both generations verify, and each CRL is signed by its own CA's token key."""
    home = tmp_path / "hsm"
    result = mailpki(
        "init", "--home", home, "--org", "HSM Corp", "--domain", "example.com",
        "--org-id", "NTRGB-87654321", "--ca-key-type", "p256",
        "--pkcs11-module", softhsm_token.module, "--pkcs11-token", softhsm_token.label,
        "--pkcs11-pin-file", softhsm_token.pin_file, "--recovery-oaep-hash", "sha1",
    )  # fmt: skip
    assert result.code == 0, result.err
    keys = home / "keys"
    files_before = sorted(p.name for p in keys.iterdir()) if keys.exists() else []
    old_pem, old = issue(home, tmp_path, "alice")
    assert "issuing-g2" in rollover(home)
    files_after = sorted(p.name for p in keys.iterdir()) if keys.exists() else []
    assert files_after == files_before  # the new key is in the token, not on disk
    new_pem, new = issue(home, tmp_path, "bob")
    ca = home / "ca"
    g2 = x509.load_pem_x509_certificate((ca / "issuing-g2.pem").read_bytes())
    assert new.issuer == g2.subject
    chain = tmp_path / "chain.pem"
    chain.write_text(mailpki("ca", "chain", "--home", home).out)
    for pem in (old_pem, new_pem):
        openssl("verify", "-CAfile", ca / "root.pem", "-untrusted", chain, pem)
    for cert in (old, new):
        result = mailpki(
            "ca", "revoke", "--home", home, f"{cert.serial_number:X}", "--reason", "superseded"
        )
        assert result.code == 0, result.err
    cdp = tmp_path / "cdp"
    assert mailpki("ca", "crl", "--home", home, "--out", cdp).code == 0
    for name, issuer in (("issuing.crl", "issuing.pem"), ("issuing-g2.crl", "issuing-g2.pem")):
        openssl("crl", "-inform", "DER", "-in", cdp / name, "-CAfile", ca / issuer, "-noout")
    assert mailpki("audit", "verify", "--home", home).code == 0


def test_certificate_of_the_new_issuer_passes_pkilint(sqlite_home: Path, tmp_path: Path) -> None:
    rollover(sqlite_home)
    out, cert = issue(sqlite_home, tmp_path, "lint")
    g2 = x509.load_pem_x509_certificate((sqlite_home / "ca" / "issuing-g2.pem").read_bytes())
    assert cert.issuer == g2.subject
    checked = subprocess.run(
        [pkilint_cli(), "lint", "-d", "-s", "WARNING", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
