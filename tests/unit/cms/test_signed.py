"""CMS SignedData: round trips, and every way a message can be wrong is refused.

Messages are made with `sign()` (pyca/cryptography) and then edited with asn1crypto
or at the byte level; OpenSSL interop lives in tests/integration/test_cms_openssl.py.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable

import pytest
from asn1crypto import cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from mailpki.cms.signed import SignedContent, sign, verify_signed
from mailpki.errors import CMSError, InputError
from tests.fixtures.cms_tools import children, read_tlv

CONTENT = b"recovery request: escrow id 42\r\n\x00binary tail\xff"
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
DER = serialization.Encoding.DER

Key = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def make_cert(
    key: Key, cn: str = "Signer", serial: int = 1000, issuer: str = "Test Issuer"
) -> x509.Certificate:
    """A self-signed-style S/MIME signing certificate (issuer name is free: nothing checks chains)."""
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(NOW - dt.timedelta(hours=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def public_der(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def ec_cert(ec_key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    return make_cert(ec_key)


@pytest.fixture(scope="module")
def ec_message(ec_key: ec.EllipticCurvePrivateKey, ec_cert: x509.Certificate) -> bytes:
    return sign(CONTENT, ec_cert, ec_key)


def builder_sign(
    signers: list[tuple[x509.Certificate, Key, hashes.HashAlgorithm]],
    *,
    content: bytes = CONTENT,
    options: tuple[pkcs7.PKCS7Options, ...] = (),
    rsa_padding: padding.PSS | None = None,
) -> bytes:
    """SignedData straight from cryptography's builder, for what sign() does not offer."""
    builder = pkcs7.PKCS7SignatureBuilder().set_data(content)
    for cert, key, hash_algorithm in signers:
        builder = builder.add_signer(cert, key, hash_algorithm, rsa_padding=rsa_padding)  # type: ignore[arg-type]
    return builder.sign(DER, [pkcs7.PKCS7Options.Binary, *options])


def edit(der: bytes, change: Callable[[cms.SignedData], None]) -> bytes:
    """Re-encode `der` after `change` edits its SignedData in place."""
    info = cms.ContentInfo.load(der)
    change(info["content"])
    return info.dump(force=True)


def signer_info(sd: cms.SignedData) -> cms.SignerInfo:
    return sd["signer_infos"][0]


def der_cert(cert: x509.Certificate) -> cms.CertificateChoices:
    return cms.CertificateChoices(
        name="certificate", value=asn1_x509.Certificate.load(cert.public_bytes(DER))
    )


# --- a minimal DER reader, to build BER and non-DER variants byte by byte ---


# Paths (child indexes from the ContentInfo) of the SignedData fields the BER
# conversion treats specially.
ECONTENT_PATH = (1, 0, 2, 1, 0)
CERTIFICATES_PATH = (1, 0, 3)


def to_ber(element: bytes, path: tuple[int, ...] = ()) -> bytes:
    """BER as a streaming encoder writes it: every constructed element outside the
    certificates gets an indefinite length, and the content is a chunked OCTET STRING."""
    tag, contents, _ = read_tlv(element, 0)
    if path == ECONTENT_PATH:
        chunks = [contents[i : i + 7] for i in range(0, len(contents), 7)]
        return b"\x24\x80" + b"".join(b"\x04" + bytes([len(c)]) + c for c in chunks) + b"\0\0"
    if not tag & 0x20 or path == CERTIFICATES_PATH:
        return element
    inner = b"".join(to_ber(child, (*path, i)) for i, child in enumerate(children(contents)))
    return bytes([tag, 0x80]) + inner + b"\0\0"


def signed_attrs_bytes(der: bytes) -> bytes:
    info = cms.ContentInfo.load(der)
    attrs: bytes = signer_info(info["content"])["signed_attrs"].dump()
    assert der.count(attrs) == 1
    return attrs


def pem(der: bytes, label: str, newline: bytes = b"\n") -> bytes:
    body = base64.encodebytes(der).replace(b"\n", newline)
    return b"-----BEGIN %s-----%s%s-----END %s-----%s" % (
        label.encode(),
        newline,
        body,
        label.encode(),
        newline,
    )


