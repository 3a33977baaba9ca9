"""CRLs and OCSP responses checked by the real OpenSSL, over a real HTTP server.

Builds a throwaway root -> issuing CA -> {OCSP responder, S/MIME end entities}
with P-256 keys, a partitioned CRL whose IssuingDistributionPoint equals the
end entities' CRL distribution point, and serves the PKI app with uvicorn.
"""

from __future__ import annotations

import base64
import datetime as dt
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mailpki.ca.crl import RevokedEntry, build_crl
from mailpki.ca.ocsp import CertStatus, OCSPResponder
from mailpki.web.pki import create_pki_app

pytestmark = pytest.mark.integration

OPENSSL = shutil.which("openssl") or ""
if not OPENSSL:  # pragma: no cover - the CI test command installs it
    pytest.skip("openssl is not installed", allow_module_level=True)

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
CDP = "http://pki.example.test/crl/issuing-1.crl"
PEM = serialization.Encoding.PEM
DER = serialization.Encoding.DER


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mailpki test"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _ca_cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
) -> x509.Certificate:
    issuer_name = issuer.subject if issuer else _name(subject)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=3650))
        .add_extension(
            x509.BasicConstraints(ca=True, path_length=None if issuer is None else 0), critical=True
        )
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        b = b.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    return b.sign(issuer_key, hashes.SHA256())


def _leaf(
    builder: x509.CertificateBuilder,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey,
    serial: int,
) -> x509.Certificate:
    return (
        builder.issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(NOW - dt.timedelta(hours=1))
        .not_valid_after(NOW + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
        .sign(issuer_key, hashes.SHA256())
    )


def _smime(
    mail: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey,
    serial: int,
) -> x509.Certificate:
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, mail)]))
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(mail)]), critical=False)
        .add_extension(
            # digitalSignature only: an ECDSA key does no key encipherment.
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
        .add_extension(
            x509.CRLDistributionPoints(
                [x509.DistributionPoint([x509.UniformResourceIdentifier(CDP)], None, None, None)]
            ),
            critical=False,
        )
    )
    return _leaf(b, key, issuer, issuer_key, serial)


@dataclass
class PKIFixture:
    dir: Path
    root: x509.Certificate
    issuing: x509.Certificate
    issuing_key: ec.EllipticCurvePrivateKey
    responder: OCSPResponder
    statuses: dict[int, CertStatus]
    files: dict[str, Path] = field(default_factory=dict)
    crls: dict[str, bytes] = field(default_factory=dict)

    # PKISource
    def crl(self, name: str) -> bytes | None:
        return self.crls.get(name)

    def ca_certificate(self, name: str) -> bytes | None:
        return {
            "root.crt": self.root.public_bytes(DER),
            "issuing.crt": self.issuing.public_bytes(DER),
            "chain.pem": self.issuing.public_bytes(PEM) + self.root.public_bytes(PEM),
        }.get(name)

    def ocsp(self, request_der: bytes) -> bytes:
        return self.responder.respond(request_der)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKIFixture:
    d = tmp_path_factory.mktemp("pki")
    root_key, issuing_key, resp_key, ee_key = _key(), _key(), _key(), _key()
    root = _ca_cert("Test Root CA", root_key, None, root_key)
    issuing = _ca_cert("Test Issuing CA", issuing_key, root, root_key)
    resp_builder = (
        x509.CertificateBuilder()
        .subject_name(_name("Test OCSP Responder"))
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
        .add_extension(x509.OCSPNoCheck(), critical=False)
    )
    responder_cert = _leaf(resp_builder, resp_key, issuing, issuing_key, 0x0C5B)
    good = _smime("alice@example.test", ee_key, issuing, issuing_key, 0x1001)
    revoked = _smime("bob@example.test", ee_key, issuing, issuing_key, 0x1002)
    unknown = _smime("mallory@example.test", ee_key, issuing, issuing_key, 0x1003)

    # A CA we do not serve, with a cert of the same serial as "good".
    other_key = _key()
    other_ca = _ca_cert("Other CA", other_key, None, other_key)
    foreign = _smime("eve@example.test", ee_key, other_ca, other_key, 0x1001)

    revoked_at = NOW - dt.timedelta(minutes=30)
    statuses = {
        0x1001: CertStatus("good"),
        0x1002: CertStatus("revoked", revoked_at, x509.ReasonFlags.key_compromise),
    }
    responder = OCSPResponder(
        issuer=issuing,
        responder_cert=responder_cert,
        responder_key=resp_key,
        lookup=statuses.get,
        validity=dt.timedelta(hours=1),
    )
    t = PKIFixture(d, root, issuing, issuing_key, responder, statuses)

    partition = build_crl(
        issuer=issuing,
        key=issuing_key,
        entries=[RevokedEntry(0x1002, revoked_at, x509.ReasonFlags.key_compromise)],
        number=3,
        this_update=NOW - dt.timedelta(minutes=5),
        next_update=NOW + dt.timedelta(days=1),
        distribution_point=CDP,
    )
    wrong_partition = build_crl(
        issuer=issuing,
        key=issuing_key,
        entries=[],
        number=4,
        this_update=NOW - dt.timedelta(minutes=5),
        next_update=NOW + dt.timedelta(days=1),
        distribution_point="http://pki.example.test/crl/issuing-2.crl",
    )
    root_crl = build_crl(
        issuer=root,
        key=root_key,
        entries=[],
        number=1,
        this_update=NOW - dt.timedelta(minutes=5),
        next_update=NOW + dt.timedelta(days=30),
    )
    t.crls = {
        "issuing-1.crl": partition.public_bytes(DER),
        "issuing-2.crl": wrong_partition.public_bytes(DER),
        "root.crl": root_crl.public_bytes(DER),
    }
    for fname, obj in {
        "root.pem": root,
        "issuing.pem": issuing,
        "other.pem": other_ca,
        "good.pem": good,
        "revoked.pem": revoked,
        "unknown.pem": unknown,
        "foreign.pem": foreign,
    }.items():
        (d / fname).write_bytes(obj.public_bytes(PEM))
        t.files[fname] = d / fname
    for fname, der in t.crls.items():
        (d / fname).write_bytes(der)
        (d / (fname + ".pem")).write_bytes(x509.load_der_x509_crl(der).public_bytes(PEM))
        t.files[fname] = d / fname
    return t


