"""OCSP responder: statuses, nonce, CertID algorithms, malformed input, cache."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from mailpki.ca.ocsp import (
    MALFORMED_RESPONSE,
    UNAUTHORIZED_RESPONSE,
    CertStatus,
    OCSPResponder,
)
from mailpki.errors import CAError

NOW = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)
DER = serialization.Encoding.DER


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer_name: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    serial: int,
    ca: bool = False,
    eku: list[x509.ObjectIdentifier] | None = None,
) -> x509.Certificate:
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


class PKI:
    def __init__(self) -> None:
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca = _cert(
            "Issuing CA", self.ca_key, _name("Issuing CA"), self.ca_key, serial=1, ca=True
        )
        self.resp_key = ec.generate_private_key(ec.SECP256R1())
        self.resp = _cert(
            "OCSP Responder",
            self.resp_key,
            self.ca.subject,
            self.ca_key,
            serial=2,
            eku=[ExtendedKeyUsageOID.OCSP_SIGNING],
        )
        self.ee_key = ee_key = ec.generate_private_key(ec.SECP256R1())
        self.good = _cert(
            "good",
            ee_key,
            self.ca.subject,
            self.ca_key,
            serial=1001,
            eku=[ExtendedKeyUsageOID.EMAIL_PROTECTION],
        )
        self.revoked = _cert(
            "revoked",
            ee_key,
            self.ca.subject,
            self.ca_key,
            serial=1002,
            eku=[ExtendedKeyUsageOID.EMAIL_PROTECTION],
        )
        self.statuses: dict[int, CertStatus] = {
            1001: CertStatus("good"),
            1002: CertStatus(
                "revoked", NOW - dt.timedelta(hours=2), x509.ReasonFlags.key_compromise
            ),
        }
        self.lookups: list[int] = []
        self.now = NOW

    def lookup(self, serial: int) -> CertStatus | None:
        self.lookups.append(serial)
        return self.statuses.get(serial)

    def responder(self, **kw: Any) -> OCSPResponder:
        return OCSPResponder(
            issuer=self.ca,
            responder_cert=self.resp,
            responder_key=self.resp_key,
            lookup=self.lookup,
            clock=lambda: self.now,
            **kw,
        )


@pytest.fixture(scope="module")
def pki_keys() -> PKI:
    return PKI()


@pytest.fixture
def pki(pki_keys: PKI) -> PKI:
    pki_keys.lookups = []
    pki_keys.now = NOW
    pki_keys.statuses.pop(1001, None)
    pki_keys.statuses[1001] = CertStatus("good")
    return pki_keys


def _request(
    pki: PKI,
    cert: x509.Certificate,
    alg: hashes.HashAlgorithm = hashes.SHA1(),
    nonce: bytes | None = None,
) -> bytes:
    b = ocsp.OCSPRequestBuilder().add_certificate(cert, pki.ca, alg)
    if nonce is not None:
        b = b.add_extension(x509.OCSPNonce(nonce), critical=False)
    return b.build().public_bytes(DER)


def _request_by_serial(pki: PKI, serial: int) -> bytes:
    # Take the issuer hashes from a real request: only the serial changes.
    real = ocsp.load_der_ocsp_request(_request(pki, pki.good))
    return (
        ocsp.OCSPRequestBuilder()
        .add_certificate_by_hash(real.issuer_name_hash, real.issuer_key_hash, serial, hashes.SHA1())
        .build()
        .public_bytes(DER)
    )


def _verified(pki: PKI, der: bytes) -> ocsp.OCSPResponse:
    resp = ocsp.load_der_ocsp_response(der)
    assert resp.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert resp.certificates == [pki.resp]
    assert (
        resp.responder_key_hash
        == x509.SubjectKeyIdentifier.from_public_key(pki.resp_key.public_key()).digest
    )
    pki.resp_key.public_key().verify(
        resp.signature, resp.tbs_response_bytes, ec.ECDSA(hashes.SHA256())
    )
    return resp


def test_good(pki: PKI) -> None:
    resp = _verified(pki, pki.responder().respond(_request(pki, pki.good)))
    assert resp.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert resp.serial_number == 1001
    assert resp.this_update_utc == NOW
    assert resp.next_update_utc == NOW + dt.timedelta(hours=24)
    assert isinstance(resp.hash_algorithm, hashes.SHA1)
    # The CertID is echoed exactly as the client computed it.
    req = ocsp.load_der_ocsp_request(_request(pki, pki.good))
    assert (resp.issuer_name_hash, resp.issuer_key_hash) == (
        req.issuer_name_hash,
        req.issuer_key_hash,
    )


def test_revoked_with_time_and_reason(pki: PKI) -> None:
    resp = _verified(pki, pki.responder().respond(_request(pki, pki.revoked)))
    assert resp.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert resp.revocation_time_utc == NOW - dt.timedelta(hours=2)
    assert resp.revocation_reason is x509.ReasonFlags.key_compromise


def test_unknown_serial(pki: PKI) -> None:
    resp = _verified(pki, pki.responder().respond(_request_by_serial(pki, 424242)))
    assert resp.certificate_status is ocsp.OCSPCertStatus.UNKNOWN
    assert resp.serial_number == 424242


def test_nonce_echoed_and_not_cached(pki: PKI) -> None:
    r = pki.responder()
    nonce = os.urandom(16)
    resp = _verified(pki, r.respond(_request(pki, pki.good, nonce=nonce)))
    assert resp.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce
    r.respond(_request(pki, pki.good, nonce=os.urandom(16)))
    assert pki.lookups == [1001, 1001]


@pytest.mark.parametrize("size", [0, 33])
def test_bad_nonce_length_is_malformed(pki: PKI, size: int) -> None:
    assert pki.responder().respond(_request(pki, pki.good, nonce=b"x" * size)) == MALFORMED_RESPONSE


@pytest.mark.parametrize("alg", [hashes.SHA256(), hashes.SHA384(), hashes.SHA512()])
def test_sha2_certids(pki: PKI, alg: hashes.HashAlgorithm) -> None:
    resp = _verified(pki, pki.responder().respond(_request(pki, pki.revoked, alg=alg)))
    assert resp.hash_algorithm.name == alg.name
    assert resp.certificate_status is ocsp.OCSPCertStatus.REVOKED


def test_foreign_issuer_is_unauthorized(pki: PKI) -> None:
    other = PKI()
    der = pki.responder().respond(_request(other, other.good))
    assert der == UNAUTHORIZED_RESPONSE
    assert ocsp.load_der_ocsp_response(der).response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED
    assert pki.lookups == []


@pytest.mark.parametrize(
    "body",
    [b"", b"\x00", b"garbage", b"\x30\x03\x02\x01\x01", b"\x30\x82\xff\xff" + b"\x00" * 10],
)
def test_garbage_is_malformed(pki: PKI, body: bytes) -> None:
    der = pki.responder().respond(body)
    assert der == MALFORMED_RESPONSE
    assert (
        ocsp.load_der_ocsp_response(der).response_status
        is ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    )


def test_truncated_requests_are_malformed(pki: PKI) -> None:
    r = pki.responder()
    full = _request(pki, pki.good, nonce=b"n" * 16)
    for cut in range(len(full)):
        assert r.respond(full[:cut]) == MALFORMED_RESPONSE
    assert r.respond(full + b"\x00") == MALFORMED_RESPONSE  # trailing data


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise(pki_keys: PKI, body: bytes) -> None:
    der = pki_keys.responder().respond(body)
    status = ocsp.load_der_ocsp_response(der).response_status
    assert status in (
        ocsp.OCSPResponseStatus.MALFORMED_REQUEST,
        ocsp.OCSPResponseStatus.UNAUTHORIZED,
    )


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_requests_never_raise(pki_keys: PKI, data: st.DataObject) -> None:
    body = bytearray(_request(pki_keys, pki_keys.good, nonce=b"n" * 8))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(body) - 1))
        body[i] = data.draw(st.integers(0, 255))
    der = pki_keys.responder().respond(bytes(body))
    assert ocsp.load_der_ocsp_response(der) is not None


def test_cache_serves_same_bytes_within_window(pki: PKI) -> None:
    r = pki.responder()
    req = _request(pki, pki.good)
    first = r.respond(req)
    pki.now = NOW + dt.timedelta(seconds=59)
    assert r.respond(req) == first
    assert pki.lookups == [1001]
    # A different CertID algorithm is a different response.
    r.respond(_request(pki, pki.good, alg=hashes.SHA256()))
    assert pki.lookups == [1001, 1001]
    # Past the window: fresh lookup, fresh thisUpdate.
    pki.now = NOW + dt.timedelta(seconds=60)
    third = r.respond(req)
    assert third != first
    assert ocsp.load_der_ocsp_response(third).this_update_utc == pki.now
    # A clock going backwards does not extend an entry's life either.
    pki.now = NOW
    r.respond(req)
    assert pki.lookups == [1001, 1001, 1001, 1001]


def test_cache_ttl_never_exceeds_validity(pki: PKI) -> None:
    r = pki.responder(validity=dt.timedelta(seconds=10), cache_ttl=dt.timedelta(minutes=5))
    assert r.cache_ttl == dt.timedelta(seconds=10)


def test_invalidate_after_revocation(pki: PKI) -> None:
    r = pki.responder()
    req1, req256 = _request(pki, pki.good), _request(pki, pki.good, alg=hashes.SHA256())
    assert (
        ocsp.load_der_ocsp_response(r.respond(req1)).certificate_status is ocsp.OCSPCertStatus.GOOD
    )
    r.respond(req256)
    pki.statuses[1001] = CertStatus("revoked", NOW, x509.ReasonFlags.superseded)
    # Without invalidate the cached GOOD would stand for the window...
    assert (
        ocsp.load_der_ocsp_response(r.respond(req1)).certificate_status is ocsp.OCSPCertStatus.GOOD
    )
    r.invalidate(1001)
    for req in (req1, req256):
        resp = ocsp.load_der_ocsp_response(r.respond(req))
        assert resp.certificate_status is ocsp.OCSPCertStatus.REVOKED
        assert resp.revocation_reason is x509.ReasonFlags.superseded


def test_cache_is_bounded(pki: PKI) -> None:
    r = pki.responder(cache_size=3)
    for serial in range(5000, 5010):
        r.respond(_request_by_serial(pki, serial))
    assert len(r._cache) == 3


def test_lookup_failure_is_try_later(pki: PKI) -> None:
    def broken(serial: int) -> CertStatus | None:
        raise RuntimeError("database is down")

    r = OCSPResponder(
        issuer=pki.ca, responder_cert=pki.resp, responder_key=pki.resp_key, lookup=broken
    )
    resp = ocsp.load_der_ocsp_response(r.respond(_request(pki, pki.good)))
    assert resp.response_status is ocsp.OCSPResponseStatus.TRY_LATER


def test_responder_certificate_checks(pki: PKI) -> None:
    # The CA may answer for itself.
    r = OCSPResponder(
        issuer=pki.ca, responder_cert=pki.ca, responder_key=pki.ca_key, lookup=pki.lookup
    )
    assert ocsp.load_der_ocsp_response(r.respond(_request(pki, pki.good))).certificates == [pki.ca]
    with pytest.raises(CAError, match="OCSPSigning"):
        OCSPResponder(
            issuer=pki.ca, responder_cert=pki.good, responder_key=pki.ee_key, lookup=pki.lookup
        )
    with pytest.raises(CAError, match="does not belong"):
        OCSPResponder(
            issuer=pki.ca, responder_cert=pki.resp, responder_key=pki.ca_key, lookup=pki.lookup
        )
    other = PKI()
    with pytest.raises(CAError, match="issued directly"):
        OCSPResponder(
            issuer=pki.ca,
            responder_cert=other.resp,
            responder_key=other.resp_key,
            lookup=pki.lookup,
        )


def test_revoked_status_needs_time() -> None:
    with pytest.raises(ValueError):
        CertStatus("revoked")