def assert_result(result: SignedContent, cert: x509.Certificate, content: bytes = CONTENT) -> None:
    assert result.content == content
    assert result.signer == cert
    assert cert in result.certificates
    assert result.signing_time is not None
    assert result.signing_time.tzinfo is not None
    assert result.signing_time.utcoffset() == dt.timedelta(0)
    assert abs(result.signing_time - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)


# --- round trips ---


def test_rsa_pkcs1v15_round_trip(rsa_key: rsa.RSAPrivateKey) -> None:
    cert = make_cert(rsa_key)
    result = verify_signed(sign(CONTENT, cert, rsa_key))
    assert_result(result, cert)
    assert result.digest_algorithm == "sha256"
    assert result.certificates == (cert,)


@pytest.mark.parametrize("detached", [False, True])
@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1()], ids=["p256", "p384"])
def test_ecdsa_round_trip(curve: ec.EllipticCurve, detached: bool) -> None:
    key = ec.generate_private_key(curve)
    cert = make_cert(key)
    message = sign(CONTENT, cert, key, detached=detached)
    result = verify_signed(message, detached_content=CONTENT if detached else None)
    assert_result(result, cert)


def test_rsa_detached_round_trip(rsa_key: rsa.RSAPrivateKey) -> None:
    cert = make_cert(rsa_key)
    message = sign(CONTENT, cert, rsa_key, detached=True)
    assert CONTENT not in message
    assert_result(verify_signed(message, detached_content=CONTENT), cert)


@pytest.mark.parametrize(
    ("hash_algorithm", "name"),
    [(hashes.SHA384(), "sha384"), (hashes.SHA512(), "sha512")],
)
def test_other_sha2_digests(
    ec_key: ec.EllipticCurvePrivateKey,
    ec_cert: x509.Certificate,
    hash_algorithm: hashes.HashAlgorithm,
    name: str,
) -> None:
    result = verify_signed(builder_sign([(ec_cert, ec_key, hash_algorithm)]))
    assert result.digest_algorithm == name


@pytest.mark.parametrize(
    ("mgf_hash", "salt_length"),
    [
        (hashes.SHA256(), padding.PSS.DIGEST_LENGTH),
        (hashes.SHA256(), padding.PSS.MAX_LENGTH),
        (hashes.SHA512(), 0),
    ],
    ids=["salt-digest", "salt-max", "mgf-sha512-no-salt"],
)
def test_rsa_pss_round_trip(
    rsa_key: rsa.RSAPrivateKey, mgf_hash: hashes.HashAlgorithm, salt_length: int
) -> None:
    cert = make_cert(rsa_key)
    pss = padding.PSS(mgf=padding.MGF1(mgf_hash), salt_length=salt_length)
    message = builder_sign([(cert, rsa_key, hashes.SHA256())], rsa_padding=pss)
    sig_alg = signer_info(cms.ContentInfo.load(message)["content"])["signature_algorithm"]
    assert sig_alg["algorithm"].native == "rsassa_pss"
    assert_result(verify_signed(message), cert)


def test_rsa_pss_wrong_salt_length_fails(rsa_key: rsa.RSAPrivateKey) -> None:
    cert = make_cert(rsa_key)
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    message = builder_sign([(cert, rsa_key, hashes.SHA256())], rsa_padding=pss)

    def salt(length: int) -> Callable[[cms.SignedData], None]:
        def change(sd: cms.SignedData) -> None:
            signer_info(sd)["signature_algorithm"]["parameters"]["salt_length"] = length

        return change

    with pytest.raises(CMSError, match="does not verify"):
        verify_signed(edit(message, salt(20)))
    with pytest.raises(CMSError, match="salt length"):
        verify_signed(edit(message, salt(-1)))
    with pytest.raises(CMSError, match="salt length"):
        verify_signed(edit(message, salt(100_000)))


