"""Trust decisions for S/MIME certificates: chain, validity, EKU, key usage, address,
and revocation through OCSP and CRLs served by an injected fetch."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from mailpki.errors import InputError
from mailpki.smime.trust import (
    CertificateVerdict,
    RevocationChecker,
    TrustAnchors,
    check_certificate,
    http_fetch,
)

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
DAY = dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)
DER = serialization.Encoding.DER
PEM = serialization.Encoding.PEM
EMAIL = ExtendedKeyUsageOID.EMAIL_PROTECTION
OCSP_URL = "http://ocsp.test/"
CRL_URL = "http://crl.test/issuing.crl"
ROOT_CRL_URL = "http://crl.test/root.crl"
EC_KEY = ec.generate_private_key(ec.SECP256R1())

Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _name(cn: str, email: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if email:
        attrs.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, email))
    return x509.Name(attrs)


def _ku(*bits: str) -> x509.KeyUsage:
    names = [
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    ]
    return x509.KeyUsage(**{n: n in bits for n in names})


def _ca(
    cn: str,
    key: Key,
    issuer: x509.Certificate | None,
    issuer_key: Key,
    *,
    cdp: str | None = None,
    not_after: dt.datetime = NOW + 3650 * DAY,
) -> x509.Certificate:
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer.subject if issuer else _name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - 30 * DAY)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ku("key_cert_sign", "crl_sign"), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        b = b.add_extension(x509.ExtendedKeyUsage([EMAIL]), critical=False).add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    if cdp:
        b = b.add_extension(_cdp(cdp), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _cdp(url: str) -> x509.CRLDistributionPoints:
    return x509.CRLDistributionPoints(
        [x509.DistributionPoint([x509.UniformResourceIdentifier(url)], None, None, None)]
    )


@dataclass
class PKI:
    root_key: Key
    root: x509.Certificate
    ca_key: Key
    ca: x509.Certificate
    rsa_key: rsa.RSAPrivateKey
    other_root_key: Key
    other_root: x509.Certificate
    other_ca_key: Key
    other_ca: x509.Certificate

    @property
    def anchors(self) -> TrustAnchors:
        return TrustAnchors((self.root,), (self.ca,))

    def leaf(
        self,
        email: str | None = "alice@example.com",
        *,
        key: Key = EC_KEY,
        eku: list[x509.ObjectIdentifier] | None = None,
        ku: tuple[str, ...] | None = None,
        not_before: dt.datetime = NOW - DAY,
        not_after: dt.datetime = NOW + 365 * DAY,
        subject_email: str | None = None,
        urls: bool = True,
        issuer: x509.Certificate | None = None,
        issuer_key: Key | None = None,
    ) -> x509.Certificate:
        issuer = issuer or self.ca
        issuer_key = issuer_key or self.ca_key
        if ku is None:
            usage = (
                "key_agreement"
                if isinstance(key, ec.EllipticCurvePrivateKey)
                else "key_encipherment"
            )
            ku = ("digital_signature", usage)
        b = (
            x509.CertificateBuilder()
            .subject_name(_name(email or "nobody", subject_email))
            .issuer_name(issuer.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_ku(*ku), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                critical=False,
            )
        )
        if eku is None:
            eku = [EMAIL]
        if eku:
            b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
        if email is not None:
            b = b.add_extension(
                x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False
            )
        if urls:
            b = b.add_extension(
                x509.AuthorityInformationAccess(
                    [
                        x509.AccessDescription(
                            AuthorityInformationAccessOID.OCSP,
                            x509.UniformResourceIdentifier(OCSP_URL),
                        )
                    ]
                ),
                critical=False,
            ).add_extension(_cdp(CRL_URL), critical=False)
        return b.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki() -> PKI:
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = _ca("Test Root", root_key, None, root_key)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _ca("Test Issuing CA", ca_key, root, root_key, cdp=ROOT_CRL_URL)
    other_root_key = ec.generate_private_key(ec.SECP256R1())
    other_root = _ca("Other Root", other_root_key, None, other_root_key)
    other_ca_key = ec.generate_private_key(ec.SECP256R1())
    other_ca = _ca("Test Issuing CA", other_ca_key, other_root, other_root_key)  # same name!
    rsa_key = rsa.generate_private_key(65537, 2048)
    return PKI(
        root_key, root, ca_key, ca, rsa_key, other_root_key, other_root, other_ca_key, other_ca
    )


# ---- a fake network: OCSP responder and CRLs ----------------------------------------


def _crl(
    issuer: x509.Certificate,
    key: Key,
    revoked: dict[int, tuple[x509.ReasonFlags, dt.datetime]] | None = None,
    *,
    this_update: dt.datetime = NOW - HOUR,
    next_update: dt.datetime = NOW + DAY,
) -> bytes:
    entries = [
        x509.RevokedCertificateBuilder()
        .serial_number(serial)
        .revocation_date(when)
        .add_extension(x509.CRLReason(reason), critical=False)
        .build()
        for serial, (reason, when) in (revoked or {}).items()
    ]
    b = (
        x509.CertificateRevocationListBuilder(revoked_certificates=entries)
        .issuer_name(issuer.subject)
        .last_update(this_update)
        .next_update(next_update)
    )
    return b.sign(key, hashes.SHA256()).public_bytes(DER)


@dataclass
class Responder:
    """An OCSP responder for the issuing CA, with knobs for every way to go wrong."""

    pki: PKI
    revoked: dict[int, tuple[x509.ReasonFlags, dt.datetime]] = field(default_factory=dict)
    unknown: set[int] = field(default_factory=set)
    signer: x509.Certificate | None = None  # default: the issuing CA itself
    signer_key: Key | None = None
    include: list[x509.Certificate] = field(default_factory=list)
    this_update: dt.datetime = NOW - HOUR
    next_update: dt.datetime | None = NOW + DAY
    issuer: x509.Certificate | None = None  # the CertID's issuer (default: the issuing CA)
    echo_nonce: bool = True
    corrupt: bool = False  # flip the signature's last byte
    certs: dict[int, x509.Certificate] = field(default_factory=dict)

    def __call__(self, data: bytes | None) -> bytes:
        assert data is not None
        request = ocsp.load_der_ocsp_request(data)
        cert = self.certs[request.serial_number]
        if request.serial_number in self.unknown:
            status, when, reason = ocsp.OCSPCertStatus.UNKNOWN, None, None
        elif request.serial_number in self.revoked:
            status = ocsp.OCSPCertStatus.REVOKED
            reason, when = self.revoked[request.serial_number]
        else:
            status, when, reason = ocsp.OCSPCertStatus.GOOD, None, None
        signer = self.signer or self.pki.ca
        b = (
            ocsp.OCSPResponseBuilder()
            .add_response(
                cert=cert,
                issuer=self.issuer or self.pki.ca,
                algorithm=hashes.SHA1(),
                cert_status=status,
                this_update=self.this_update,
                next_update=self.next_update,
                revocation_time=when,
                revocation_reason=reason,
            )
            .responder_id(ocsp.OCSPResponderEncoding.HASH, signer)
        )
        if self.include:
            b = b.certificates(self.include)
        if self.echo_nonce:
            b = b.add_extension(
                request.extensions.get_extension_for_class(x509.OCSPNonce).value, critical=False
            )
        der = b.sign(self.signer_key or self.pki.ca_key, hashes.SHA256()).public_bytes(DER)
        if self.corrupt:
            assert not self.include  # the signature is then the last field
            der = der[:-1] + bytes([der[-1] ^ 0x01])
        return der


@dataclass
class Net:
    handlers: dict[str, Callable[[bytes | None], bytes]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    def __call__(self, url: str, data: bytes | None, content_type: str) -> bytes:
        self.calls.append(url)
        if data is not None:
            assert content_type == "application/ocsp-request"
        handler = self.handlers.get(url)
        if handler is None:
            raise OSError("connection refused")
        return handler(data)

    def serve_crl(self, url: str, der: bytes) -> None:
        self.handlers[url] = lambda _data: der


@dataclass
class Clock:
    now: dt.datetime = NOW

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def net(pki: PKI) -> Net:
    n = Net()
    n.serve_crl(ROOT_CRL_URL, _crl(pki.root, pki.root_key))
    n.serve_crl(CRL_URL, _crl(pki.ca, pki.ca_key))
    return n


@pytest.fixture
def responder(pki: PKI, net: Net) -> Responder:
    r = Responder(pki)
    net.handlers[OCSP_URL] = r
    return r


def checker(net: Net, clock: Clock | None = None, /, **kwargs: object) -> RevocationChecker:
    return RevocationChecker(fetch=net, clock=clock or Clock(), **kwargs)  # type: ignore[arg-type]


def verdict(pki: PKI, cert: x509.Certificate, **kwargs: object) -> CertificateVerdict:
    args: dict[str, object] = {"purpose": "sign", "address": "alice@example.com", "at": NOW}
    args.update(kwargs)
    return check_certificate(cert, pki.anchors, **args)  # type: ignore[arg-type]


# ---- chain, validity, usage, address ------------------------------------------------


def test_a_good_signing_certificate(pki: PKI) -> None:
    cert = pki.leaf()
    v = verdict(pki, cert)
    assert v.valid and v.problems == ()
    assert v.chain == (cert, pki.ca, pki.root)
    assert v.revocation == "not-checked" and v.revocation_source == ""


def test_default_time_is_now(pki: PKI) -> None:
    assert check_certificate(pki.leaf(), pki.anchors, purpose="sign", address=None).valid


def test_ec_and_rsa_encryption_key_usage(pki: PKI) -> None:
    assert verdict(pki, pki.leaf(), purpose="encrypt").valid  # EC keyAgreement
    rsa_cert = pki.leaf(key=pki.rsa_key)
    assert verdict(pki, rsa_cert, purpose="encrypt").valid  # RSA keyEncipherment
    assert verdict(pki, rsa_cert, purpose="sign").valid

    signing_only = pki.leaf(ku=("digital_signature",))
    assert verdict(pki, signing_only, purpose="sign").valid
    assert verdict(pki, signing_only, purpose="encrypt").problems == (
        "the certificate's key usage does not allow encryption (keyAgreement)",
    )
    rsa_signing_only = pki.leaf(key=pki.rsa_key, ku=("content_commitment",))
    assert verdict(pki, rsa_signing_only, purpose="sign").valid  # nonRepudiation is enough
    assert verdict(pki, rsa_signing_only, purpose="encrypt").problems == (
        "the certificate's key usage does not allow encryption (keyEncipherment)",
    )
    encryption_only = pki.leaf(key=pki.rsa_key, ku=("key_encipherment",))
    assert verdict(pki, encryption_only, purpose="encrypt").valid
    assert verdict(pki, encryption_only, purpose="sign").problems == (
        "the certificate's key usage does not allow signing (digitalSignature)",
    )


def test_without_email_protection(pki: PKI) -> None:
    v = verdict(pki, pki.leaf(eku=[ExtendedKeyUsageOID.CLIENT_AUTH]))
    assert v.problems == (
        "the certificate is not for e-mail protection (extended key usage: clientAuth)",
    )
    assert v.chain[-1] == pki.root  # the chain itself is fine, and shown
    v = verdict(pki, pki.leaf(eku=[]))
    assert v.problems == (
        "the certificate has no extended key usage (emailProtection is required)",
    )


def test_wrong_address_and_case(pki: PKI) -> None:
    bob = pki.leaf("bob@example.com")
    v = verdict(pki, bob)
    assert v.problems == ("the certificate is for bob@example.com, not alice@example.com",)
    # The whole address is compared case-insensitively.
    assert verdict(pki, pki.leaf("Alice@Example.COM"), address="alice@example.com").valid
    assert verdict(pki, pki.leaf(), address="ALICE@EXAMPLE.com").valid
    assert verdict(pki, pki.leaf(), address=None).valid


def test_subject_email_only_without_san(pki: PKI) -> None:
    legacy = pki.leaf(None, subject_email="alice@example.com")
    assert verdict(pki, legacy).valid
    # With a SAN, the subject's emailAddress does not count.
    mixed = pki.leaf("bob@example.com", subject_email="alice@example.com")
    assert verdict(pki, mixed).problems == (
        "the certificate is for bob@example.com, not alice@example.com",
    )
    nothing = pki.leaf(None)
    assert verdict(pki, nothing).problems == (
        "the certificate names no mail address, not alice@example.com",
    )


def test_expired_and_not_yet_valid(pki: PKI) -> None:
    expired = pki.leaf(not_before=NOW - 400 * DAY, not_after=NOW - 2 * DAY)
    v = verdict(pki, expired)
    assert v.problems == (f"the certificate expired on {NOW - 2 * DAY:%Y-%m-%d %H:%M:%S} UTC",)
    assert v.chain == (expired, pki.ca, pki.root)
    # Valid when checked at a time inside its validity (e.g. an old signature).
    assert verdict(pki, expired, at=NOW - 10 * DAY).valid
    future = pki.leaf(not_before=NOW + DAY)
    assert verdict(pki, future).problems == (
        f"the certificate is not valid before {NOW + DAY:%Y-%m-%d %H:%M:%S} UTC",
    )


def test_expired_issuing_ca(pki: PKI) -> None:
    old_key = ec.generate_private_key(ec.SECP256R1())
    old_ca = _ca("Old CA", old_key, pki.root, pki.root_key, not_after=NOW - DAY)
    cert = pki.leaf(
        issuer=old_ca, issuer_key=old_key, not_before=NOW - 10 * DAY, not_after=NOW - 2 * DAY
    )
    cert2 = pki.leaf(issuer=old_ca, issuer_key=old_key, not_before=NOW - 10 * DAY)
    v = verdict(pki, cert2, extra_intermediates=[old_ca])
    assert any(p.startswith("the CA certificate Old CA expired on") for p in v.problems), v.problems
    assert not verdict(pki, cert, extra_intermediates=[old_ca]).valid


def test_no_chain_to_a_trusted_root(pki: PKI) -> None:
    foreign = pki.leaf(issuer=pki.other_ca, issuer_key=pki.other_ca_key)
    v = verdict(pki, foreign, extra_intermediates=[pki.other_ca])
    assert len(v.problems) == 1 and v.problems[0].startswith("no chain to a trusted root: ")
    assert v.chain == () and not v.valid
    # Trusting the other root makes it valid.
    anchors = TrustAnchors((pki.root, pki.other_root))
    ok = check_certificate(
        foreign, anchors, purpose="sign", address="alice@example.com",
        extra_intermediates=[pki.other_ca], at=NOW,
    )  # fmt: skip
    assert ok.valid and ok.chain == (foreign, pki.other_ca, pki.other_root)


def test_missing_intermediate_comes_from_the_message(pki: PKI) -> None:
    cert = pki.leaf()
    bare = TrustAnchors((pki.root,))
    v = check_certificate(cert, bare, purpose="sign", address=None, at=NOW)
    assert v.problems and v.problems[0].startswith("no chain to a trusted root")
    v = check_certificate(
        cert, bare, purpose="sign", address=None, at=NOW, extra_intermediates=[pki.ca]
    )
    assert v.valid


def test_trust_anchors_from_pem_files(pki: PKI, tmp_path: Path) -> None:
    chain = tmp_path / "chain.pem"
    chain.write_bytes(pki.ca.public_bytes(PEM) + pki.root.public_bytes(PEM))
    anchors = TrustAnchors.from_pem_files([chain])
    assert anchors.roots == (pki.root,) and anchors.intermediates == (pki.ca,)
    assert TrustAnchors.from_pem_files(chain) == anchors
    only_ca = tmp_path / "ca.pem"
    only_ca.write_bytes(pki.ca.public_bytes(PEM))
    with pytest.raises(InputError, match="self-signed root"):
        TrustAnchors.from_pem_files([only_ca])
    with pytest.raises(InputError, match="cannot read"):
        TrustAnchors.from_pem_files([tmp_path / "missing.pem"])
    junk = tmp_path / "junk.pem"
    junk.write_text("hello")
    with pytest.raises(InputError, match="no PEM certificate"):
        TrustAnchors.from_pem_files([junk])
    with pytest.raises(InputError):
        TrustAnchors(())


def test_bad_arguments_raise_input_error(pki: PKI) -> None:
    cert = pki.leaf()
    bad: list[dict[str, object]] = [
        {"purpose": "decrypt"},
        {"address": "no-at-sign"},
        {"address": "a b@example.com"},
        {"at": dt.datetime(2025, 1, 1)},  # naive
        {"require_revocation": True},  # without a checker
        {"extra_intermediates": ["not a certificate"]},
    ]
    for kwargs in bad:
        with pytest.raises(InputError):
            verdict(pki, cert, **kwargs)
    with pytest.raises(InputError):
        check_certificate(b"pem", pki.anchors, purpose="sign", address=None)  # type: ignore[arg-type]


# ---- revocation ---------------------------------------------------------------------


def test_ocsp_good(pki: PKI, net: Net, responder: Responder) -> None:
    cert = pki.leaf()
    responder.certs[cert.serial_number] = cert
    v = verdict(pki, cert, revocation=checker(net), require_revocation=True)
    assert v.valid, v.problems
    assert v.revocation == "good" and v.revocation_source == f"ocsp {OCSP_URL}"
    assert net.calls == [OCSP_URL, ROOT_CRL_URL]  # leaf by OCSP, issuing CA by the root's CRL


def test_ocsp_revoked(pki: PKI, net: Net, responder: Responder) -> None:
    cert = pki.leaf()
    responder.certs[cert.serial_number] = cert
    when = NOW - 3 * HOUR
    responder.revoked[cert.serial_number] = (x509.ReasonFlags.key_compromise, when)
    v = verdict(pki, cert, revocation=checker(net))
    assert v.revocation == "revoked"
    assert v.problems == (
        f"the certificate was revoked (keyCompromise) on {when:%Y-%m-%d %H:%M:%S} UTC"
        f" (ocsp {OCSP_URL})",
    )
    assert checker(net).status(cert, pki.ca) == ("revoked", f"ocsp {OCSP_URL}")


def test_benign_revocation_after_the_signing_time(pki: PKI, net: Net, responder: Responder) -> None:
    cert = pki.leaf(not_before=NOW - 30 * DAY)
    responder.certs[cert.serial_number] = cert
    responder.revoked[cert.serial_number] = (x509.ReasonFlags.superseded, NOW - DAY)
    rc = checker(net)
    assert verdict(pki, cert, revocation=rc, at=NOW - 10 * DAY).valid
    assert verdict(pki, cert, revocation=rc).revocation == "revoked"
    # A key compromise taints signatures made before it too.
    responder.revoked[cert.serial_number] = (x509.ReasonFlags.key_compromise, NOW - DAY)
    assert verdict(pki, cert, revocation=checker(net), at=NOW - 10 * DAY).revocation == "revoked"


def test_ocsp_unknown_falls_back_to_the_crl(pki: PKI, net: Net, responder: Responder) -> None:
    cert = pki.leaf()
    responder.certs[cert.serial_number] = cert
    responder.unknown.add(cert.serial_number)
    net.serve_crl(
        CRL_URL,
        _crl(pki.ca, pki.ca_key, {cert.serial_number: (x509.ReasonFlags.superseded, NOW - DAY)}),
    )
    result = checker(net).check(cert, pki.ca)
    assert (result.status, result.source, result.reason) == (
        "revoked",
        f"crl {CRL_URL}",
        "superseded",
    )
    # Neither knows it: unknown, and a problem only when revocation is required.
    net.handlers.pop(CRL_URL)
    v = verdict(pki, cert, revocation=checker(net))
    assert v.valid and v.revocation == "unknown" and v.revocation_source == ""
    v = verdict(pki, cert, revocation=checker(net), require_revocation=True)
    assert len(v.problems) == 1
    assert v.problems[0].startswith("the revocation status of the certificate is unknown: ")
    assert "does not know the certificate" in v.problems[0]
    assert "connection refused" in v.problems[0]


def test_ocsp_bad_signature(pki: PKI, net: Net, responder: Responder) -> None:
    cert = pki.leaf()
    responder.certs[cert.serial_number] = cert
    responder.corrupt = True
    result = checker(net, use_crl=False).check(cert, pki.ca)
    assert result.status == "unknown"
    assert "the response signature does not verify" in result.detail
    # The CRL still answers.
    assert checker(net).status(cert, pki.ca) == ("good", f"crl {CRL_URL}")


def test_ocsp_stale_and_future_responses(pki: PKI, net: Net, responder: Responder) -> None:
    cert = pki.leaf()
    responder.certs[cert.serial_number] = cert
    responder.this_update, responder.next_update = NOW - 3 * DAY, NOW - DAY
    result = checker(net, use_crl=False).check(cert, pki.ca)
    assert result.status == "unknown" and "stale: its nextUpdate" in result.detail
    responder.this_update, responder.next_update = NOW + HOUR, NOW + DAY
    result = checker(net, use_crl=False).check(cert, pki.ca)
    assert result.status == "unknown" and "is in the future" in result.detail
    # Without nextUpdate: fine while younger than max_age.
    responder.this_update, responder.next_update = NOW - dt.timedelta(minutes=10), None
    assert checker(net, use_crl=False).status(cert, pki.ca)[0] == "good"
    responder.this_update = NOW - 2 * HOUR
    assert checker(net, use_crl=False).status(cert, pki.ca)[0] == "unknown"


def test_ocsp_wrong_issuer(pki: PKI, net: Net, responder: Responder) -> None:
    cert = pki.leaf()
    responder.certs[cert.serial_number] = cert
    # The other CA has the same name but another key: its signature does not count.
    responder.signer, responder.signer_key = pki.other_ca, pki.other_ca_key
    result = checker(net, use_crl=False).check(cert, pki.ca)
    assert result.status == "unknown"
    assert "neither the issuer nor delegated" in result.detail
    # ...not even with its certificate included.
    responder.include = [pki.other_ca]
    result = checker(net, use_crl=False).check(cert, pki.ca)
    assert "not issued by the certificate's issuer" in result.detail
    # A response about another issuer's certificate (CertID) does not answer ours.
    responder.signer, responder.signer_key, responder.include = None, None, []
    responder.issuer = pki.other_ca
    result = checker(net, use_crl=False).check(cert, pki.ca)
    assert "does not answer for this certificate" in result.detail
    # And asking with the wrong issuer certificate is answered without any fetch.
    net.calls.clear()
    foreign = pki.leaf(issuer=pki.root, issuer_key=pki.root_key)
    assert checker(net).check(foreign, pki.ca).status == "unknown"
    assert net.calls == []


def _responder_cert(
    pki: PKI, key: Key, *, eku: bool = True, issuer: x509.Certificate | None = None,
    issuer_key: Key | None = None,
) -> x509.Certificate:  # fmt: skip
    issuer = issuer or pki.ca
    b = (
        x509.CertificateBuilder()
        .subject_name(_name("OCSP Responder"))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - DAY)
        .not_valid_after(NOW + 30 * DAY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.OCSPNoCheck(), critical=False)
    )
    if eku:
        b = b.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False
        )
    return b.sign(issuer_key or pki.ca_key, hashes.SHA256())


def test_delegated_responder(pki: PKI, net: Net, responder: Responder) -> None:
    cert = pki.leaf()
    responder.certs[cert.serial_number] = cert
    key = ec.generate_private_key(ec.SECP256R1())
    delegate = _responder_cert(pki, key)
    responder.signer, responder.signer_key, responder.include = delegate, key, [delegate]
    assert checker(net, use_crl=False).status(cert, pki.ca) == ("good", f"ocsp {OCSP_URL}")
    # Without id-kp-OCSPSigning: refused.
    no_eku = _responder_cert(pki, key, eku=False)
    responder.signer, responder.include = no_eku, [no_eku]
    assert "lacks id-kp-OCSPSigning" in checker(net, use_crl=False).check(cert, pki.ca).detail
    # Issued by the root (not the certificate's issuer): refused.
    by_root = _responder_cert(pki, key, issuer=pki.root, issuer_key=pki.root_key)
    responder.signer, responder.include = by_root, [by_root]
    assert (
        "not issued by the certificate's issuer"
        in checker(net, use_crl=False).check(cert, pki.ca).detail
    )
    # Named as issued by the CA but signed by another key (the other CA's): refused.
    forged = _responder_cert(pki, key, issuer=pki.other_ca, issuer_key=pki.other_ca_key)
    responder.signer, responder.include = forged, [forged]
    assert (
        "not signed by the certificate's issuer"
        in checker(net, use_crl=False).check(cert, pki.ca).detail
    )
    # Delegated, but not carried in the response: refused.
    responder.signer, responder.include = delegate, []
    assert (
        "neither the issuer nor delegated" in checker(net, use_crl=False).check(cert, pki.ca).detail
    )


def test_ocsp_nonce_must_match_when_echoed(pki: PKI, net: Net, responder: Responder) -> None:
    cert = pki.leaf()
    responder.certs[cert.serial_number] = cert
    responder.echo_nonce = False  # RFC 8954 lets a responder ignore it
    assert checker(net, use_crl=False).status(cert, pki.ca)[0] == "good"
    responder.echo_nonce = True
    replay = responder(
        ocsp.OCSPRequestBuilder()
        .add_certificate(cert, pki.ca, hashes.SHA1())
        .add_extension(x509.OCSPNonce(b"0123456789abcdef"), critical=False)
        .build()
        .public_bytes(DER)
    )
    net.handlers[OCSP_URL] = lambda _data: replay
    assert "another request's nonce" in checker(net, use_crl=False).check(cert, pki.ca).detail


def test_crl_checks(pki: PKI, net: Net) -> None:
    cert = pki.leaf()
    only_crl = {"use_ocsp": False}
    assert checker(net, **only_crl).status(cert, pki.ca) == ("good", f"crl {CRL_URL}")
    # Signed by someone else (same name).
    net.serve_crl(CRL_URL, _crl(pki.other_ca, pki.other_ca_key))
    assert "CRL signature does not verify" in checker(net, **only_crl).check(cert, pki.ca).detail
    # Stale.
    net.serve_crl(
        CRL_URL, _crl(pki.ca, pki.ca_key, this_update=NOW - 9 * DAY, next_update=NOW - 2 * DAY)
    )
    assert "stale" in checker(net, **only_crl).check(cert, pki.ca).detail
    # Issued by another CA name.
    net.serve_crl(CRL_URL, _crl(pki.root, pki.root_key))
    assert (
        "the CRL is issued by CN=Test Root" in checker(net, **only_crl).check(cert, pki.ca).detail
    )
    # Not a CRL at all.
    net.serve_crl(CRL_URL, b"<html>")
    assert "not a CRL" in checker(net, **only_crl).check(cert, pki.ca).detail


def test_crl_with_issuing_distribution_point(pki: PKI, net: Net) -> None:
    cert = pki.leaf()

    def crl_with_idp(url: str) -> bytes:
        idp = x509.IssuingDistributionPoint(
            full_name=[x509.UniformResourceIdentifier(url)], relative_name=None,
            only_contains_user_certs=True, only_contains_ca_certs=False,
            only_some_reasons=None, indirect_crl=False, only_contains_attribute_certs=False,
        )  # fmt: skip
        b = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(pki.ca.subject)
            .last_update(NOW - HOUR)
            .next_update(NOW + DAY)
            .add_extension(idp, critical=True)
        )
        return b.sign(pki.ca_key, hashes.SHA256()).public_bytes(DER)

    net.serve_crl(CRL_URL, crl_with_idp(CRL_URL))
    assert checker(net, use_ocsp=False).status(cert, pki.ca)[0] == "good"
    # A partition CRL for another URL (substituted by an attacker) does not count.
    net.serve_crl(CRL_URL, crl_with_idp("http://crl.test/issuing-7.crl"))
    detail = checker(net, use_ocsp=False).check(cert, pki.ca).detail
    assert "issuing distribution point is another URL" in detail


def test_revoked_intermediate(pki: PKI, net: Net, responder: Responder) -> None:
    cert = pki.leaf()
    responder.certs[cert.serial_number] = cert
    net.serve_crl(
        ROOT_CRL_URL,
        _crl(
            pki.root,
            pki.root_key,
            {pki.ca.serial_number: (x509.ReasonFlags.ca_compromise, NOW - DAY)},
        ),
    )
    v = verdict(pki, cert, revocation=checker(net))
    assert v.revocation == "revoked" and v.revocation_source == f"ocsp {OCSP_URL}"
    assert len(v.problems) == 1
    assert v.problems[0].startswith("the CA certificate Test Issuing CA was revoked (cACompromise)")


def test_no_aia_or_cdp(pki: PKI, net: Net) -> None:
    cert = pki.leaf(urls=False)
    result = checker(net).check(cert, pki.ca)
    assert result.status == "unknown"
    assert result.detail == "the certificate names no OCSP responder or CRL"
    assert verdict(pki, cert, revocation=checker(net)).valid
    v = verdict(pki, cert, revocation=checker(net), require_revocation=True)
    assert v.problems == (
        "the revocation status of the certificate is unknown: "
        "the certificate names no OCSP responder or CRL",
    )


def test_unreachable(pki: PKI, net: Net) -> None:
    cert = pki.leaf()
    net.handlers.pop(CRL_URL)

    def broken(_data: bytes | None) -> bytes:
        raise TimeoutError("timed out")

    net.handlers[OCSP_URL] = broken
    result = checker(net).check(cert, pki.ca)
    assert result.status == "unknown"
    assert result.detail == (
        f"OCSP {OCSP_URL}: unreachable (timed out); CRL {CRL_URL}: unreachable (connection refused)"
    )


def test_oversized_answers_are_refused(pki: PKI, net: Net) -> None:
    cert = pki.leaf()
    net.serve_crl(CRL_URL, b"x" * 2000)
    result = checker(net, use_ocsp=False, max_crl_bytes=1000).check(cert, pki.ca)
    assert "larger than 1000 bytes" in result.detail


# ---- caching ------------------------------------------------------------------------


def test_status_is_cached_until_next_update(pki: PKI, net: Net, responder: Responder) -> None:
    cert = pki.leaf()
    responder.certs[cert.serial_number] = cert
    responder.next_update = NOW + 30 * dt.timedelta(minutes=1)
    clock = Clock()
    rc = checker(net, clock)
    assert rc.status(cert, pki.ca)[0] == "good"
    assert net.calls == [OCSP_URL]
    # Revoked meanwhile, but the cached answer stands until its nextUpdate.
    responder.revoked[cert.serial_number] = (x509.ReasonFlags.key_compromise, NOW)
    clock.now = NOW + 29 * dt.timedelta(minutes=1)
    assert rc.status(cert, pki.ca)[0] == "good"
    assert net.calls == [OCSP_URL]
    clock.now = NOW + 31 * dt.timedelta(minutes=1)
    responder.this_update = clock.now - dt.timedelta(minutes=1)
    responder.next_update = clock.now + DAY
    assert rc.status(cert, pki.ca)[0] == "revoked"
    assert net.calls == [OCSP_URL, OCSP_URL]


def test_status_cache_is_capped_by_max_age(pki: PKI, net: Net, responder: Responder) -> None:
    cert = pki.leaf()
    responder.certs[cert.serial_number] = cert  # nextUpdate a day ahead
    clock = Clock()
    rc = checker(net, clock, max_age=dt.timedelta(minutes=10))
    rc.status(cert, pki.ca)
    clock.now = NOW + dt.timedelta(minutes=9)
    rc.status(cert, pki.ca)
    assert net.calls == [OCSP_URL]
    clock.now = NOW + dt.timedelta(minutes=11)
    rc.status(cert, pki.ca)
    assert net.calls == [OCSP_URL, OCSP_URL]
    rc.clear()
    rc.status(cert, pki.ca)
    assert len(net.calls) == 3


def test_crl_is_cached_per_url(pki: PKI, net: Net) -> None:
    first, second = pki.leaf(), pki.leaf("bob@example.com")
    clock = Clock()
    rc = checker(net, clock, use_ocsp=False)
    assert rc.status(first, pki.ca)[0] == "good"
    assert rc.status(second, pki.ca)[0] == "good"
    assert net.calls == [CRL_URL]  # one CRL for both
    net.serve_crl(
        CRL_URL, _crl(pki.ca, pki.ca_key, {second.serial_number: (x509.ReasonFlags.superseded, NOW)},
                      this_update=NOW + 2 * HOUR - dt.timedelta(minutes=1)),
    )  # fmt: skip
    clock.now = NOW + 2 * HOUR  # past max_age (1 hour): fetched again
    assert rc.status(second, pki.ca)[0] == "revoked"
    assert net.calls == [CRL_URL, CRL_URL]


def test_unknown_is_cached_briefly(pki: PKI, net: Net) -> None:
    cert = pki.leaf()
    net.handlers.clear()
    clock = Clock()
    rc = checker(net, clock)
    rc.status(cert, pki.ca)
    rc.status(cert, pki.ca)
    assert net.calls == [OCSP_URL, CRL_URL]
    clock.now = NOW + dt.timedelta(minutes=6)
    rc.status(cert, pki.ca)
    assert net.calls == [OCSP_URL, CRL_URL] * 2


def test_checker_arguments(pki: PKI) -> None:
    with pytest.raises(InputError):
        RevocationChecker(timeout=0)
    with pytest.raises(InputError):
        RevocationChecker(max_age=dt.timedelta(0))
    with pytest.raises(InputError):
        RevocationChecker().status(pki.leaf(), pki.ca, at=dt.datetime(2025, 1, 1))


def test_http_fetch_refuses_other_schemes() -> None:
    for url in ("file:///etc/passwd", "ldap://x/cn=crl", "ftp://x/crl"):
        with pytest.raises(OSError, match="not an http URL"):
            http_fetch(url, None, "application/pkix-crl")
