"""The public certificate directory: lookups, downloads, hostile input, rate limit, headers."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from starlette.testclient import TestClient

from mailpki.web.certdir import HTML_CSP, RateLimiter, normalize_mail
from mailpki.web.pki import create_pki_app

NOW = datetime.now(UTC)
ALICE = "alice@example.com"
HOSTILE_NAME = '<script>alert(1)</script> & "Smith"'


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(
    cn: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_name, signer = (issuer[0].subject, issuer[1]) if issuer else (_name(cn), key)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=10))
        .not_valid_after(NOW + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(signer, hashes.SHA256())
    )
    return cert, key


ROOT = _ca("Test Root")
ISSUING = _ca("Test Issuing", ROOT)
OTHER_ISSUING = _ca("Test Issuing", _ca("Other Root"))  # same name, other key


def leaf(
    mail: str = ALICE,
    *,
    cn: str = "Alice Smith",
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] = ISSUING,
    not_after: datetime | None = None,
    eku: x509.ObjectIdentifier = ExtendedKeyUsageOID.EMAIL_PROTECTION,
    encrypts: bool = True,
    san: str | None = None,
) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    usage = {
        "digital_signature": True,
        "content_commitment": False,
        "key_encipherment": False,
        "data_encipherment": False,
        "key_agreement": encrypts,
        "key_cert_sign": False,
        "crl_sign": False,
        "encipher_only": False,
        "decipher_only": False,
    }
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer[0].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=400))
        .not_valid_after(not_after or NOW + timedelta(days=300))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(**usage), critical=True)
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(san or mail)]), critical=False)
        .sign(issuer[1], hashes.SHA256())
    )
    return cert.public_bytes(Encoding.DER)


@dataclass
class FakeSource:
    """Answers as the CA would: the certificates it considers valid, newest first."""

    certificates: dict[str, list[bytes]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    fail: bool = False

    def valid_certificates(self, mail: str) -> list[bytes]:
        self.calls.append(mail)
        if self.fail:
            raise RuntimeError("secret internal detail")
        return self.certificates.get(mail, [])

    def ca_certificate(self, name: str) -> bytes | None:
        certs = {"root.crt": ROOT[0], "issuing.crt": ISSUING[0]}
        return certs[name].public_bytes(Encoding.DER) if name in certs else None

    def crl(self, name: str) -> bytes | None:
        return b"CRL" if name == "issuing.crl" else None

    def ocsp(self, request_der: bytes) -> bytes:
        return bytes.fromhex("30030a0101")


Env = tuple[TestClient, FakeSource]


@pytest.fixture(params=[False, True], ids=["inline", "threadpool"])
def env(request: pytest.FixtureRequest) -> Env:
    source = FakeSource()
    app = create_pki_app(source, blocking_source=request.param, certdir_rate_per_minute=6000)
    return TestClient(app, raise_server_exceptions=False), source


def serial_of(der: bytes) -> str:
    return format(x509.load_der_x509_certificate(der).serial_number, "X")


def test_page_lists_the_certificates_escaped(env: Env) -> None:
    client, source = env
    newest, older = leaf(cn=HOSTILE_NAME), leaf()
    source.certificates[ALICE] = [newest, older]
    r = client.get("/certs", params={"mail": ALICE})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    page = r.text
    assert "<script>" not in page and "alert(1)</script>" not in page
    # RFC 4514 escapes '<', '>' and '"' with a backslash; HTML escaping comes on top.
    assert r"CN=\&lt;script\&gt;alert(1)\&lt;/script\&gt; &amp; \&quot;Smith\&quot;" in page
    assert "2 valid certificates" in page
    for der in (newest, older):
        cert = x509.load_der_x509_certificate(der)
        serial = serial_of(der)
        assert serial in page
        assert cert.fingerprint(hashes.SHA256()).hex(":").upper() in page
        assert f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC" in page
        for ext in ("pem", "cer", "p7c"):
            assert f'href="certs/alice@example.com.{ext}?serial={serial}"' in page
    assert page.index(serial_of(newest)) < page.index(serial_of(older))
    assert "signing and encryption" in page
    # No script, no external resource: the only URLs are relative links and the form.
    assert "<script" not in page.lower() and "http" not in page
    assert re.findall(r'(?:href|src|action)="([^"]*)"', page)
    assert all(u.startswith("certs") for u in re.findall(r'(?:href|src|action)="([^"]*)"', page))


def test_lookup_is_case_insensitive_and_trimmed(env: Env) -> None:
    client, source = env
    source.certificates[ALICE] = [leaf()]
    r = client.get("/certs", params={"mail": "  Alice@Example.COM "})
    assert r.status_code == 200
    assert source.calls == [ALICE]
    r = client.get("/certs/ALICE@example.com.pem")
    assert r.status_code == 200
    assert source.calls[-1] == ALICE


def test_form_without_a_mail(env: Env) -> None:
    client, source = env
    for url in ("/certs", "/certs?mail=", "/certs?mail=%20"):
        r = client.get(url)
        assert r.status_code == 200
        assert '<form method="get" action="certs"' in r.text
    assert source.calls == []


def test_no_certificate_is_404(env: Env) -> None:
    client, _ = env
    r = client.get("/certs", params={"mail": "nobody@example.com"})
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("text/html")
    assert "No valid certificate for <strong>nobody@example.com</strong>" in r.text
    assert r.headers["cache-control"] == "no-store"
    for ext in ("pem", "cer", "p7c"):
        assert client.get(f"/certs/nobody@example.com.{ext}").status_code == 404


@pytest.mark.parametrize(
    "mail",
    [
        "<script>alert(1)</script>@example.com",
        "alice@<script>.com",
        "a/b@example.com",
        "../../etc/passwd",
        "..@example.com",
        "a..b@example.com",
        ".alice@example.com",
        "alice@example..com",
        "alice\x00@example.com",
        "alice\r\nSet-Cookie: x=1@example.com",
        "alice@b@example.com",
        "alice",
        "alice@example",
        '"alice smith"@example.com',
        "alicé@example.com",
        "a" * 243 + "@example.com",  # 255 characters
    ],
)
def test_invalid_mail_is_400_and_not_reflected(env: Env, mail: str) -> None:
    client, source = env
    r = client.get("/certs", params={"mail": mail})
    assert r.status_code == 400
    assert "<script>" not in r.text and "passwd" not in r.text and "Set-Cookie" not in r.text
    assert "not a plain mail address" in r.text
    assert source.calls == []


def test_longest_address_is_accepted(env: Env) -> None:
    client, source = env
    mail = "a" * 63 + "@" + ".".join(["b" * 60] * 3) + ".example"
    assert len(mail) == 254
    assert client.get("/certs", params={"mail": mail}).status_code == 404
    assert source.calls == [mail]


@pytest.mark.parametrize(
    "path",
    [
        "/certs/..%2F..%2Fetc%2Fpasswd",
        "/certs/..%2Fconfig.toml.pem",
        "/certs/%2e%2e%2f%2e%2e%2fsecrets%2fca-passphrase.pem",
        "/certs/alice@example.com%2F..%2Fbob@example.com.pem",
        "/certs/alice@example.com/../x.pem",
        "/certs/..%5Croot.key.pem",
        "/certs/alice%00@example.com.pem",
        "/certs/a..b@example.com.pem",
        "/certs/%3Cscript%3E@example.com.pem",
        "/certs/alice@example.com.pem?serial=zz",
        "/certs/alice@example.com.pem?serial=" + "A" * 41,
        "/certs/" + "a" * 300 + "@example.com.pem",
    ],
)
def test_traversal_and_bad_names_are_400(env: Env, path: str) -> None:
    client, source = env
    r = client.get(path)
    assert r.status_code == 400
    assert r.text == "bad request"
    assert source.calls == []


def test_line_breaks_never_reach_the_source(env: Env) -> None:
    client, source = env
    # The path converter does not match a newline: Starlette answers 404 itself.
    assert client.get("/certs/alice%0d%0a@example.com.pem").status_code in (400, 404)
    assert client.get("/certs/alice%0d@example.com.pem").status_code == 400
    assert source.calls == []


def test_unknown_extension_is_404(env: Env) -> None:
    client, source = env
    source.certificates[ALICE] = [leaf()]
    for path in ("/certs/alice@example.com.key", "/certs/alice@example.com.p12"):
        assert client.get(path).status_code == 404
    assert source.calls == []


def test_downloads(env: Env) -> None:
    client, source = env
    der = leaf()
    source.certificates[ALICE] = [der]
    r = client.get("/certs/alice@example.com.pem")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-pem-file"
    assert r.headers["content-disposition"] == 'attachment; filename="alice@example.com.pem"'
    assert x509.load_pem_x509_certificate(r.content).public_bytes(Encoding.DER) == der
    r = client.get("/certs/alice@example.com.cer")
    assert r.headers["content-type"] == "application/pkix-cert"
    assert r.headers["content-disposition"] == 'attachment; filename="alice@example.com.cer"'
    assert r.content == der
    r = client.get("/certs/alice@example.com.p7c")
    assert r.headers["content-type"] == "application/pkcs7-mime; smime-type=certs-only"
    assert r.headers["content-disposition"] == 'attachment; filename="alice@example.com.p7c"'
    chain = pkcs7.load_der_pkcs7_certificates(r.content)  # a SET: the order is not kept
    assert set(chain) == {x509.load_der_x509_certificate(der), ISSUING[0], ROOT[0]}


def test_download_prefers_the_newest_that_encrypts(env: Env) -> None:
    client, source = env
    signing, encryption, older = leaf(encrypts=False), leaf(), leaf()
    source.certificates[ALICE] = [signing, encryption, older]
    assert client.get("/certs/alice@example.com.cer").content == encryption
    # A listed certificate can be fetched by its serial; an unlisted serial is 404.
    r = client.get(f"/certs/alice@example.com.cer?serial={serial_of(older).lower()}")
    assert r.content == older
    assert "signing" in client.get("/certs", params={"mail": ALICE}).text
    assert client.get("/certs/alice@example.com.cer?serial=ABCDEF").status_code == 404
    # Only signing certificates: the newest of them.
    source.certificates[ALICE] = [signing]
    assert client.get("/certs/alice@example.com.cer").content == signing


def test_only_certificates_that_check_out_are_published(env: Env) -> None:
    """Whatever the source returns, expired, foreign or non-S/MIME ones are not shown."""
    client, source = env
    good = leaf()
    bad = [
        leaf(not_after=NOW - timedelta(days=1)),  # expired
        leaf(issuer=OTHER_ISSUING),  # same issuer name, other key
        leaf(eku=ExtendedKeyUsageOID.CLIENT_AUTH),  # not for mail
        leaf(san="mallory@example.com"),  # for another address
        b"not a certificate",
    ]
    source.certificates[ALICE] = [*bad, good]
    page = client.get("/certs", params={"mail": ALICE}).text
    assert "1 valid certificate " in page
    assert serial_of(good) in page
    assert not any(serial_of(d) in page for d in bad[:-1])
    assert client.get("/certs/alice@example.com.cer").content == good
    source.certificates[ALICE] = bad
    assert client.get("/certs", params={"mail": ALICE}).status_code == 404
    assert client.get("/certs/alice@example.com.pem").status_code == 404


def test_source_failure_is_a_plain_500(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    client, source = env
    source.fail = True
    for url in ("/certs?mail=alice@example.com", "/certs/alice@example.com.pem"):
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="mailpki.web.certdir"):
            r = client.get(url)
        assert r.status_code == 500
        assert r.text == "internal error"
        # The reason goes to the log, not to the page.
        [record] = [x for x in caplog.records if x.name == "mailpki.web.certdir"]
        assert record.levelno == logging.ERROR
        assert record.getMessage() == "certificate directory source failed"
        assert record.exc_info is not None and record.exc_info[0] is RuntimeError
        assert "RuntimeError: secret internal detail" in logging.Formatter().format(record)


def _security_headers(r: object) -> None:
    headers = r.headers  # type: ignore[attr-defined]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-frame-options"] == "DENY"


def test_security_headers(env: Env) -> None:
    client, source = env
    source.certificates[ALICE] = [leaf()]
    for url in ("/certs", "/certs?mail=alice@example.com", "/certs?mail=x", "/certs?mail=a@b.c"):
        r = client.get(url)
        _security_headers(r)
        assert r.headers["content-security-policy"] == HTML_CSP
        assert "noindex" in r.headers["x-robots-tag"]
    assert client.get("/certs?mail=alice@example.com").headers["cache-control"] == (
        "public, max-age=60"
    )
    for url in ("/certs/alice@example.com.pem", "/certs/x@y.z.pem", "/certs/..%2Fx.pem"):
        _security_headers(client.get(url))
    # The middleware adds them to the other endpoints and keeps their own headers.
    r = client.get("/crl/issuing.crl")
    _security_headers(r)
    assert r.headers["content-type"] == "application/pkix-crl"
    assert r.headers["cache-control"] == "public, max-age=300"
    r = client.post("/ocsp", content=b"REQ", headers={"content-type": "application/ocsp-request"})
    _security_headers(r)
    assert r.headers["cache-control"] == "no-store"
    assert r.headers.get_list("x-frame-options") == ["DENY"]  # not doubled
    _security_headers(client.get("/nothing"))


def test_rate_limit_429_after_the_burst() -> None:
    source = FakeSource()
    client = TestClient(create_pki_app(source))  # 30/minute, burst 10
    for _ in range(10):
        assert client.get("/certs", params={"mail": ALICE}).status_code == 404
    r = client.get("/certs/alice@example.com.pem")
    assert r.status_code == 429
    assert r.headers["retry-after"] == "2"  # one token every 2 s at 30/minute
    assert r.headers["cache-control"] == "no-store"
    _security_headers(r)
    assert client.get("/certs?mail=<script>").status_code == 429  # limited before parsing
    assert len(source.calls) == 10
    # Other endpoints are not limited.
    assert client.get("/health").status_code == 200


def test_directory_can_be_turned_off() -> None:
    source = FakeSource()
    client = TestClient(create_pki_app(source, certdir_rate_per_minute=0))
    assert client.get("/certs", params={"mail": ALICE}).status_code == 404
    assert client.get("/certs/alice@example.com.pem").status_code == 404
    assert source.calls == []


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_limiter_refills_per_client() -> None:
    clock = Clock()
    limiter = RateLimiter(30, 3, clock=clock)
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(2.0)
    assert limiter.take("b") == 0.0  # buckets are per client
    clock.now += 1.0
    assert limiter.take("a") == pytest.approx(1.0)  # half a token so far
    clock.now += 1.0
    assert limiter.take("a") == 0.0
    clock.now += 3600
    assert [limiter.take("a") for _ in range(4)][-2:] == [0.0, pytest.approx(2.0)]  # burst cap


def test_rate_limiter_memory_is_bounded() -> None:
    clock = Clock()
    limiter = RateLimiter(60, 2, clock=clock, max_clients=10)
    limiter.take("spent")
    limiter.take("spent")
    for i in range(8):
        limiter.take(f"idle{i}")
    clock.now += 1.0  # the idle buckets are full again, "spent" holds one token
    limiter.take("new1")
    limiter.take("new2")  # the 11th client: refilled buckets are forgotten first
    assert set(limiter._buckets) == {"spent", "new1", "new2"}
    assert limiter.take("spent") == 0.0
    assert limiter.take("spent") > 0
    # A flood of distinct addresses: never more than max_clients buckets.
    for i in range(1000):
        limiter.take(f"10.0.{i // 256}.{i % 256}")
        assert len(limiter._buckets) <= 10
    with pytest.raises(ValueError):
        RateLimiter(0, 10)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Alice.Smith@Example.COM", "alice.smith@example.com"),
        ("o'brien+tag@mail.example.co.uk", "o'brien+tag@mail.example.co.uk"),
        ("a@b.c", "a@b.c"),
        ("a@-b.com", None),
        ("a@b-.com", None),
        ("alice@example.com.", None),
        ("alice@example.com\n", None),
        (" alice@example.com", None),
        ("", None),
    ],
)
def test_normalize_mail(text: str, expected: str | None) -> None:
    assert normalize_mail(text) == expected