def test_rsa_pss_default_parameters_are_sha1(rsa_key: rsa.RSAPrivateKey) -> None:
    cert = make_cert(rsa_key)
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    message = builder_sign([(cert, rsa_key, hashes.SHA256())], rsa_padding=pss)

    def drop_params(sd: cms.SignedData) -> None:
        signer_info(sd)["signature_algorithm"] = {"algorithm": "rsassa_pss"}

    def sha1_mgf(sd: cms.SignedData) -> None:
        params = signer_info(sd)["signature_algorithm"]["parameters"]
        params["mask_gen_algorithm"] = {"algorithm": "mgf1", "parameters": {"algorithm": "sha1"}}

    def other_hash(sd: cms.SignedData) -> None:
        params = signer_info(sd)["signature_algorithm"]["parameters"]
        params["hash_algorithm"] = {"algorithm": "sha512"}

    with pytest.raises(CMSError, match="SHA-1/MD5 signatures are not accepted"):
        verify_signed(edit(message, drop_params))
    with pytest.raises(CMSError, match="SHA-1/MD5 signatures are not accepted"):
        verify_signed(edit(message, sha1_mgf))
    with pytest.raises(CMSError, match="RSA-PSS hash is sha512"):
        verify_signed(edit(message, other_hash))


def test_sign_includes_extra_certificates(
    ec_key: ec.EllipticCurvePrivateKey, ec_cert: x509.Certificate
) -> None:
    extra = [
        make_cert(ec.generate_private_key(ec.SECP256R1()), cn=f"CA {i}", serial=i) for i in (1, 2)
    ]
    result = verify_signed(sign(CONTENT, ec_cert, ec_key, extra_certificates=extra))
    assert result.signer == ec_cert
    assert set(result.certificates) == {ec_cert, *extra}


def test_sign_refuses_a_key_that_does_not_fit(ec_cert: x509.Certificate) -> None:
    with pytest.raises(CMSError, match="does not belong"):
        sign(CONTENT, ec_cert, ec.generate_private_key(ec.SECP256R1()))


def test_empty_embedded_content_is_content(
    ec_key: ec.EllipticCurvePrivateKey, ec_cert: x509.Certificate
) -> None:
    # An empty eContent is present (and signed); only an absent one means "detached".
    assert verify_signed(sign(b"", ec_cert, ec_key)).content == b""


def test_without_signed_attributes(
    ec_key: ec.EllipticCurvePrivateKey, ec_cert: x509.Certificate
) -> None:
    message = builder_sign(
        [(ec_cert, ec_key, hashes.SHA256())], options=(pkcs7.PKCS7Options.NoAttributes,)
    )
    assert isinstance(
        signer_info(cms.ContentInfo.load(message)["content"])["signed_attrs"], core.Void
    )
    result = verify_signed(message)
    assert result.content == CONTENT
    assert result.signing_time is None

    tampered = message.replace(CONTENT, CONTENT.upper())
    with pytest.raises(CMSError, match="does not verify"):
        verify_signed(tampered)


def test_subject_key_identifier_signer(ec_message: bytes, ec_cert: x509.Certificate) -> None:
    ski = ec_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest

    def by_key_id(key_id: bytes) -> Callable[[cms.SignedData], None]:
        def change(sd: cms.SignedData) -> None:
            signer_info(sd)["version"] = "v3"
            signer_info(sd)["sid"] = cms.SignerIdentifier(
                name="subject_key_identifier", value=key_id
            )

        return change

    assert verify_signed(edit(ec_message, by_key_id(ski))).signer == ec_cert
    with pytest.raises(CMSError, match="signer's certificate is not included"):
        verify_signed(edit(ec_message, by_key_id(b"\x01" * 20)))


def test_signature_algorithm_oid_variants(
    rsa_key: rsa.RSAPrivateKey, ec_message: bytes, ec_cert: x509.Certificate
) -> None:
    rsa_cert = make_cert(rsa_key)
    rsa_message = sign(CONTENT, rsa_cert, rsa_key)

    def algorithm(oid: str) -> Callable[[cms.SignedData], None]:
        def change(sd: cms.SignedData) -> None:
            signer_info(sd)["signature_algorithm"] = {"algorithm": oid}

        return change

    # The signature algorithm is not signed; equivalent names must all work.
    assert verify_signed(edit(rsa_message, algorithm("1.2.840.113549.1.1.1"))).signer == rsa_cert
    assert verify_signed(edit(rsa_message, algorithm("1.2.840.113549.1.1.11"))).signer == rsa_cert
    assert verify_signed(edit(ec_message, algorithm("1.2.840.10045.2.1"))).signer == ec_cert

    with pytest.raises(CMSError, match="uses sha512 but the digest algorithm is sha256"):
        verify_signed(edit(rsa_message, algorithm("1.2.840.113549.1.1.13")))
    with pytest.raises(CMSError, match="not an RSA key"):
        verify_signed(edit(ec_message, algorithm("1.2.840.113549.1.1.11")))
    with pytest.raises(CMSError, match="not an EC key"):
        verify_signed(edit(rsa_message, algorithm("1.2.840.10045.4.3.2")))
    with pytest.raises(CMSError, match="not supported"):
        verify_signed(edit(ec_message, algorithm("1.3.101.112")))  # Ed25519


