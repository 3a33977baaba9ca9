"""CMS EnvelopedData / AuthEnvelopedData: encrypt, decrypt, and the refusals.

Round trips for every cipher and key transport, several recipients, messages built
by hand for what `encrypt` does not write (3DES, OAEP with SHA-1 defaults or a
label, subjectKeyIdentifier recipients, authenticated attributes), BER and PEM
input, tampering, truncation and fuzzing: `decrypt` raises CMSError and nothing else.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
from collections.abc import Callable

import pytest
from asn1crypto import algos, cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.padding import AsymmetricPadding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF
from cryptography.hazmat.primitives.keywrap import aes_key_wrap
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from mailpki.cms import enveloped
from mailpki.cms.enveloped import Decrypted, decrypt, encrypt
from mailpki.cms.signed import sign
from mailpki.errors import CMSError, KeyStoreError
from tests.fixtures.cms_tools import children, read_tlv

CONTENT = b"Content-Type: text/plain\r\n\r\nthe escrow PIN is 4711\r\n\x00\xff binary tail"
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
DER = serialization.Encoding.DER
CANNOT = "the message cannot be decrypted with this key"
CIPHERS = ["aes256-cbc", "aes128-cbc", "aes256-gcm"]
TRANSPORTS = ["pkcs1v15", "oaep"]
OAEP_SHA256 = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def make_cert(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    cn: str,
    *,
    serial: int = 1000,
    issuer: str = "Test Issuer",
    ski: bool = True,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(NOW - dt.timedelta(hours=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
    )
    if ski:
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    return builder.sign(key, hashes.SHA256())


@pytest.fixture(scope="module")
def alice_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def bob_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def carol_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=3072)


@pytest.fixture(scope="module")
def alice(alice_key: rsa.RSAPrivateKey) -> x509.Certificate:
    return make_cert(alice_key, "Alice", serial=1001)


@pytest.fixture(scope="module")
def bob(bob_key: rsa.RSAPrivateKey) -> x509.Certificate:
    return make_cert(bob_key, "Bob", serial=1002)


@pytest.fixture(scope="module")
def carol(carol_key: rsa.RSAPrivateKey) -> x509.Certificate:
    # Same serial as Alice, other issuer: issuerAndSerialNumber must compare both.
    return make_cert(carol_key, "Carol", serial=1001, issuer="Other Issuer", ski=False)


@pytest.fixture(scope="module")
def dave_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def dave(dave_key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    return make_cert(dave_key, "Dave", serial=1004)


@pytest.fixture(scope="module")
def messages(alice: x509.Certificate) -> dict[tuple[str, str], bytes]:
    return {
        (c, t): encrypt(CONTENT, [alice], cipher=c, key_transport=t)  # type: ignore[arg-type]
        for c in CIPHERS
        for t in TRANSPORTS
    }


# --- helpers: a DER reader, BER and PEM writers, messages built by hand ---


# ContentInfo -> [0] -> (Auth)EnvelopedData -> EncryptedContentInfo -> encryptedContent
ENCRYPTED_CONTENT_PATH = (1, 0, 2, 2)


def to_ber(
    element: bytes,
    *,
    chunk: int = 100,
    form: str = "indefinite",
    path: tuple[int, ...] = (),
) -> bytes:
    """BER as `openssl cms -stream` writes it: every constructed element has an
    indefinite length and the encrypted content is a constructed [0] of OCTET
    STRING chunks. `form` "nested": the chunks are constructed themselves;
    "definite": the constructed [0] has a definite length."""
    tag, contents, _ = read_tlv(element, 0)
    if path == ENCRYPTED_CONTENT_PATH:
        assert tag == 0x80
        parts = [contents[i : i + chunk] for i in range(0, len(contents), chunk)]
        encoded = [b"\x04" + der_len(len(p)) + p for p in parts]
        if form == "nested":
            encoded = [b"\x24\x80" + e + b"\0\0" for e in encoded]
        if form == "definite":
            joined = b"".join(encoded)
            return b"\xa0" + der_len(len(joined)) + joined
        return b"\xa0\x80" + b"".join(encoded) + b"\0\0"
    if not tag & 0x20:
        return element
    inner = b"".join(
        to_ber(child, chunk=chunk, form=form, path=(*path, i))
        for i, child in enumerate(children(contents))
    )
    return bytes([tag, 0x80]) + inner + b"\0\0"


def der_len(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def pem(der: bytes, label: str = "CMS") -> bytes:
    return b"-----BEGIN %s-----\n%s-----END %s-----\n" % (
        label.encode(),
        base64.encodebytes(der),
        label.encode(),
    )


def issuer_and_serial(cert: x509.Certificate) -> cms.RecipientIdentifier:
    asn1_cert = asn1_x509.Certificate.load(cert.public_bytes(DER))
    return cms.RecipientIdentifier(
        name="issuer_and_serial_number",
        value=cms.IssuerAndSerialNumber(
            {"issuer": asn1_cert.issuer, "serial_number": asn1_cert.serial_number}
        ),
    )


def ktri(
    cert: x509.Certificate,
    cek: bytes,
    *,
    wrap: AsymmetricPadding | None = None,
    algorithm: dict[str, object] | None = None,
    rid: cms.RecipientIdentifier | None = None,
) -> cms.RecipientInfo:
    public_key = cert.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    return cms.RecipientInfo(
        name="ktri",
        value={
            "version": "v0" if rid is None else "v2",
            "rid": rid if rid is not None else issuer_and_serial(cert),
            "key_encryption_algorithm": algorithm
            or {"algorithm": "rsaes_pkcs1v15", "parameters": core.Null()},
            "encrypted_key": public_key.encrypt(cek, wrap or padding.PKCS1v15()),
        },
    )


def cbc_message(
    recipients: list[cms.RecipientInfo],
    cek: bytes,
    *,
    content: bytes = CONTENT,
    des3: bool = False,
    oid: str | None = None,
    content_type: str = "data",
) -> bytes:
    """EnvelopedData with AES-CBC or DES-EDE3-CBC, built by hand."""
    block = TripleDES(cek) if des3 else algorithms.AES(cek)
    iv = os.urandom(8 if des3 else 16)
    padder = sym_padding.PKCS7(64 if des3 else 128).padder()
    padded = padder.update(content) + padder.finalize()
    encryptor = Cipher(block, modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    if oid is None:
        oid = (
            "1.2.840.113549.3.7"
            if des3
            else {
                16: "2.16.840.1.101.3.4.1.2",
                24: "2.16.840.1.101.3.4.1.22",
                32: "2.16.840.1.101.3.4.1.42",
            }[len(cek)]
        )
    info = cms.ContentInfo(
        {
            "content_type": "enveloped_data",
            "content": cms.EnvelopedData(
                {
                    "version": "v0",
                    "recipient_infos": recipients,
                    "encrypted_content_info": {
                        "content_type": content_type,
                        "content_encryption_algorithm": {
                            "algorithm": oid,
                            "parameters": core.OctetString(iv),
                        },
                        "encrypted_content": ciphertext,
                    },
                }
            ),
        }
    )
    result: bytes = info.dump()
    return result


class GcmParams(core.Sequence):  # type: ignore[misc]
    _fields = [("aes_nonce", core.OctetString), ("aes_icvlen", core.Integer, {"default": 12})]


def gcm_message(
    recipients: list[cms.RecipientInfo],
    cek: bytes,
    *,
    tag_size: int = 16,
    nonce_size: int = 12,
    auth_attrs: cms.CMSAttributes | None = None,
) -> bytes:
    """AuthEnvelopedData with AES-GCM, built by hand."""
    nonce = os.urandom(nonce_size)
    encryptor = Cipher(algorithms.AES(cek), modes.GCM(nonce, min_tag_length=tag_size)).encryptor()
    fields: dict[str, object] = {}
    if auth_attrs is not None:
        encryptor.authenticate_additional_data(b"\x31" + auth_attrs.dump()[1:])
        fields["auth_attrs"] = auth_attrs
    ciphertext = encryptor.update(CONTENT) + encryptor.finalize()
    oid = {
        16: "2.16.840.1.101.3.4.1.6",
        24: "2.16.840.1.101.3.4.1.26",
        32: "2.16.840.1.101.3.4.1.46",
    }[len(cek)]
    info = cms.ContentInfo(
        {
            "content_type": "authenticated_enveloped_data",
            "content": cms.AuthEnvelopedData(
                {
                    "version": "v0",
                    "recipient_infos": recipients,
                    "auth_encrypted_content_info": {
                        "content_type": "data",
                        "content_encryption_algorithm": {
                            "algorithm": oid,
                            "parameters": GcmParams({"aes_nonce": nonce, "aes_icvlen": tag_size}),
                        },
                        "encrypted_content": ciphertext,
                    },
                    "mac": encryptor.tag[:tag_size],
                    **fields,
                }
            ),
        }
    )
    result: bytes = info.dump()
    return result


def edit(der: bytes, change: Callable[[cms.EnvelopedData | cms.AuthEnvelopedData], None]) -> bytes:
    info = cms.ContentInfo.load(der)
    change(info["content"])
    result: bytes = info.dump(force=True)
    return result


def flip(der: bytes, needle: bytes, offset: int) -> bytes:
    """`der` with one bit flipped at `offset` inside the one occurrence of `needle`."""
    assert der.count(needle) == 1
    pos = der.index(needle) + offset
    return der[:pos] + bytes([der[pos] ^ 0x01]) + der[pos + 1 :]


def eci_of(der: bytes) -> cms.EncryptedContentInfo:
    env = cms.ContentInfo.load(der)["content"]
    field = (
        "encrypted_content_info"
        if isinstance(env, cms.EnvelopedData)
        else "auth_encrypted_content_info"
    )
    return env[field]


# --- round trips and the structure written ---


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("cipher", CIPHERS)
def test_round_trip(
    messages: dict[tuple[str, str], bytes],
    alice: x509.Certificate,
    alice_key: rsa.RSAPrivateKey,
    cipher: str,
    transport: str,
) -> None:
    result = decrypt(messages[cipher, transport], alice, alice_key)
    assert result == Decrypted(
        content=CONTENT, cipher=cipher, key_transport=transport, recipient_count=1
    )


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("cipher", CIPHERS)
def test_structure_written(
    messages: dict[tuple[str, str], bytes], alice: x509.Certificate, cipher: str, transport: str
) -> None:
    der = messages[cipher, transport]
    info = cms.ContentInfo.load(der, strict=True)
    assert info.dump(force=True) == der  # DER, not just BER
    env = info["content"]
    assert env["version"].native == "v0"
    (recipient_info,) = env["recipient_infos"]
    assert recipient_info.name == "ktri"
    assert recipient_info.chosen["version"].native == "v0"
    rid = recipient_info.chosen["rid"]
    assert rid.name == "issuer_and_serial_number"
    assert rid.chosen["issuer"].native == {"common_name": "Test Issuer"}
    assert rid.chosen["serial_number"].native == alice.serial_number == 1001
    kea = recipient_info.chosen["key_encryption_algorithm"]
    if transport == "oaep":
        assert kea["algorithm"].dotted == "1.2.840.113549.1.1.7"
        # RFC 4055: the SHA-256 / MGF1-SHA-256 parameters are written out, not defaulted.
        assert kea["parameters"]["hash_algorithm"]["algorithm"].native == "sha256"
        mgf = kea["parameters"]["mask_gen_algorithm"]
        assert (mgf["algorithm"].native, mgf["parameters"]["algorithm"].native) == (
            "mgf1",
            "sha256",
        )
        assert kea["parameters"].dump().count(b"\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x01") == 2
    else:
        assert kea["algorithm"].dotted == "1.2.840.113549.1.1.1"
        assert isinstance(kea["parameters"], core.Null)
    eci = eci_of(der)
    assert eci["content_type"].native == "data"
    algorithm = eci["content_encryption_algorithm"]
    if cipher == "aes256-gcm":
        assert info["content_type"].dotted == "1.2.840.113549.1.9.16.1.23"
        assert algorithm["algorithm"].dotted == "2.16.840.1.101.3.4.1.46"
        params = GcmParams.load(algorithm["parameters"].dump())
        assert len(params["aes_nonce"].native) == 12
        assert params["aes_icvlen"].native == 16
        assert len(env["mac"].native) == 16
        assert len(eci["encrypted_content"].native) == len(CONTENT)
    else:
        assert info["content_type"].native == "enveloped_data"
        assert algorithm["algorithm"].native == cipher.replace("-", "_")
        assert len(algorithm["parameters"].native) == 16
        assert len(eci["encrypted_content"].native) == (len(CONTENT) // 16 + 1) * 16


def test_fresh_key_and_iv_every_time(alice: x509.Certificate) -> None:
    one, two = (encrypt(CONTENT, [alice], cipher="aes256-gcm") for _ in range(2))
    assert eci_of(one)["encrypted_content"].native != eci_of(two)["encrypted_content"].native


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 1 << 20])
@pytest.mark.parametrize("cipher", CIPHERS)
def test_content_sizes(
    alice: x509.Certificate, alice_key: rsa.RSAPrivateKey, cipher: str, size: int
) -> None:
    content = os.urandom(size)
    message = encrypt(content, [alice], cipher=cipher)  # type: ignore[arg-type]
    assert decrypt(message, alice, alice_key).content == content


@pytest.mark.parametrize("cipher", CIPHERS)
def test_several_recipients_each_decrypt(
    alice: x509.Certificate,
    bob: x509.Certificate,
    carol: x509.Certificate,
    alice_key: rsa.RSAPrivateKey,
    bob_key: rsa.RSAPrivateKey,
    carol_key: rsa.RSAPrivateKey,
    cipher: str,
) -> None:
    message = encrypt(CONTENT, [alice, bob, carol], cipher=cipher, key_transport="oaep")  # type: ignore[arg-type]
    for cert, key in [(alice, alice_key), (bob, bob_key), (carol, carol_key)]:
        result = decrypt(message, cert, key)
        assert result.content == CONTENT
        assert result.recipient_count == 3


def test_bytes_like_content(alice: x509.Certificate, alice_key: rsa.RSAPrivateKey) -> None:
    message = encrypt(bytearray(CONTENT), [alice])  # type: ignore[arg-type]
    assert decrypt(memoryview(message), alice, alice_key).content == CONTENT  # type: ignore[arg-type]


# --- encrypt refusals ---


def test_encrypt_refuses_no_recipients() -> None:
    with pytest.raises(CMSError, match="at least one recipient"):
        encrypt(CONTENT, [])


def test_encrypt_refuses_a_bare_certificate(alice: x509.Certificate) -> None:
    with pytest.raises(CMSError, match="at least one recipient"):
        encrypt(CONTENT, alice)  # type: ignore[arg-type]


def test_encrypt_refuses_duplicates(alice: x509.Certificate, bob: x509.Certificate) -> None:
    with pytest.raises(CMSError, match="listed more than once"):
        encrypt(CONTENT, [alice, bob, alice])


def test_encrypt_refuses_other_curves(alice: x509.Certificate) -> None:
    ec_key = ec.generate_private_key(ec.SECP256K1())
    with pytest.raises(CMSError, match="only P-256, P-384 and P-521 are supported"):
        encrypt(CONTENT, [alice, make_cert(ec_key, "Eve")])


def test_encrypt_refuses_small_rsa_keys() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(CMSError, match="1024-bit RSA key"):
        encrypt(CONTENT, [make_cert(small, "Small")])


def test_encrypt_refuses_bad_arguments(alice: x509.Certificate) -> None:
    with pytest.raises(CMSError, match="unknown cipher"):
        encrypt(CONTENT, [alice], cipher="des-ede3-cbc")  # type: ignore[arg-type]
    with pytest.raises(CMSError, match="unknown key transport"):
        encrypt(CONTENT, [alice], key_transport="raw")  # type: ignore[arg-type]
    with pytest.raises(CMSError, match="must be bytes"):
        encrypt("text", [alice])  # type: ignore[arg-type]
    with pytest.raises(CMSError, match="x509.Certificate"):
        encrypt(CONTENT, [alice.public_bytes(DER)])  # type: ignore[list-item]


def test_encrypt_size_limit(alice: x509.Certificate, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(enveloped, "MAX_SIZE", 100)
    encrypt(b"x" * 100, [alice])
    with pytest.raises(CMSError, match="over the limit"):
        encrypt(b"x" * 101, [alice])


# --- decrypt: recipients and keys ---


def test_not_for_this_recipient(
    messages: dict[tuple[str, str], bytes], bob: x509.Certificate, bob_key: rsa.RSAPrivateKey
) -> None:
    with pytest.raises(CMSError, match="not for this recipient"):
        decrypt(messages["aes256-cbc", "pkcs1v15"], bob, bob_key)


def test_same_serial_other_issuer_is_not_us(
    messages: dict[tuple[str, str], bytes], carol: x509.Certificate, carol_key: rsa.RSAPrivateKey
) -> None:
    with pytest.raises(CMSError, match="not for this recipient"):
        decrypt(messages["aes256-gcm", "oaep"], carol, carol_key)


def test_key_of_another_certificate(
    messages: dict[tuple[str, str], bytes], alice: x509.Certificate, bob_key: rsa.RSAPrivateKey
) -> None:
    with pytest.raises(CMSError, match="does not belong to the recipient certificate"):
        decrypt(messages["aes256-cbc", "pkcs1v15"], alice, bob_key)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_wrong_key_behind_a_callable_gcm(
    messages: dict[tuple[str, str], bytes],
    alice: x509.Certificate,
    bob_key: rsa.RSAPrivateKey,
    transport: str,
) -> None:
    with pytest.raises(CMSError, match=f"^{CANNOT}$"):
        decrypt(messages["aes256-gcm", transport], alice, bob_key.decrypt)


def test_wrong_key_behind_a_callable_cbc(
    alice: x509.Certificate, bob_key: rsa.RSAPrivateKey
) -> None:
    # Plain CBC cannot always tell: with the random key about 1 in 256 paddings
    # happen to be valid and garbage comes out. It is never the content.
    errors = 0
    for _ in range(8):
        message = encrypt(CONTENT, [alice])
        try:
            assert decrypt(message, alice, bob_key.decrypt).content != CONTENT
        except CMSError as exc:
            assert str(exc) == CANNOT
            errors += 1
    assert errors >= 6


def test_callable_key(
    messages: dict[tuple[str, str], bytes], alice: x509.Certificate, alice_key: rsa.RSAPrivateKey
) -> None:
    seen: list[AsymmetricPadding] = []

    def token(ciphertext: bytes, pad: AsymmetricPadding) -> bytes:
        seen.append(pad)
        return alice_key.decrypt(ciphertext, pad)

    assert decrypt(messages["aes256-cbc", "oaep"], alice, token).content == CONTENT
    assert decrypt(messages["aes256-gcm", "pkcs1v15"], alice, token).content == CONTENT
    assert isinstance(seen[0], padding.OAEP)
    assert isinstance(seen[1], padding.PKCS1v15)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_unwrap_failure_gives_the_one_message(
    messages: dict[tuple[str, str], bytes], alice: x509.Certificate, transport: str
) -> None:
    def failing(ciphertext: bytes, pad: AsymmetricPadding) -> bytes:
        raise ValueError("Decryption failed")

    def wrong_length(ciphertext: bytes, pad: AsymmetricPadding) -> bytes:
        return b"\x01" * 7

    for cipher in CIPHERS:
        for key in (failing, wrong_length):
            with pytest.raises(CMSError) as caught:
                decrypt(messages[cipher, transport], alice, key)
            if cipher == "aes256-gcm":
                assert str(caught.value) == CANNOT


def test_pkcs1v15_failure_surfaces_at_the_content_step(
    messages: dict[tuple[str, str], bytes], alice: x509.Certificate, alice_key: rsa.RSAPrivateKey
) -> None:
    """Bleichenbacher: the unwrap error is swallowed; the GCM tag check is what fails,
    with exactly the message a tampered tag gives."""
    tag_error = ""
    try:
        tampered = edit(
            messages["aes256-gcm", "pkcs1v15"], lambda env: env.__setitem__("mac", b"\0" * 16)
        )
        decrypt(tampered, alice, alice_key)
    except CMSError as exc:
        tag_error = str(exc)
    calls: list[int] = []

    def failing(ciphertext: bytes, pad: AsymmetricPadding) -> bytes:
        calls.append(1)
        raise ValueError("bad padding")

    with pytest.raises(CMSError) as caught:
        decrypt(messages["aes256-gcm", "pkcs1v15"], alice, failing)
    assert calls == [1]
    assert str(caught.value) == tag_error == CANNOT
    assert isinstance(caught.value.__cause__, InvalidTag)  # the content step, not the unwrap


def test_keystore_error_is_reported(
    messages: dict[tuple[str, str], bytes], alice: x509.Certificate
) -> None:
    def token(ciphertext: bytes, pad: AsymmetricPadding) -> bytes:
        raise KeyStoreError("the token refused RSA-OAEP with SHA-256")

    with pytest.raises(CMSError, match="cannot decrypt the message: the token refused"):
        decrypt(messages["aes256-cbc", "oaep"], alice, token)


def test_ec_certificate_and_rsa_only_message(
    messages: dict[tuple[str, str], bytes],
    dave: x509.Certificate,
    dave_key: ec.EllipticCurvePrivateKey,
) -> None:
    with pytest.raises(CMSError, match="not for this recipient"):
        decrypt(messages["aes256-cbc", "oaep"], dave, dave_key)


def test_key_type_must_fit_the_certificate(
    messages: dict[tuple[str, str], bytes],
    alice: x509.Certificate,
    alice_key: rsa.RSAPrivateKey,
    dave: x509.Certificate,
    dave_key: ec.EllipticCurvePrivateKey,
) -> None:
    message = messages["aes256-cbc", "oaep"]
    with pytest.raises(CMSError, match="has an RSA key: the private key must be RSA"):
        decrypt(message, alice, dave_key)
    with pytest.raises(CMSError, match="has an EC key: the private key must be EC"):
        decrypt(message, dave, alice_key)
    with pytest.raises(CMSError, match="has an EC key: the private key must be EC"):
        decrypt(message, dave, alice_key.decrypt)
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(CMSError, match="does not belong to the recipient certificate"):
        decrypt(message, dave, other)


def test_bad_key_argument(messages: dict[tuple[str, str], bytes], alice: x509.Certificate) -> None:
    with pytest.raises(CMSError, match="must be an RSA private key"):
        decrypt(messages["aes256-cbc", "oaep"], alice, b"key")  # type: ignore[arg-type]
    with pytest.raises(CMSError, match="x509.Certificate"):
        decrypt(messages["aes256-cbc", "oaep"], b"cert", b"key")  # type: ignore[arg-type]
    with pytest.raises(CMSError, match="must be bytes"):
        decrypt("text", alice, b"key")  # type: ignore[arg-type]


# --- decrypt: messages built by hand ---


def test_subject_key_identifier_recipient(
    alice: x509.Certificate, alice_key: rsa.RSAPrivateKey, bob: x509.Certificate
) -> None:
    cek = os.urandom(32)
    ski = alice.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    rid = cms.RecipientIdentifier(name="subject_key_identifier", value=ski)
    message = cbc_message([ktri(bob, cek), ktri(alice, cek, rid=rid)], cek)
    result = decrypt(message, alice, alice_key)
    assert (result.content, result.recipient_count) == (CONTENT, 2)


def test_subject_key_identifier_without_the_extension(
    carol: x509.Certificate, carol_key: rsa.RSAPrivateKey
) -> None:
    # RFC 5280 method 1 (SHA-1 of the public key), what OpenSSL computes too.
    cek = os.urandom(32)
    ski = x509.SubjectKeyIdentifier.from_public_key(carol.public_key()).digest
    rid = cms.RecipientIdentifier(name="subject_key_identifier", value=ski)
    assert (
        decrypt(cbc_message([ktri(carol, cek, rid=rid)], cek), carol, carol_key).content == CONTENT
    )
    other = cms.RecipientIdentifier(name="subject_key_identifier", value=b"\x01" * 20)
    with pytest.raises(CMSError, match="not for this recipient"):
        decrypt(cbc_message([ktri(carol, cek, rid=other)], cek), carol, carol_key)


@pytest.mark.parametrize("key_size", [16, 24, 32])
def test_aes_cbc_key_sizes(
    alice: x509.Certificate, alice_key: rsa.RSAPrivateKey, key_size: int
) -> None:
    cek = os.urandom(key_size)
    result = decrypt(cbc_message([ktri(alice, cek)], cek), alice, alice_key)
    assert (result.content, result.cipher) == (CONTENT, f"aes{key_size * 8}-cbc")


def test_triple_des(alice: x509.Certificate, alice_key: rsa.RSAPrivateKey) -> None:
    cek = os.urandom(24)
    result = decrypt(cbc_message([ktri(alice, cek)], cek, des3=True), alice, alice_key)
    assert (result.content, result.cipher, result.key_transport) == (
        CONTENT,
        "des-ede3-cbc",
        "pkcs1v15",
    )


@pytest.mark.parametrize("key_size", [16, 24, 32])
@pytest.mark.parametrize("tag_size", [12, 16])
def test_aes_gcm_variants(
    alice: x509.Certificate, alice_key: rsa.RSAPrivateKey, key_size: int, tag_size: int
) -> None:
    cek = os.urandom(key_size)
    result = decrypt(gcm_message([ktri(alice, cek)], cek, tag_size=tag_size), alice, alice_key)
    assert (result.content, result.cipher) == (CONTENT, f"aes{key_size * 8}-gcm")


def test_gcm_authenticated_attributes(
    alice: x509.Certificate, alice_key: rsa.RSAPrivateKey
) -> None:
    cek = os.urandom(32)
    attrs = cms.CMSAttributes([{"type": "content_type", "values": ["data"]}])
    message = gcm_message([ktri(alice, cek)], cek, auth_attrs=attrs)
    assert decrypt(message, alice, alice_key).content == CONTENT

    def change(env: cms.AuthEnvelopedData) -> None:
        env["auth_attrs"] = cms.CMSAttributes([{"type": "content_type", "values": ["signed_data"]}])

    with pytest.raises(CMSError, match=f"^{CANNOT}$"):
        decrypt(edit(message, change), alice, alice_key)


def oaep_algorithm(params: dict[str, object] | None) -> dict[str, object]:
    if params is None:
        return {"algorithm": "rsaes_oaep"}
    if not params:  # an empty SEQUENCE: every field at its default
        return {"algorithm": "rsaes_oaep", "parameters": algos.RSAESOAEPParams.load(b"\x30\x00")}
    return {"algorithm": "rsaes_oaep", "parameters": algos.RSAESOAEPParams(params)}


@pytest.mark.parametrize(
    ("params", "wrap"),
    [
        # Absent parameters: SHA-1 and MGF1-SHA-1 (RFC 4055 defaults), as SoftHSM2 needs.
        (None, padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None)),
        ({}, padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None)),
        (
            {
                "hash_algorithm": {"algorithm": "sha384"},
                "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": "sha1"}},
            },
            padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA384(), None),
        ),
        (
            {
                "hash_algorithm": {"algorithm": "sha512"},
                "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": "sha512"}},
                "p_source_algorithm": {"algorithm": "p_specified", "parameters": b"a label"},
            },
            padding.OAEP(padding.MGF1(hashes.SHA512()), hashes.SHA512(), b"a label"),
        ),
    ],
    ids=["absent", "empty", "sha384-mgf1-sha1", "sha512-label"],
)
def test_oaep_parameters_are_read(
    alice: x509.Certificate,
    alice_key: rsa.RSAPrivateKey,
    params: dict[str, object] | None,
    wrap: padding.OAEP,
) -> None:
    cek = os.urandom(32)
    info = ktri(alice, cek, wrap=wrap, algorithm=oaep_algorithm(params))
    result = decrypt(cbc_message([info], cek), alice, alice_key)
    assert (result.content, result.key_transport) == (CONTENT, "oaep")


def test_oaep_parameter_mismatch(alice: x509.Certificate, alice_key: rsa.RSAPrivateKey) -> None:
    cek = os.urandom(32)
    info = ktri(alice, cek, wrap=OAEP_SHA256, algorithm=oaep_algorithm(None))  # says SHA-1
    with pytest.raises(CMSError, match=f"^{CANNOT}$"):
        decrypt(cbc_message([info], cek), alice, alice_key)


def test_oaep_unsupported_hash(alice: x509.Certificate, alice_key: rsa.RSAPrivateKey) -> None:
    cek = os.urandom(32)
    algorithm = oaep_algorithm({"hash_algorithm": {"algorithm": "md5"}})
    with pytest.raises(CMSError, match="RSA-OAEP hash md5 is not supported"):
        decrypt(cbc_message([ktri(alice, cek, algorithm=algorithm)], cek), alice, alice_key)


def test_unsupported_key_transport(alice: x509.Certificate, alice_key: rsa.RSAPrivateKey) -> None:
    cek = os.urandom(32)
    algorithm: dict[str, object] = {"algorithm": "aes256_wrap"}
    with pytest.raises(CMSError, match="key transport algorithm aes256_wrap is not supported"):
        decrypt(cbc_message([ktri(alice, cek, algorithm=algorithm)], cek), alice, alice_key)


def test_unsupported_content_cipher(alice: x509.Certificate, alice_key: rsa.RSAPrivateKey) -> None:
    cek = os.urandom(16)
    message = cbc_message([ktri(alice, cek)], cek, oid="2.16.840.1.101.3.4.1.4")  # aes128-cfb
    with pytest.raises(CMSError, match="aes128_cfb is not supported"):
        decrypt(message, alice, alice_key)


def test_gcm_only_in_auth_enveloped_data(
    messages: dict[tuple[str, str], bytes], alice: x509.Certificate, alice_key: rsa.RSAPrivateKey
) -> None:
    cek = os.urandom(32)
    cbc_as_gcm = cbc_message([ktri(alice, cek)], cek, oid="2.16.840.1.101.3.4.1.46")
    with pytest.raises(CMSError, match="aes256-gcm cannot be used in EnvelopedData"):
        decrypt(cbc_as_gcm, alice, alice_key)
    # AuthEnvelopedData promises integrity: unauthenticated CBC inside is refused.
    gcm = cms.ContentInfo.load(messages["aes256-gcm", "pkcs1v15"])
    algorithm = gcm["content"]["auth_encrypted_content_info"]["content_encryption_algorithm"]
    algorithm["algorithm"] = "aes256_cbc"
    algorithm["parameters"] = core.OctetString(b"\0" * 16)
    with pytest.raises(CMSError, match="aes256-cbc cannot be used in AuthEnvelopedData"):
        decrypt(gcm.dump(force=True), alice, alice_key)


def test_only_data_content(alice: x509.Certificate, alice_key: rsa.RSAPrivateKey) -> None:
    cek = os.urandom(32)
    message = cbc_message([ktri(alice, cek)], cek, content_type="signed_data")
    with pytest.raises(CMSError, match="encrypts signed_data, not data"):
        decrypt(message, alice, alice_key)


def test_signed_data_is_not_encrypted(
    alice: x509.Certificate, alice_key: rsa.RSAPrivateKey
) -> None:
    with pytest.raises(CMSError, match="not encrypted data"):
        decrypt(sign(CONTENT, alice, alice_key), alice, alice_key)


def test_detached_content_refused(
    messages: dict[tuple[str, str], bytes], alice: x509.Certificate, alice_key: rsa.RSAPrivateKey
) -> None:
    info = cms.ContentInfo.load(messages["aes256-cbc", "oaep"])
    eci = info["content"]["encrypted_content_info"]
    eci["encrypted_content"] = None
    with pytest.raises(CMSError, match="no encrypted content"):
        decrypt(info.dump(force=True), alice, alice_key)


def test_other_recipient_kinds_are_skipped(
    alice: x509.Certificate, alice_key: rsa.RSAPrivateKey
) -> None:
    cek = os.urandom(32)
    kekri = cms.RecipientInfo(
        name="kekri",
        value={
            "version": "v4",
            "kekid": {"key_identifier": b"kek"},
            "key_encryption_algorithm": {"algorithm": "aes256_wrap"},
            "encrypted_key": b"\0" * 40,
        },
    )
    message = cbc_message([kekri, ktri(alice, cek)], cek)
    assert decrypt(message, alice, alice_key).recipient_count == 2
    with pytest.raises(CMSError, match="not for this recipient"):
        decrypt(cbc_message([kekri], cek), alice, alice_key)


def test_bad_cbc_iv(alice: x509.Certificate, alice_key: rsa.RSAPrivateKey) -> None:
    cek = os.urandom(32)
    info = cms.ContentInfo.load(cbc_message([ktri(alice, cek)], cek))
    info["content"]["encrypted_content_info"]["content_encryption_algorithm"]["parameters"] = (
        core.OctetString(b"\0" * 8)
    )
    with pytest.raises(CMSError, match="IV is not 16 bytes"):
        decrypt(info.dump(force=True), alice, alice_key)


def test_gcm_tag_length_must_match(alice: x509.Certificate, alice_key: rsa.RSAPrivateKey) -> None:
    cek = os.urandom(32)
    message = gcm_message([ktri(alice, cek)], cek)
    with pytest.raises(CMSError, match="tag is 12 bytes, not the 16 announced"):
        decrypt(edit(message, lambda env: env.__setitem__("mac", b"\0" * 12)), alice, alice_key)
    with pytest.raises(CMSError, match="12 to 16 bytes"):
        decrypt(gcm_message([ktri(alice, cek)], cek, tag_size=8), alice, alice_key)


# --- tampering ---


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_gcm_detects_tampered_ciphertext(
    messages: dict[tuple[str, str], bytes],
    alice: x509.Certificate,
    alice_key: rsa.RSAPrivateKey,
    transport: str,
) -> None:
    message = messages["aes256-gcm", transport]
    ciphertext = eci_of(message)["encrypted_content"].native
    for offset in (0, len(ciphertext) // 2, len(ciphertext) - 1):
        with pytest.raises(CMSError, match=f"^{CANNOT}$"):
            decrypt(flip(message, ciphertext, offset), alice, alice_key)


def test_gcm_detects_tampered_tag_and_nonce(
    messages: dict[tuple[str, str], bytes], alice: x509.Certificate, alice_key: rsa.RSAPrivateKey
) -> None:
    message = messages["aes256-gcm", "oaep"]
    env = cms.ContentInfo.load(message)["content"]
    tag = env["mac"].native
    nonce = GcmParams.load(
        env["auth_encrypted_content_info"]["content_encryption_algorithm"]["parameters"].dump()
    )["aes_nonce"].native
    for needle, offset in [(tag, 0), (tag, 15), (nonce, 3)]:
        with pytest.raises(CMSError, match=f"^{CANNOT}$"):
            decrypt(flip(message, needle, offset), alice, alice_key)


@pytest.mark.parametrize("cipher", CIPHERS)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_tampered_encrypted_key(
    messages: dict[tuple[str, str], bytes],
    alice: x509.Certificate,
    alice_key: rsa.RSAPrivateKey,
    cipher: str,
    transport: str,
) -> None:
    message = messages[cipher, transport]
    encrypted_key = (
        cms.ContentInfo.load(message)["content"]["recipient_infos"][0]
        .chosen["encrypted_key"]
        .native
    )
    try:
        result = decrypt(flip(message, encrypted_key, 100), alice, alice_key)
    except CMSError as exc:
        assert str(exc) == CANNOT
    else:  # CBC with a random key: valid-looking padding about once in 256
        assert cipher != "aes256-gcm"
        assert result.content != CONTENT


def test_cbc_tampered_padding_is_refused(
    messages: dict[tuple[str, str], bytes], alice: x509.Certificate, alice_key: rsa.RSAPrivateKey
) -> None:
    message = messages["aes256-cbc", "oaep"]
    ciphertext = eci_of(message)["encrypted_content"].native
    # The last byte of the previous block XORs into the last padding byte.
    with pytest.raises(CMSError, match=f"^{CANNOT}$"):
        decrypt(flip(message, ciphertext, len(ciphertext) - 17), alice, alice_key)


def test_cbc_has_no_integrity(
    messages: dict[tuple[str, str], bytes], alice: x509.Certificate, alice_key: rsa.RSAPrivateKey
) -> None:
    # What AuthEnvelopedData is for: a flipped bit in the IV flips the same bit of
    # the plaintext, and plain EnvelopedData cannot notice.
    message = messages["aes256-cbc", "oaep"]
    iv = eci_of(message)["content_encryption_algorithm"]["parameters"].native
    content = decrypt(flip(message, iv, 0), alice, alice_key).content
    assert content == bytes([CONTENT[0] ^ 1]) + CONTENT[1:]


# --- input forms ---


@pytest.mark.parametrize("form", ["indefinite", "nested", "definite"])
@pytest.mark.parametrize("cipher", CIPHERS)
def test_ber_input(
    messages: dict[tuple[str, str], bytes],
    alice: x509.Certificate,
    alice_key: rsa.RSAPrivateKey,
    cipher: str,
    form: str,
) -> None:
    ber = to_ber(messages[cipher, "oaep"], chunk=17, form=form)
    assert b"\x04\x11" in ber
    result = decrypt(ber, alice, alice_key)
    assert (result.content, result.cipher) == (CONTENT, cipher)


@pytest.mark.parametrize("label", ["CMS", "PKCS7"])
def test_pem_input(
    messages: dict[tuple[str, str], bytes],
    alice: x509.Certificate,
    alice_key: rsa.RSAPrivateKey,
    label: str,
) -> None:
    for message in (messages["aes256-gcm", "oaep"], to_ber(messages["aes128-cbc", "pkcs1v15"])):
        assert decrypt(pem(message, label), alice, alice_key).content == CONTENT


def test_bad_pem(
    messages: dict[tuple[str, str], bytes], alice: x509.Certificate, alice_key: rsa.RSAPrivateKey
) -> None:
    good = pem(messages["aes256-gcm", "oaep"])
    for bad in (
        good.replace(b"CMS", b"CERTIFICATE"),
        good[:-40] + b"\n-----END CMS-----\n",
        good + good,
        good.replace(b"\n", b"\n!", 1),
    ):
        with pytest.raises(CMSError):
            decrypt(bad, alice, alice_key)


def test_size_limit_and_trailing_data(
    messages: dict[tuple[str, str], bytes], alice: x509.Certificate, alice_key: rsa.RSAPrivateKey
) -> None:
    message = messages["aes256-cbc", "pkcs1v15"]
    assert decrypt(message, alice, alice_key, max_size=len(message)).content == CONTENT
    with pytest.raises(CMSError, match="over the limit"):
        decrypt(message, alice, alice_key, max_size=len(message) - 1)
    with pytest.raises(CMSError, match="trailing data"):
        decrypt(message + b"\0", alice, alice_key)


def test_truncated_input(
    messages: dict[tuple[str, str], bytes], alice: x509.Certificate, alice_key: rsa.RSAPrivateKey
) -> None:
    targets = [
        messages["aes256-cbc", "pkcs1v15"],
        messages["aes256-gcm", "oaep"],
        to_ber(messages["aes128-cbc", "oaep"], chunk=13),
        pem(messages["aes256-gcm", "pkcs1v15"]),
    ]
    for message in targets:
        for end in range(0, len(message), 97):
            with pytest.raises(CMSError):
                decrypt(message[:end], alice, alice_key)


# --- fuzzing: CMSError or a plausible result, never anything else ---


@settings(max_examples=200, deadline=None, database=None)
@given(data=st.binary(max_size=3000))
def test_random_bytes_refused(
    alice: x509.Certificate, alice_key: rsa.RSAPrivateKey, data: bytes
) -> None:
    with pytest.raises(CMSError):
        decrypt(data, alice, alice_key)


@pytest.fixture(scope="module")
def fuzz_targets(messages: dict[tuple[str, str], bytes]) -> dict[str, bytes]:
    return {
        "cbc": messages["aes256-cbc", "pkcs1v15"],
        "cbc-oaep": messages["aes128-cbc", "oaep"],
        "gcm": messages["aes256-gcm", "pkcs1v15"],
        "gcm-oaep": messages["aes256-gcm", "oaep"],
        "ber-cbc": to_ber(messages["aes256-cbc", "oaep"], chunk=29),
        "ber-gcm": to_ber(messages["aes256-gcm", "oaep"], chunk=29, form="nested"),
    }


@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
@settings(max_examples=600, deadline=None, database=None)
@given(
    target=st.sampled_from(["cbc", "cbc-oaep", "gcm", "gcm-oaep", "ber-cbc", "ber-gcm"]),
    position=st.floats(min_value=0, max_value=1, exclude_max=True),
    value=st.integers(0, 255),
    cut=st.booleans(),
)
def test_mutations(
    fuzz_targets: dict[str, bytes],
    alice: x509.Certificate,
    alice_key: rsa.RSAPrivateKey,
    target: str,
    position: float,
    value: int,
    cut: bool,
) -> None:
    message = fuzz_targets[target]
    index = int(position * len(message))
    mutated = bytearray(message)
    if cut:
        del mutated[index]
    else:
        mutated[index] = value
    try:
        result = decrypt(bytes(mutated), alice, alice_key)
    except CMSError:
        return
    assert isinstance(result, Decrypted)
    if "gcm" in target:
        # Authenticated: anything that decrypts is the original content.
        assert result.content == CONTENT


# --- EC recipients: ephemeral-static ECDH key agreement (RFC 5753) ---

ECDH_SHA1 = "1.3.133.16.840.63.0.2"  # dhSinglePass-stdDH-sha1kdf-scheme, OpenSSL's default
ECDH_SHA256 = "1.3.132.1.11.1"
ECDH_SHA384 = "1.3.132.1.11.2"
WRAPS = {16: "aes128_wrap", 24: "aes192_wrap", 32: "aes256_wrap"}


class SharedInfo(core.Sequence):  # type: ignore[misc]
    _fields = [
        ("key_info", cms.KeyEncryptionAlgorithm),
        ("entity_u_info", core.OctetString, {"explicit": 0, "optional": True}),
        ("supp_pub_info", core.OctetString, {"explicit": 2}),
    ]


def kari(
    cert: x509.Certificate,
    cek: bytes,
    *,
    scheme: str = ECDH_SHA1,
    kdf_hash: hashes.HashAlgorithm | None = None,
    kek_size: int = 32,
    ukm: bytes | None = None,
    rid: cms.KeyAgreementRecipientIdentifier | None = None,
) -> cms.RecipientInfo:
    """A KeyAgreeRecipientInfo written independently of the module under test."""
    public_key = cert.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    ephemeral = ec.generate_private_key(public_key.curve)
    shared = SharedInfo(
        {
            "key_info": {"algorithm": WRAPS[kek_size]},
            "entity_u_info": ukm,
            "supp_pub_info": (kek_size * 8).to_bytes(4, "big"),
        }
    )
    kek = X963KDF(kdf_hash or hashes.SHA1(), kek_size, shared.dump()).derive(
        ephemeral.exchange(ec.ECDH(), public_key)
    )
    asn1_cert = asn1_x509.Certificate.load(cert.public_bytes(DER))
    if rid is None:
        rid = cms.KeyAgreementRecipientIdentifier(
            name="issuer_and_serial_number",
            value={"issuer": asn1_cert.issuer, "serial_number": asn1_cert.serial_number},
        )
    point = ephemeral.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    fields: dict[str, object] = {
        "version": "v3",
        "originator": cms.OriginatorIdentifierOrKey(
            name="originator_key",
            value={"algorithm": {"algorithm": "ec"}, "public_key": point},
        ),
        "key_encryption_algorithm": {
            "algorithm": scheme,
            "parameters": cms.KeyEncryptionAlgorithm({"algorithm": WRAPS[kek_size]}),
        },
        "recipient_encrypted_keys": [{"rid": rid, "encrypted_key": aes_key_wrap(kek, cek)}],
    }
    if ukm is not None:
        fields["ukm"] = ukm
    return cms.RecipientInfo(name="kari", value=fields)


@pytest.mark.parametrize(
    "curve", [ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1()], ids=lambda c: c.name
)
@pytest.mark.parametrize("cipher", CIPHERS)
def test_ec_round_trip(cipher: str, curve: ec.EllipticCurve) -> None:
    key = ec.generate_private_key(curve)
    cert = make_cert(key, "Erin")
    result = decrypt(encrypt(CONTENT, [cert], cipher=cipher), cert, key)  # type: ignore[arg-type]
    assert result == Decrypted(
        content=CONTENT, cipher=cipher, key_transport="ecdh", recipient_count=1
    )


@pytest.mark.parametrize("cipher", CIPHERS)
def test_mixed_rsa_and_ec_recipients(
    alice: x509.Certificate,
    alice_key: rsa.RSAPrivateKey,
    bob: x509.Certificate,
    bob_key: rsa.RSAPrivateKey,
    dave: x509.Certificate,
    dave_key: ec.EllipticCurvePrivateKey,
    cipher: str,
) -> None:
    message = encrypt(CONTENT, [alice, dave, bob], cipher=cipher, key_transport="oaep")  # type: ignore[arg-type]
    expected: list[tuple[x509.Certificate, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, str]] = [
        (alice, alice_key, "oaep"),
        (dave, dave_key, "ecdh"),
        (bob, bob_key, "oaep"),
    ]
    for cert, key, transport in expected:
        result = decrypt(message, cert, key)
        assert (result.content, result.key_transport, result.recipient_count) == (
            CONTENT,
            transport,
            3,
        )


def test_ec_structure_written(alice: x509.Certificate, dave: x509.Certificate) -> None:
    env = cms.ContentInfo.load(encrypt(CONTENT, [alice, dave]))["content"]
    assert env["version"].native == "v2"  # RFC 5652 §6.1: a version-3 kari is present
    (info,) = [r.chosen for r in env["recipient_infos"] if r.name == "kari"]
    assert info["version"].native == "v3"
    originator = info["originator"]
    assert originator.name == "originator_key"
    assert originator.chosen["algorithm"]["algorithm"].native == "ec"
    assert isinstance(originator.chosen["algorithm"]["parameters"], core.Void)
    assert len(originator.chosen["public_key"].native) == 65  # uncompressed P-256 point
    algorithm = info["key_encryption_algorithm"]
    assert algorithm["algorithm"].dotted == ECDH_SHA256
    wrap = cms.KeyEncryptionAlgorithm.load(algorithm["parameters"].dump())
    assert wrap["algorithm"].native == "aes256_wrap"
    assert isinstance(wrap["parameters"], core.Void)
    assert isinstance(info["ukm"], core.Void)
    (recipient_key,) = info["recipient_encrypted_keys"]
    assert recipient_key["rid"].chosen["serial_number"].native == 1004
    assert len(recipient_key["encrypted_key"].native) == 40  # 32-byte CEK + 8 (RFC 3394)
    gcm = cms.ContentInfo.load(encrypt(CONTENT, [dave], cipher="aes256-gcm"))["content"]
    assert gcm["version"].native == "v0"  # AuthEnvelopedData is always version 0


@pytest.mark.parametrize(
    ("scheme", "kdf_hash", "kek_size", "ukm"),
    [
        (ECDH_SHA1, hashes.SHA1(), 32, None),
        (ECDH_SHA1, hashes.SHA1(), 16, b"user keying material"),
        (ECDH_SHA256, hashes.SHA256(), 24, None),
        (ECDH_SHA384, hashes.SHA384(), 32, b"\x00" * 64),
        ("1.3.132.1.14.1", hashes.SHA256(), 16, None),  # cofactorDH: the same on P-256
    ],
    ids=["sha1", "sha1-aes128wrap-ukm", "sha256-aes192wrap", "sha384-ukm", "cofactor-sha256"],
)
def test_ec_schemes_read(
    dave: x509.Certificate,
    dave_key: ec.EllipticCurvePrivateKey,
    scheme: str,
    kdf_hash: hashes.HashAlgorithm,
    kek_size: int,
    ukm: bytes | None,
) -> None:
    cek = os.urandom(32)
    info = kari(dave, cek, scheme=scheme, kdf_hash=kdf_hash, kek_size=kek_size, ukm=ukm)
    result = decrypt(cbc_message([info], cek), dave, dave_key)
    assert (result.content, result.key_transport) == (CONTENT, "ecdh")


def test_ec_kdf_mismatch_cannot_decrypt(
    dave: x509.Certificate, dave_key: ec.EllipticCurvePrivateKey
) -> None:
    cek = os.urandom(32)
    info = kari(dave, cek, scheme=ECDH_SHA256, kdf_hash=hashes.SHA1())
    with pytest.raises(CMSError, match=f"^{CANNOT}$"):
        decrypt(cbc_message([info], cek), dave, dave_key)


def test_ec_recipient_key_identifier(
    dave: x509.Certificate, dave_key: ec.EllipticCurvePrivateKey, alice: x509.Certificate
) -> None:
    cek = os.urandom(32)
    ski = dave.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    rid = cms.KeyAgreementRecipientIdentifier(
        name="r_key_id", value={"subject_key_identifier": ski}
    )
    message = cbc_message([ktri(alice, cek), kari(dave, cek, rid=rid)], cek)
    assert decrypt(message, dave, dave_key).content == CONTENT
    other = cms.KeyAgreementRecipientIdentifier(
        name="r_key_id", value={"subject_key_identifier": b"\x02" * 20}
    )
    with pytest.raises(CMSError, match="not for this recipient"):
        decrypt(cbc_message([kari(dave, cek, rid=other)], cek), dave, dave_key)


def test_ec_not_for_this_recipient(
    dave: x509.Certificate, alice: x509.Certificate, alice_key: rsa.RSAPrivateKey
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    other = make_cert(key, "Other", serial=1004, issuer="Another Issuer")
    message = encrypt(CONTENT, [dave, alice])
    with pytest.raises(CMSError, match="not for this recipient"):
        decrypt(message, other, key)


@pytest.mark.parametrize("cipher", ["aes256-cbc", "aes256-gcm"])
def test_ec_tampering(
    dave: x509.Certificate, dave_key: ec.EllipticCurvePrivateKey, cipher: str
) -> None:
    message = encrypt(CONTENT, [dave], cipher=cipher)  # type: ignore[arg-type]
    info = cms.ContentInfo.load(message)["content"]["recipient_infos"][0].chosen
    wrapped = info["recipient_encrypted_keys"][0]["encrypted_key"].native
    point = info["originator"].chosen["public_key"].native
    # The AES key wrap's integrity check catches a changed key or a changed point.
    for needle, offset in [(wrapped, 0), (wrapped, 39), (point, 40)]:
        with pytest.raises(CMSError) as caught:
            decrypt(flip(message, needle, offset), dave, dave_key)
        assert str(caught.value) == CANNOT or "not a point on secp256r1" in str(caught.value)


def test_ec_static_originator_refused(
    dave: x509.Certificate, dave_key: ec.EllipticCurvePrivateKey
) -> None:
    cek = os.urandom(32)
    info = kari(dave, cek)
    info.chosen["originator"] = cms.OriginatorIdentifierOrKey(
        name="subject_key_identifier", value=b"\x01" * 20
    )
    with pytest.raises(CMSError, match="only ephemeral-static ECDH is supported"):
        decrypt(cbc_message([info], cek), dave, dave_key)


def test_ec_unsupported_key_wrap(
    dave: x509.Certificate, dave_key: ec.EllipticCurvePrivateKey
) -> None:
    cek = os.urandom(24)
    info = kari(dave, cek)
    info.chosen["key_encryption_algorithm"] = {
        "algorithm": ECDH_SHA1,
        "parameters": cms.KeyEncryptionAlgorithm(
            {"algorithm": "1.2.840.113549.1.9.16.3.6", "parameters": core.Null()}
        ),
    }
    with pytest.raises(CMSError, match=r"key wrap algorithm 1\.2\.840\.113549\.1\.9\.16\.3\.6"):
        decrypt(cbc_message([info], cek, des3=True), dave, dave_key)


@pytest.fixture(scope="module")
def ec_fuzz_targets(dave: x509.Certificate, alice: x509.Certificate) -> dict[str, bytes]:
    cek = os.urandom(16)
    return {
        "cbc": encrypt(CONTENT, [dave, alice]),
        "gcm": encrypt(CONTENT, [alice, dave], cipher="aes256-gcm"),
        "ber-gcm": to_ber(encrypt(CONTENT, [dave], cipher="aes256-gcm"), chunk=31),
        "sha1-ukm": cbc_message([kari(dave, cek, ukm=b"user keying material")], cek),
    }


@settings(max_examples=400, deadline=None, database=None)
@given(
    target=st.sampled_from(["cbc", "gcm", "ber-gcm", "sha1-ukm"]),
    position=st.floats(min_value=0, max_value=1, exclude_max=True),
    value=st.integers(0, 255),
)
def test_mutations_ec(
    ec_fuzz_targets: dict[str, bytes],
    dave: x509.Certificate,
    dave_key: ec.EllipticCurvePrivateKey,
    target: str,
    position: float,
    value: int,
) -> None:
    mutated = bytearray(ec_fuzz_targets[target])
    mutated[int(position * len(mutated))] = value
    try:
        result = decrypt(bytes(mutated), dave, dave_key)
    except CMSError:
        return
    assert result.key_transport == "ecdh"
    if "gcm" in target:
        assert result.content == CONTENT


def test_ec_decrypt_refuses_other_curves(messages: dict[tuple[str, str], bytes]) -> None:
    key = ec.generate_private_key(ec.SECP256K1())
    with pytest.raises(CMSError, match="only P-256, P-384 and P-521 are supported"):
        decrypt(messages["aes256-cbc", "oaep"], make_cert(key, "Eve"), key)