@pytest.fixture(scope="module")
def server(pki: PKIFixture) -> Iterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_pki_app(pki), log_level="warning", lifespan="off")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [OPENSSL, *map(str, args)], capture_output=True, text=True, timeout=30, check=False
    )


# ---- CRLs --------------------------------------------------------------------------


def test_openssl_verifies_crl_signature(pki: PKIFixture) -> None:
    r = _openssl(
        "crl",
        "-in",
        pki.files["issuing-1.crl"],
        "-inform",
        "DER",
        "-CAfile",
        pki.files["issuing.pem"],
        "-noout",
    )
    assert r.returncode == 0, r.stderr
    assert "verify OK" in r.stdout + r.stderr
    text = _openssl(
        "crl", "-in", pki.files["issuing-1.crl"], "-inform", "DER", "-noout", "-text"
    ).stdout
    assert "Issuing Distribution Point: critical" in text
    assert CDP in text
    assert "Only User Certificates" in text
    assert "Key Compromise" in text
    assert "X509v3 CRL Number" in text and "3" in text


def _verify(pki: PKIFixture, cert: str, crl: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return _openssl(
        "verify",
        "-crl_check",
        *extra,
        "-CAfile",
        pki.files["root.pem"],
        "-untrusted",
        pki.files["issuing.pem"],
        "-CRLfile",
        pki.dir / (crl + ".pem"),
        "-purpose",
        "smimesign",
        pki.files[cert],
    )


def test_openssl_verify_with_partitioned_crl(pki: PKIFixture) -> None:
    ok = _verify(pki, "good.pem", "issuing-1.crl")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ": OK" in ok.stdout
    bad = _verify(pki, "revoked.pem", "issuing-1.crl")
    assert bad.returncode != 0
    assert "certificate revoked" in bad.stdout + bad.stderr


def test_openssl_crl_check_all_with_root_crl(pki: PKIFixture) -> None:
    both = pki.dir / "both.crl.pem"
    both.write_bytes(
        (pki.dir / "issuing-1.crl.pem").read_bytes() + (pki.dir / "root.crl.pem").read_bytes()
    )
    r = _openssl(
        "verify",
        "-crl_check_all",
        "-CAfile",
        pki.files["root.pem"],
        "-untrusted",
        pki.files["issuing.pem"],
        "-CRLfile",
        both,
        pki.files["good.pem"],
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_partition_with_other_idp_does_not_cover_the_cert(pki: PKIFixture) -> None:
    # The IDP must match the cert's CDP: a CRL for another partition is no answer.
    r = _verify(pki, "revoked.pem", "issuing-2.crl")
    assert r.returncode != 0
    assert "different CRL scope" in r.stdout + r.stderr


# ---- HTTP endpoints ----------------------------------------------------------------


def test_http_crl_and_ca(pki: PKIFixture, server: str) -> None:
    with httpx.Client(base_url=server) as c:
        r = c.get("/crl/issuing-1.crl")
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/pkix-crl"
        assert r.content == pki.crls["issuing-1.crl"]
        r = c.get("/ca/issuing.crt")
        assert x509.load_der_x509_certificate(r.content) == pki.issuing
        assert c.get("/health").text == "ok"


@pytest.mark.parametrize(
    "target",
    [
        b"/crl/../../etc/passwd",
        b"/crl/..%2f..%2fetc%2fpasswd",
        b"/crl/%2e%2e",
        b"/ca/root.crt%00",
        b"/crl/..\\..\\x.crl",
    ],
)
def test_raw_traversal_over_the_wire(server: str, target: bytes) -> None:
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    status = data.split(b"\r\n", 1)[0]
    assert b" 404 " in status or b" 400 " in status, data[:200]
    assert b"root:" not in data


# ---- OCSP with the real openssl client ---------------------------------------------


def _ocsp(
    pki: PKIFixture, server: str, cert: str, *extra: str, issuer: str = "issuing.pem"
) -> subprocess.CompletedProcess[str]:
    # openssl wants a CertID digest option (-sha256) before -cert.
    return _openssl(
        "ocsp",
        *extra,
        "-issuer",
        pki.files[issuer],
        "-cert",
        pki.files[cert],
        "-url",
        f"{server}/ocsp",
        "-CAfile",
        pki.files["root.pem"],
        "-resp_text",
    )


def test_openssl_ocsp_good(pki: PKIFixture, server: str) -> None:
    r = _ocsp(pki, server, "good.pem")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "Response verify OK" in out
    assert f"{pki.files['good.pem']}: good" in out
    assert "OCSP Nonce" in out  # openssl sent one and we echoed it
    assert "WARNING" not in out and "Nonce Verify error" not in out


def test_openssl_ocsp_revoked(pki: PKIFixture, server: str) -> None:
    r = _ocsp(pki, server, "revoked.pem")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "Response verify OK" in out
    assert f"{pki.files['revoked.pem']}: revoked" in out
    assert "Reason: keyCompromise" in out
    assert "Revocation Time:" in out
    assert "WARNING" not in out


def test_openssl_ocsp_unknown(pki: PKIFixture, server: str) -> None:
    r = _ocsp(pki, server, "unknown.pem")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "Response verify OK" in out
    assert f"{pki.files['unknown.pem']}: unknown" in out


def test_openssl_ocsp_sha256_certid_without_nonce(pki: PKIFixture, server: str) -> None:
    r = _ocsp(pki, server, "revoked.pem", "-sha256", "-no_nonce")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "Response verify OK" in out
    assert ": revoked" in out
    assert "OCSP Nonce" not in out


def test_openssl_ocsp_foreign_issuer_is_unauthorized(pki: PKIFixture, server: str) -> None:
    r = _ocsp(pki, server, "foreign.pem", issuer="other.pem")
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "unauthorized (6)" in out


def test_ocsp_get_and_revocation_visible_after_invalidate(pki: PKIFixture, server: str) -> None:
    good = x509.load_pem_x509_certificate(pki.files["good.pem"].read_bytes())
    req = ocsp.OCSPRequestBuilder().add_certificate(good, pki.issuing, hashes.SHA1()).build()
    url = "/ocsp/" + base64.b64encode(req.public_bytes(DER)).decode()
    with httpx.Client(base_url=server) as c:
        r1 = c.get(url)
        assert r1.headers["content-type"] == "application/ocsp-response"
        assert "max-age=60" in r1.headers["cache-control"]
        assert (
            ocsp.load_der_ocsp_response(r1.content).certificate_status is ocsp.OCSPCertStatus.GOOD
        )
        assert c.get(url).content == r1.content  # cached: same bytes
        pki.statuses[0x1001] = CertStatus("revoked", NOW, x509.ReasonFlags.superseded)
        try:
            pki.responder.invalidate(0x1001)
            r2 = c.get(url)
            assert (
                ocsp.load_der_ocsp_response(r2.content).certificate_status
                is ocsp.OCSPCertStatus.REVOKED
            )
        finally:
            pki.statuses[0x1001] = CertStatus("good")
            pki.responder.invalidate(0x1001)
