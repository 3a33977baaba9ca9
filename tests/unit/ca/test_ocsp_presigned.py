"""Pre-signed OCSP answers: the plain-request reader, the answers themselves, and the
rules that keep a pre-signed answer from being served when it might be stale."""

from __future__ import annotations

import datetime as dt
import os
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from hypothesis import given, settings
from hypothesis import strategies as st

from mailpki.ca.ocsp import MALFORMED_RESPONSE, MAX_STALENESS, CertStatus, plain_cert_id
from tests.unit.ca.test_ocsp import NOW, PKI, _request

DER = serialization.Encoding.DER


@pytest.fixture(scope="module")
def pki() -> PKI:
    return PKI()


def test_request_der_is_what_clients_send(pki: PKI) -> None:
    responder = pki.responder()
    assert responder.request_der(1001) == _request(pki, pki.good)
    assert plain_cert_id(_request(pki, pki.good)) == responder.cert_id(1001)


def test_plain_reader_refuses_everything_but_plain_requests(pki: PKI) -> None:
    assert plain_cert_id(_request(pki, pki.good, nonce=os.urandom(16))) is None
    both = (
        ocsp.OCSPRequestBuilder().add_certificate(pki.good, pki.ca, hashes.SHA1()).build()
    ).public_bytes(DER)
    assert plain_cert_id(both + b"\x00") is None  # trailing bytes
    assert plain_cert_id(both[:-1]) is None  # truncated
    assert plain_cert_id(b"") is None
    assert plain_cert_id(b"\x30\x84\xff\xff\xff\xff") is None  # absurd length


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_plain_reader_never_raises(data: bytes) -> None:
    plain_cert_id(data)


@given(st.integers(min_value=0, max_value=120))
@settings(max_examples=60, deadline=None)
def test_plain_reader_survives_every_truncation(cut: int) -> None:
    request = PKI_FOR_FUZZ.responder().request_der(2**120 + 3)
    result = plain_cert_id(request[:cut])
    assert result is None or cut >= len(request)


PKI_FOR_FUZZ = PKI()


def _parse(der: bytes) -> ocsp.OCSPResponse:
    resp = ocsp.load_der_ocsp_response(der)
    assert resp.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    return resp


def test_presigned_answers_are_right(pki: PKI) -> None:
    responder = pki.responder(validity=dt.timedelta(hours=24))
    good = responder.presign(1001, pki.statuses[1001])
    revoked = responder.presign(1002, pki.statuses[1002])
    unknown = responder.presign(4242, None)
    for answer, status in (
        (good, ocsp.OCSPCertStatus.GOOD),
        (revoked, ocsp.OCSPCertStatus.REVOKED),
        (unknown, ocsp.OCSPCertStatus.UNKNOWN),
    ):
        resp = _parse(answer.der)
        assert resp.certificate_status is status
        assert resp.serial_number == answer.serial
        assert resp.this_update_utc == answer.this_update == NOW
        assert resp.next_update_utc == answer.next_update == NOW + dt.timedelta(hours=24)
        assert isinstance(resp.hash_algorithm, hashes.SHA1)
        public_key = pki.resp.public_key()
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        public_key.verify(resp.signature, resp.tbs_response_bytes, ec.ECDSA(hashes.SHA256()))
        with pytest.raises(x509.ExtensionNotFound):
            resp.extensions.get_extension_for_class(x509.OCSPNonce)
    resp = _parse(revoked.der)
    assert resp.revocation_reason is x509.ReasonFlags.key_compromise
    assert resp.revocation_time_utc == NOW - dt.timedelta(hours=2)