# --- tampering ---


def test_tampered_content(ec_message: bytes) -> None:
    assert ec_message.count(CONTENT) == 1
    tampered = ec_message.replace(CONTENT, CONTENT.replace(b"42", b"43"))
    with pytest.raises(CMSError, match="messageDigest does not match the content"):
        verify_signed(tampered)


def test_tampered_detached_content(
    ec_key: ec.EllipticCurvePrivateKey, ec_cert: x509.Certificate
) -> None:
    message = sign(CONTENT, ec_cert, ec_key, detached=True)
    with pytest.raises(CMSError, match="messageDigest does not match the content"):
        verify_signed(message, detached_content=CONTENT + b" ")


def test_tampered_signing_time(ec_message: bytes) -> None:
    info = cms.ContentInfo.load(ec_message)
    attrs = signer_info(info["content"])["signed_attrs"]
    time_der = next(a for a in attrs if a["type"].native == "signing_time")["values"][0].dump()
    assert ec_message.count(time_der) == 1
    # The minute's last digit and the seconds' first digit (...MMSSZ) set to 00, or to 01
    # when they already are 00: the bytes must change whatever time the message was signed.
    changed = b"00" if time_der[-4:-2] != b"00" else b"01"
    earlier = time_der[:-4] + changed + time_der[-2:]
    assert earlier != time_der
    with pytest.raises(CMSError, match="the CMS signature does not verify"):
        verify_signed(ec_message.replace(time_der, earlier))


def test_tampered_signature(ec_message: bytes) -> None:
    def flip(sd: cms.SignedData) -> None:
        signature = bytearray(signer_info(sd)["signature"].native)
        signature[-1] ^= 0x01
        signer_info(sd)["signature"] = bytes(signature)

    with pytest.raises(CMSError, match="the CMS signature does not verify"):
        verify_signed(edit(ec_message, flip))


def test_tampered_rsa_signature(rsa_key: rsa.RSAPrivateKey) -> None:
    message = sign(CONTENT, make_cert(rsa_key), rsa_key)

    def flip(sd: cms.SignedData) -> None:
        signature = bytearray(signer_info(sd)["signature"].native)
        signature[10] ^= 0x80
        signer_info(sd)["signature"] = bytes(signature)

    with pytest.raises(CMSError, match="the CMS signature does not verify"):
        verify_signed(edit(message, flip))


