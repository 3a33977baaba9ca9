"""Signed attributes as other clients send them: unknown or damaged ones never break a
good signature, the encryption-key preference is read robustly, and every attribute is
covered by the signature.

Messages are made with `sign(..., extra_attributes=...)`, which signs the attributes
exactly as given; the real Thunderbird/NSS messages are in
tests/integration/test_smime_nss.py.
"""

from __future__ import annotations

import pytest
from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from mailpki.cms._der import der_length
from mailpki.cms.attributes import (
    OID_ENCRYPTION_KEY_PREFERENCE,
    OID_MS_ENCRYPTION_KEY_PREFERENCE,
    issuer_and_serial,
    preference_values,
)
from mailpki.cms.signed import sign, verify_signed
from mailpki.errors import CMSError
from tests.unit.cms.test_signed import make_cert

CONTENT = b"Content-Type: text/plain\r\n\r\nhello\r\n"
UNKNOWN = "1.3.6.1.4.1.99999.7.1"


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def cert(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    return make_cert(key, cn="Signer", serial=1001)


@pytest.fixture(scope="module")
def other() -> x509.Certificate:
    return make_cert(ec.generate_private_key(ec.SECP256R1()), cn="Encryption", serial=1002)


def tlv(tag: int, contents: bytes) -> bytes:
    return bytes([tag]) + der_length(len(contents)) + contents


def test_our_signature_names_the_encryption_certificate(
    key: ec.EllipticCurvePrivateKey, cert: x509.Certificate, other: x509.Certificate
) -> None:
    signed = verify_signed(sign(CONTENT, cert, key, encryption_certificate=other))
    assert signed.signer == cert
    assert other in signed.certificates  # carried, so the correspondent can keep it
    preference = signed.encryption_preference
    assert preference is not None and preference.problem is None
    assert preference.certificate == other
    assert len(preference.named_by) == 2
    assert "encrypKeyPref" in signed.attributes
    assert "msEncryptionKeyPreference" in signed.attributes
    assert signed.unknown_attributes == ()


def test_no_preference_without_an_encryption_certificate(
    key: ec.EllipticCurvePrivateKey, cert: x509.Certificate
) -> None:
    signed = verify_signed(sign(CONTENT, cert, key))
    assert signed.encryption_preference is None
    assert signed.attributes == ("contentType", "signingTime", "messageDigest", "smimeCapabilities")


@pytest.mark.parametrize(
    "value",
    [
        core.OctetString(b"opaque").dump(),
        tlv(0x30, tlv(0x02, b"\xff") + tlv(0x0C, b"\xc3\x28 not utf-8")),  # nonsense inside
        tlv(0xA5, b"\x00\x01\x02"),  # a context tag nobody defined
        tlv(0x1E, b"\x00"),  # a BMPString of odd length
    ],
    ids=["octets", "bad-sequence", "context-tag", "odd-bmpstring"],
)
def test_unknown_attribute_with_garbage_is_reported_not_fatal(
    key: ec.EllipticCurvePrivateKey, cert: x509.Certificate, value: bytes
) -> None:
    signed = verify_signed(sign(CONTENT, cert, key, extra_attributes=[(UNKNOWN, value)]))
    assert signed.unknown_attributes == (UNKNOWN,)
    assert signed.content == CONTENT


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (tlv(0xA0, tlv(0x02, b"\x05")), "cannot be read"),  # [0] without an issuer
        (tlv(0x83, b"\x00"), "unknown choice"),  # no such CHOICE alternative
        (tlv(0xA0, b""), "cannot be read"),
        (tlv(0x30, tlv(0x30, b"") + tlv(0x02, b"\x01")), "unknown choice"),  # bare SEQUENCE
    ],
)
def test_damaged_encryption_key_preference_is_a_problem_not_a_failure(
    key: ec.EllipticCurvePrivateKey, cert: x509.Certificate, value: bytes, reason: str
) -> None:
    message = sign(CONTENT, cert, key, extra_attributes=[(OID_ENCRYPTION_KEY_PREFERENCE, value)])
    signed = verify_signed(message)
    preference = signed.encryption_preference
    assert preference is not None and preference.certificate is None
    assert preference.problem is not None and reason in preference.problem