def test_served_from_memory_without_signing_or_lookup(pki: PKI) -> None:
    responder = pki.responder()
    answer = responder.presign(1001, CertStatus("good"))
    responder.load_presigned([answer])
    request = _request(pki, pki.good)
    # Not synced yet: the map is not used (the answer is signed, the status looked up).
    pki.lookups = []
    assert responder.respond(request) != answer.der
    assert pki.lookups == [1001]
    responder.mark_synced(time.monotonic())
    pki.lookups = []
    assert responder.respond(request) == answer.der
    assert pki.lookups == []
    # A nonce'd request is always signed fresh, never the pre-signed bytes.
    nonce = os.urandom(16)
    fresh = _parse(responder.respond(_request(pki, pki.good, nonce=nonce)))
    assert fresh.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce
    # A SHA-256 CertID is not pre-signed: the signing path answers it.
    assert isinstance(
        _parse(responder.respond(_request(pki, pki.good, hashes.SHA256()))).hash_algorithm,
        hashes.SHA256,
    )
    # Bad input still gets malformedRequest.
    assert responder.respond(b"\x30\x03\x02\x01\x00") == MALFORMED_RESPONSE


def test_never_served_when_stale(pki: PKI) -> None:
    responder = pki.responder()
    answer = responder.presign(1001, CertStatus("good"))
    responder.load_presigned([answer])
    request = _request(pki, pki.good)
    # The last sync is older than the bound: the map is not used.
    responder.mark_synced(time.monotonic() - MAX_STALENESS - 1)
    assert responder.respond(request) != answer.der
    responder.mark_synced(time.monotonic())
    assert responder.respond(request) == answer.der
    # Past its own nextUpdate: not served.
    pki.now = NOW + dt.timedelta(hours=25)
    try:
        assert responder.respond(request) != answer.der
    finally:
        pki.now = NOW


def test_invalidate_and_drop_remove_the_answer(pki: PKI) -> None:
    responder = pki.responder()
    responder.mark_synced(time.monotonic())
    request = _request(pki, pki.good)
    answer = responder.presign(1001, CertStatus("good"))
    responder.load_presigned([answer])
    assert responder.respond(request) == answer.der
    responder.invalidate(1001)
    assert responder.respond(request) != answer.der
    responder.load_presigned([answer])
    responder.drop_presigned([1001])
    assert responder.presigned_count == 0


@pytest.mark.parametrize("alg", ["sha1", "sha256", "sha512"])
@pytest.mark.parametrize("state", ["good", "revoked", "unspecified", "unknown"])
@pytest.mark.parametrize("with_nonce", [False, True])
def test_fast_signer_matches_cryptography(pki: PKI, alg: str, state: str, with_nonce: bool) -> None:
    """The precomputed signer's TBSResponseData is byte for byte cryptography's."""
    responder = pki.responder()
    fast = responder._fast
    assert fast is not None
    status = {
        "good": CertStatus("good"),
        "revoked": CertStatus("revoked", NOW - dt.timedelta(hours=3), x509.ReasonFlags.superseded),
        "unspecified": CertStatus(
            "revoked", NOW - dt.timedelta(hours=3), x509.ReasonFlags.unspecified
        ),
        "unknown": None,
    }[state]
    nonce = os.urandom(16) if with_nonce else None
    name_hash, key_hash = responder._issuer_hashes[alg]
    serial = 2**126 + 12345
    ours = fast.sign(alg, name_hash, key_hash, serial, status, nonce, NOW)
    responder._fast = None  # cryptography's OCSPResponseBuilder
    theirs = responder._sign(alg, name_hash, key_hash, serial, status, nonce, NOW)
    a, b = _parse(ours), _parse(theirs)
    public_key = pki.resp.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    public_key.verify(a.signature, a.tbs_response_bytes, ec.ECDSA(hashes.SHA256()))
    produced_ours = a.produced_at_utc.strftime("%Y%m%d%H%M%SZ").encode()
    produced_theirs = b.produced_at_utc.strftime("%Y%m%d%H%M%SZ").encode()
    assert a.tbs_response_bytes == b.tbs_response_bytes.replace(produced_theirs, produced_ours, 1)
    assert a.certificates == b.certificates
    assert a.signature_algorithm_oid == b.signature_algorithm_oid