def test_swapped_signer_certificate(
    rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    # Same issuer and serial number, another key: the identifier matches, the key does not.
    impostor = make_cert(other_rsa_key)
    message = sign(CONTENT, make_cert(rsa_key), rsa_key)

    def swap(sd: cms.SignedData) -> None:
        sd["certificates"] = cms.CertificateSet([der_cert(impostor)])

    with pytest.raises(CMSError, match="the CMS signature does not verify"):
        verify_signed(edit(message, swap))


def test_signer_certificate_missing(ec_message: bytes) -> None:
    other = make_cert(ec.generate_private_key(ec.SECP256R1()), serial=7)

    def replace(sd: cms.SignedData) -> None:
        sd["certificates"] = cms.CertificateSet([der_cert(other)])

    def drop(sd: cms.SignedData) -> None:
        del sd["certificates"]

    for change in (replace, drop):
        with pytest.raises(CMSError, match="signer's certificate is not included"):
            verify_signed(edit(ec_message, change))


def test_two_certificates_match_the_signer(ec_message: bytes, ec_cert: x509.Certificate) -> None:
    twin = make_cert(ec.generate_private_key(ec.SECP256R1()))  # same issuer and serial

    def add(sd: cms.SignedData) -> None:
        sd["certificates"] = cms.CertificateSet([der_cert(ec_cert), der_cert(twin)])

    with pytest.raises(CMSError, match="several certificates"):
        verify_signed(edit(ec_message, add))


def test_duplicate_certificate_is_not_ambiguous(
    ec_message: bytes, ec_cert: x509.Certificate
) -> None:
    def add(sd: cms.SignedData) -> None:
        sd["certificates"] = cms.CertificateSet([der_cert(ec_cert), der_cert(ec_cert)])

    assert verify_signed(edit(ec_message, add)).signer == ec_cert


def test_two_signers_refused(ec_key: ec.EllipticCurvePrivateKey, ec_cert: x509.Certificate) -> None:
    second_key = ec.generate_private_key(ec.SECP256R1())
    message = builder_sign(
        [
            (ec_cert, ec_key, hashes.SHA256()),
            (make_cert(second_key, serial=2), second_key, hashes.SHA256()),
        ]
    )
    with pytest.raises(CMSError, match="2 signers; exactly one is accepted"):
        verify_signed(message)


def test_no_signer_refused(ec_message: bytes) -> None:
    def drop(sd: cms.SignedData) -> None:
        sd["signer_infos"] = cms.SignerInfos([])

    with pytest.raises(CMSError, match="has no signer"):
        verify_signed(edit(ec_message, drop))


def test_not_signed_data() -> None:
    data = cms.ContentInfo({"content_type": "data", "content": CONTENT}).dump()
    with pytest.raises(CMSError, match="the CMS message is not signed data"):
        verify_signed(data)
    absent = cms.ContentInfo({"content_type": "signed_data"}).dump()
    with pytest.raises(CMSError, match="not signed data"):
        verify_signed(absent)


def test_other_encapsulated_content_type_refused(ec_message: bytes) -> None:
    def retype(sd: cms.SignedData) -> None:
        sd["encap_content_info"]["content_type"] = "1.2.840.113549.1.9.16.1.4"  # TSTInfo

    with pytest.raises(CMSError, match="not data"):
        verify_signed(edit(ec_message, retype))


def edit_attrs(
    der: bytes, change: Callable[[list[cms.CMSAttribute]], list[cms.CMSAttribute]]
) -> bytes:
    def apply(sd: cms.SignedData) -> None:
        attrs = list(signer_info(sd)["signed_attrs"])
        signer_info(sd)["signed_attrs"] = cms.CMSAttributes(change(attrs))

    return edit(der, apply)


def test_content_type_attribute_checked(ec_message: bytes) -> None:
    def wrong_type(attrs: list[cms.CMSAttribute]) -> list[cms.CMSAttribute]:
        for attr in attrs:
            if attr["type"].native == "content_type":
                attr["values"] = ["signed_data"]
        return attrs

    def without(attrs: list[cms.CMSAttribute]) -> list[cms.CMSAttribute]:
        return [a for a in attrs if a["type"].native != "content_type"]

    with pytest.raises(CMSError, match="contentType signed attribute does not match"):
        verify_signed(edit_attrs(ec_message, wrong_type))
    with pytest.raises(CMSError, match="lack the contentType"):
        verify_signed(edit_attrs(ec_message, without))


def test_message_digest_attribute_checked(ec_message: bytes) -> None:
    def without(attrs: list[cms.CMSAttribute]) -> list[cms.CMSAttribute]:
        return [a for a in attrs if a["type"].native != "message_digest"]

    def twice(attrs: list[cms.CMSAttribute]) -> list[cms.CMSAttribute]:
        digest = next(a for a in attrs if a["type"].native == "message_digest")
        return [
            *attrs,
            cms.CMSAttribute({"type": "message_digest", "values": [b"\0" * 32]}),
            digest,
        ]

    def two_values(attrs: list[cms.CMSAttribute]) -> list[cms.CMSAttribute]:
        for attr in attrs:
            if attr["type"].native == "message_digest":
                attr["values"] = [attr["values"][0].native, b"\0" * 32]
        return attrs

    with pytest.raises(CMSError, match="lack the messageDigest"):
        verify_signed(edit_attrs(ec_message, without))
    with pytest.raises(CMSError, match="occurs more than once"):
        verify_signed(edit_attrs(ec_message, twice))
    with pytest.raises(CMSError, match="exactly one value"):
        verify_signed(edit_attrs(ec_message, two_values))


def test_added_signed_attribute_breaks_signature(ec_message: bytes) -> None:
    def add(attrs: list[cms.CMSAttribute]) -> list[cms.CMSAttribute]:
        return [*attrs, cms.CMSAttribute({"type": "1.2.3.4", "values": [core.UTF8String("x")]})]

    with pytest.raises(CMSError, match="the CMS signature does not verify"):
        verify_signed(edit_attrs(ec_message, add))


def test_weak_digests_refused(ec_message: bytes) -> None:
    def digest(name: str) -> Callable[[cms.SignedData], None]:
        def change(sd: cms.SignedData) -> None:
            signer_info(sd)["digest_algorithm"] = {"algorithm": name}

        return change

    for weak in ("sha1", "md5"):
        with pytest.raises(CMSError, match="SHA-1/MD5 signatures are not accepted"):
            verify_signed(edit(ec_message, digest(weak)))
    with pytest.raises(CMSError, match="not supported"):
        verify_signed(edit(ec_message, digest("sha224")))


def test_weak_signature_algorithm_refused(
    ec_key: ec.EllipticCurvePrivateKey, ec_cert: x509.Certificate
) -> None:
    message = builder_sign(
        [(ec_cert, ec_key, hashes.SHA256())], options=(pkcs7.PKCS7Options.NoAttributes,)
    )

    def sha1_ecdsa(sd: cms.SignedData) -> None:
        signer_info(sd)["signature_algorithm"] = {"algorithm": "sha1_ecdsa"}

    with pytest.raises(CMSError, match="SHA-1/MD5 signatures are not accepted"):
        verify_signed(edit(message, sha1_ecdsa))


# --- content presence ---


def test_detached_without_content_refused(
    ec_key: ec.EllipticCurvePrivateKey, ec_cert: x509.Certificate
) -> None:
    message = sign(CONTENT, ec_cert, ec_key, detached=True)
    with pytest.raises(CMSError, match="carries no content"):
        verify_signed(message)


def test_embedded_and_detached_refused(ec_message: bytes) -> None:
    with pytest.raises(CMSError, match="detached content must not be given too"):
        verify_signed(ec_message, detached_content=CONTENT)


# --- encodings ---


@pytest.mark.parametrize("label", ["PKCS7", "CMS"])
@pytest.mark.parametrize("newline", [b"\n", b"\r\n"], ids=["lf", "crlf"])
def test_pem_input(
    ec_message: bytes, ec_cert: x509.Certificate, label: str, newline: bytes
) -> None:
    result = verify_signed(b"\n  " + pem(ec_message, label, newline) + b"\n\n")
    assert_result(result, ec_cert)


BAD_PEM: dict[str, Callable[[bytes], bytes]] = {
    "certificate-label": lambda der: pem(der, "CERTIFICATE"),
    "junk-after": lambda der: pem(der, "CMS") + b"trailing junk\n",
    "two-blocks": lambda der: pem(der, "CMS") * 2,
    "truncated": lambda der: pem(der, "CMS")[: len(pem(der, "CMS")) // 2],
    "bad-base64": lambda der: pem(der, "CMS").replace(b"\n", b"\n!!!!\n", 2),
    "header-line": lambda der: pem(der, "CMS").replace(
        b"-----\n", b"-----\nProc-Type: 4,ENCRYPTED\n\n", 1
    ),
    "garbage-body": lambda der: pem(b"not a CMS message at all", "CMS"),
}


@pytest.mark.parametrize("case", sorted(BAD_PEM))
def test_bad_pem_refused(ec_message: bytes, case: str) -> None:
    with pytest.raises(CMSError):
        verify_signed(BAD_PEM[case](ec_message))


def test_ber_input(ec_message: bytes, ec_cert: x509.Certificate) -> None:
    ber = to_ber(ec_message)
    assert ber[:2] == b"\x30\x80"
    assert b"\x24\x80\x04\x07" in ber  # chunked content
    assert CONTENT not in ber
    # The signed attributes travel with indefinite lengths too: the verifier must
    # re-encode them as DER before checking the signature.
    assert b"\xa0\x80\x30\x80\x06" in ber
    assert_result(verify_signed(ber), ec_cert)


def test_ber_detached_input(rsa_key: rsa.RSAPrivateKey) -> None:
    cert = make_cert(rsa_key)
    ber = to_ber(sign(CONTENT, cert, rsa_key, detached=True))
    assert_result(verify_signed(ber, detached_content=CONTENT), cert)


def test_signed_attributes_out_of_der_order(ec_message: bytes, ec_cert: x509.Certificate) -> None:
    # The signature covers the DER (sorted) SET; a sender may transmit them unsorted.
    original = signed_attrs_bytes(ec_message)
    _, contents, _ = read_tlv(original, 0)
    attrs = list(children(contents))
    assert attrs == sorted(attrs)
    shuffled = original[: len(original) - len(contents)] + b"".join(reversed(attrs))
    assert shuffled != original
    assert_result(verify_signed(ec_message.replace(original, shuffled)), ec_cert)


def test_garbage_refused() -> None:
    for data in (b"", b"\x00", b"hello world", b"\x30\x80", b"\x30\x03\x02\x01", b"\xff" * 64):
        with pytest.raises(CMSError):
            verify_signed(data)


def test_truncated_refused(ec_message: bytes) -> None:
    for cut in range(0, len(ec_message), 7):
        with pytest.raises(CMSError):
            verify_signed(ec_message[:cut])
    with pytest.raises(CMSError):
        verify_signed(ec_message[:-1])


def test_trailing_data_refused(ec_message: bytes) -> None:
    with pytest.raises(CMSError, match="trailing data"):
        verify_signed(ec_message + b"\x00")


def test_oversized_refused(
    ec_key: ec.EllipticCurvePrivateKey, ec_cert: x509.Certificate, ec_message: bytes
) -> None:
    with pytest.raises(CMSError, match="over the limit"):
        verify_signed(ec_message, max_size=len(ec_message) - 1)
    assert verify_signed(ec_message, max_size=len(ec_message)).content == CONTENT
    big = CONTENT * 100
    detached = sign(big, ec_cert, ec_key, detached=True)
    assert len(detached) < len(big)
    with pytest.raises(CMSError, match="detached content is .* over the limit"):
        verify_signed(detached, detached_content=big, max_size=len(big) - 1)
    assert verify_signed(detached, detached_content=big, max_size=len(big)).content == big


def test_cms_error_is_input_error() -> None:
    assert issubclass(CMSError, InputError)


# --- fuzzing: CMSError or an unchanged result, never anything else ---


@settings(max_examples=150, deadline=None, database=None)
@given(data=st.binary(max_size=3000))
def test_random_bytes_refused(data: bytes) -> None:
    with pytest.raises(CMSError):
        verify_signed(data)


@pytest.fixture(scope="module")
def fuzz_targets(
    ec_key: ec.EllipticCurvePrivateKey, ec_message: bytes
) -> dict[str, tuple[bytes, bytes | None]]:
    """Valid messages to mutate, with the detached content each needs."""
    detached = sign(CONTENT, make_cert(ec_key), ec_key, detached=True)
    return {
        "der": (ec_message, None),
        "ber": (to_ber(ec_message), None),
        "detached": (detached, CONTENT),
    }


# A mutated serial number may turn negative: cryptography warns, that is all.
@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
@settings(max_examples=600, deadline=None, database=None)
@given(
    target=st.sampled_from(["der", "ber", "detached"]),
    position=st.floats(min_value=0, max_value=1, exclude_max=True),
    value=st.integers(0, 255),
)
def test_single_byte_mutations(
    fuzz_targets: dict[str, tuple[bytes, bytes | None]],
    ec_cert: x509.Certificate,
    target: str,
    position: float,
    value: int,
) -> None:
    message, detached_content = fuzz_targets[target]
    mutated = bytearray(message)
    mutated[int(position * len(message))] = value
    try:
        result = verify_signed(bytes(mutated), detached_content=detached_content)
    except CMSError:
        return
    # Only bytes the signature does not cover can change without an error (for
    # example the certificate's validity or its own signature): the content and
    # the signing key must be the original ones.
    assert result.content == CONTENT
    assert public_der(result.signer) == public_der(ec_cert)
    assert result.signer.serial_number == ec_cert.serial_number
    assert result.digest_algorithm == "sha256"