def test_damaged_microsoft_preference(
    key: ec.EllipticCurvePrivateKey, cert: x509.Certificate
) -> None:
    garbage = tlv(0x30, tlv(0x02, b"\x01"))  # IssuerAndSerialNumber without the issuer
    message = sign(
        CONTENT, cert, key, extra_attributes=[(OID_MS_ENCRYPTION_KEY_PREFERENCE, garbage)]
    )
    preference = verify_signed(message).encryption_preference
    assert preference is not None and preference.certificate is None
    assert preference.problem and "Microsoft" in preference.problem


def test_preference_naming_a_certificate_not_in_the_message(
    key: ec.EllipticCurvePrivateKey, cert: x509.Certificate, other: x509.Certificate
) -> None:
    message = sign(CONTENT, cert, key, extra_attributes=preference_values(other))
    preference = verify_signed(message).encryption_preference
    assert preference is not None and preference.certificate is None
    assert preference.problem and "not in the message" in preference.problem
    assert "serial 3EA" in preference.problem  # 1002, so the person can look for it


def test_the_two_attributes_naming_different_certificates(
    key: ec.EllipticCurvePrivateKey, cert: x509.Certificate, other: x509.Certificate
) -> None:
    mixed = sign(
        CONTENT,
        cert,
        key,
        extra_certificates=[other],
        extra_attributes=[
            (OID_ENCRYPTION_KEY_PREFERENCE, b"\xa0" + issuer_and_serial(other)[1:]),
            (OID_MS_ENCRYPTION_KEY_PREFERENCE, issuer_and_serial(cert)),
        ],
    )
    preference = verify_signed(mixed).encryption_preference
    assert preference is not None and preference.certificate is None
    assert preference.problem and "different certificates" in preference.problem


def test_an_attribute_given_twice(
    key: ec.EllipticCurvePrivateKey, cert: x509.Certificate, other: x509.Certificate
) -> None:
    twice = sign(
        CONTENT,
        cert,
        key,
        encryption_certificate=other,
        extra_attributes=[(OID_MS_ENCRYPTION_KEY_PREFERENCE, issuer_and_serial(other))],
    )
    preference = verify_signed(twice).encryption_preference
    assert preference is not None and preference.certificate is None
    assert preference.problem and "must occur once" in preference.problem


def test_preference_by_subject_key_identifier(
    key: ec.EllipticCurvePrivateKey, cert: x509.Certificate, other: x509.Certificate
) -> None:
    ski = other.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    message = sign(
        CONTENT,
        cert,
        key,
        extra_certificates=[other],
        extra_attributes=[(OID_ENCRYPTION_KEY_PREFERENCE, tlv(0x82, ski))],
    )
    preference = verify_signed(message).encryption_preference
    assert preference is not None and preference.certificate == other


def test_every_attribute_is_covered_by_the_signature(
    key: ec.EllipticCurvePrivateKey, cert: x509.Certificate
) -> None:
    marker = b"covered-by-the-signature"
    message = sign(
        CONTENT, cert, key, extra_attributes=[(UNKNOWN, core.OctetString(marker).dump())]
    )
    assert verify_signed(message).unknown_attributes == (UNKNOWN,)
    changed = message.replace(marker, b"COVERED-by-the-signature")
    assert changed != message
    with pytest.raises(CMSError, match="does not verify"):
        verify_signed(changed)


@settings(max_examples=60, deadline=None)
@given(
    oid=st.sampled_from([OID_ENCRYPTION_KEY_PREFERENCE, OID_MS_ENCRYPTION_KEY_PREFERENCE, UNKNOWN]),
    tag=st.integers(min_value=0, max_value=0x1E).map(lambda n: n | 0x20)
    | st.sampled_from([0x04, 0x02, 0x80, 0x82, 0xA0, 0xA1]),
    contents=st.binary(max_size=80),
)
def test_any_attribute_value_verifies_or_is_a_cms_error(
    key: ec.EllipticCurvePrivateKey, cert: x509.Certificate, oid: str, tag: int, contents: bytes
) -> None:
    """Whatever a client puts inside an attribute: the signature still verifies (or the
    message is refused with CMSError), never another exception."""
    try:
        message = sign(CONTENT, cert, key, extra_attributes=[(oid, tlv(tag, contents))])
    except CMSError:
        return
    try:
        signed = verify_signed(message)
    except CMSError:
        return  # e.g. nested contents that are not even BER
    if oid == UNKNOWN:
        assert signed.unknown_attributes == (UNKNOWN,)
    else:
        assert signed.encryption_preference is not None
