"""CMS encryption: EnvelopedData (RFC 5652) and AuthEnvelopedData (RFC 5083/5084).

pyca/cryptography 50 cannot write AES-GCM AuthEnvelopedData, RSA-OAEP or ECDH
recipients and cannot read BER, OAEP, GCM or 3DES messages, so both directions
are done here with asn1crypto for the structure and cryptography for the primitives.

Supported, both ways unless noted:

- RSA key transport (KeyTransRecipientInfo): rsaEncryption (PKCS#1 v1.5) and
  id-RSAES-OAEP. `encrypt` writes OAEP as SHA-256 with MGF1-SHA-256, parameters
  spelt out (RFC 4055); `decrypt` reads any OAEP parameters with SHA-1/SHA-2
  hashes and MGF1 (absent parameters mean SHA-1, as RFC 4055 defines), and a label.
  The RSA private key may be a callable (a PKCS#11 token).
- EC key agreement (KeyAgreeRecipientInfo, RFC 5753), P-256/P-384/P-521:
  ephemeral-static ECDH. `encrypt` writes dhSinglePass-stdDH-sha256kdf-scheme with
  AES-256 key wrap; `decrypt` reads the stdDH and cofactorDH schemes with SHA-1 or
  SHA-2 X9.63 KDFs (OpenSSL's default is SHA-1), AES-128/192/256 key wrap, a ukm,
  and recipients named by issuerAndSerialNumber or rKeyId. The EC private key must
  be a key object.
- Content encryption: AES-128/256-CBC (EnvelopedData), AES-256-GCM
  (AuthEnvelopedData: 12-byte nonce, 16-byte tag). `decrypt` also reads
  AES-192-CBC, AES-128/192-GCM (tags of 12 to 16 bytes, authenticated attributes)
  and DES-EDE3-CBC, which older mail clients still send.
- Input to `decrypt`: DER, BER (indefinite lengths and chunked OCTET STRINGs, as
  `openssl cms -stream` and gpgsm write) or PEM. Our RecipientInfo is found by
  issuerAndSerialNumber or subjectKeyIdentifier.

Not supported: static-static ECDH (an originator named by certificate), the 3DES
key wrap (ECDH with 3DES content), KEK and password recipients, RC2/DES, CBC
inside AuthEnvelopedData or GCM inside EnvelopedData, content types other than
id-data.

Padding-oracle hygiene (Bleichenbacher, Manger): when the PKCS#1 v1.5 unwrap of
the content-encryption key fails, or yields a key of the wrong length, `decrypt`
carries on with a random key of the right length, so the failure surfaces only
at the content step (CBC padding or the GCM tag) with the same message as any
other decryption failure: "the message cannot be decrypted with this key". An
OAEP or AES key-unwrap failure gives that same message directly. A caveat of
plain CBC EnvelopedData (not of this code): with a random key, about 1 in 256
messages happens to end in valid padding, and then garbage is returned as
content; and CBC content can be altered undetected (no integrity). Only
AuthEnvelopedData (GCM) detects a wrong key or altered ciphertext reliably.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from asn1crypto import algos, cms, core
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.padding import AsymmetricPadding
from cryptography.hazmat.primitives.ciphers import Cipher as _Cipher
from cryptography.hazmat.primitives.ciphers import algorithms, modes
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from mailpki.cms._der import (
    children,
    definite_lengths,
    der_length,
    octets,
    one_line,
    read_tlv,
    unarmour,
)
from mailpki.errors import CMSError, MailPKIError

__all__ = [
    "Cipher",
    "Decrypted",
    "KeyTransport",
    "PrivateKeyDecrypt",
    "decrypt",
    "encrypt",
]

Cipher = Literal["aes256-cbc", "aes128-cbc", "aes256-gcm"]
KeyTransport = Literal["pkcs1v15", "oaep"]
# What a token-backed key offers: RSA decryption of `ciphertext` with `padding`.
# It must raise ValueError (or any exception that is not a MailPKIError) when the
# decryption itself fails; a MailPKIError means the key cannot be used at all
# (token gone, padding not offered) and is reported as such.
PrivateKeyDecrypt = Callable[[bytes, AsymmetricPadding], bytes]

MAX_SIZE = 64 * 1024 * 1024

_OID_DATA = "1.2.840.113549.1.7.1"
_OID_ENVELOPED_DATA = "1.2.840.113549.1.7.3"
_OID_AUTH_ENVELOPED_DATA = "1.2.840.113549.1.9.16.1.23"
_OID_RSA = "1.2.840.113549.1.1.1"
_OID_OAEP = "1.2.840.113549.1.1.7"
_OID_MGF1 = "1.2.840.113549.1.1.8"
_OID_P_SPECIFIED = "1.2.840.113549.1.1.9"

_CANNOT_DECRYPT = "the message cannot be decrypted with this key"


@dataclass(frozen=True)
class _ContentCipher:
    name: str
    key_size: int  # bytes
    mode: Literal["cbc", "gcm"]
    block_size: int  # bytes; the IV size for CBC


_CONTENT_CIPHERS: dict[str, _ContentCipher] = {
    "2.16.840.1.101.3.4.1.2": _ContentCipher("aes128-cbc", 16, "cbc", 16),
    "2.16.840.1.101.3.4.1.22": _ContentCipher("aes192-cbc", 24, "cbc", 16),
    "2.16.840.1.101.3.4.1.42": _ContentCipher("aes256-cbc", 32, "cbc", 16),
    "2.16.840.1.101.3.4.1.6": _ContentCipher("aes128-gcm", 16, "gcm", 16),
    "2.16.840.1.101.3.4.1.26": _ContentCipher("aes192-gcm", 24, "gcm", 16),
    "2.16.840.1.101.3.4.1.46": _ContentCipher("aes256-gcm", 32, "gcm", 16),
    "1.2.840.113549.3.7": _ContentCipher("des-ede3-cbc", 24, "cbc", 8),
}
_BY_NAME = {spec.name: oid for oid, spec in _CONTENT_CIPHERS.items()}

_OAEP_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "1.3.14.3.2.26": hashes.SHA1,
    "2.16.840.1.101.3.4.2.4": hashes.SHA224,
    "2.16.840.1.101.3.4.2.1": hashes.SHA256,
    "2.16.840.1.101.3.4.2.2": hashes.SHA384,
    "2.16.840.1.101.3.4.2.3": hashes.SHA512,
}

# ECDH key agreement (RFC 5753): dhSinglePass schemes -> the X9.63 KDF's hash.
# For the prime curves allowed here the cofactor is 1, so cofactorDH is the same.
_OID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
_OID_ECDH_SHA256 = "1.3.132.1.11.1"  # dhSinglePass-stdDH-sha256kdf-scheme
_OID_AES256_WRAP = "2.16.840.1.101.3.4.1.45"
_ECDH_SCHEMES: dict[str, type[hashes.HashAlgorithm]] = {
    "1.3.133.16.840.63.0.2": hashes.SHA1,  # dhSinglePass-stdDH-sha1kdf-scheme
    "1.3.132.1.11.0": hashes.SHA224,
    _OID_ECDH_SHA256: hashes.SHA256,
    "1.3.132.1.11.2": hashes.SHA384,
    "1.3.132.1.11.3": hashes.SHA512,
    "1.3.133.16.840.63.0.3": hashes.SHA1,  # dhSinglePass-cofactorDH-sha1kdf-scheme
    "1.3.132.1.14.0": hashes.SHA224,
    "1.3.132.1.14.1": hashes.SHA256,
    "1.3.132.1.14.2": hashes.SHA384,
    "1.3.132.1.14.3": hashes.SHA512,
}
_KEY_WRAPS: dict[str, int] = {  # AES key wrap (RFC 3394) -> KEK size in bytes
    "2.16.840.1.101.3.4.1.5": 16,
    "2.16.840.1.101.3.4.1.25": 24,
    _OID_AES256_WRAP: 32,
}
_EC_CURVES = ("secp256r1", "secp384r1", "secp521r1")

_GCM_NONCE_SIZE = 12
_GCM_TAG_SIZE = 16


class _GcmParameters(core.Sequence):  # type: ignore[misc]
    """GCMParameters (RFC 5084 §3.2)."""

    _fields = [  # noqa: RUF012 - asn1crypto's schema idiom
        ("aes_nonce", core.OctetString),
        ("aes_icvlen", core.Integer, {"default": 12}),
    ]


class _EccCmsSharedInfo(core.Sequence):  # type: ignore[misc]
    """ECC-CMS-SharedInfo (RFC 5753 §7.2), the X9.63 KDF's SharedInfo."""

    _fields = [  # noqa: RUF012 - asn1crypto's schema idiom
        ("key_info", cms.KeyEncryptionAlgorithm),
        ("entity_u_info", core.OctetString, {"explicit": 0, "optional": True}),
        ("supp_pub_info", core.OctetString, {"explicit": 2}),
    ]


@dataclass(frozen=True)
class Decrypted:
    """What `decrypt` found: the content and how it was protected."""

    content: bytes
    cipher: str  # "aes256-cbc", "aes256-gcm", "des-ede3-cbc", ...
    key_transport: str  # "pkcs1v15" | "oaep" | "ecdh" (key agreement, EC recipients)
    recipient_count: int  # RecipientInfos in the message, ours included


def encrypt(
    content: bytes,
    recipients: Sequence[x509.Certificate],
    *,
    cipher: Cipher = "aes256-cbc",
    key_transport: KeyTransport = "pkcs1v15",
) -> bytes:
    """DER ContentInfo encrypting `content` for every certificate in `recipients`.

    CBC ciphers give EnvelopedData, "aes256-gcm" gives AuthEnvelopedData (12-byte
    nonce, 16-byte tag). Every recipient is named by issuerAndSerialNumber. An RSA
    recipient (at least 2048 bits) gets a KeyTransRecipientInfo: the content-
    encryption key wrapped with RSA PKCS#1 v1.5 or RSA-OAEP (SHA-256, MGF1-SHA-256),
    as `key_transport` says. An EC recipient (P-256, P-384, P-521) gets a
    KeyAgreeRecipientInfo of its own: ephemeral-static ECDH,
    dhSinglePass-stdDH-sha256kdf-scheme, AES-256 key wrap (RFC 5753);
    `key_transport` does not apply to it. Raises CMSError for bad arguments.
    """
    if not isinstance(content, bytes | bytearray | memoryview):
        raise CMSError("the content to encrypt must be bytes")
    content = bytes(content)
    if len(content) > MAX_SIZE:
        raise CMSError(f"the content is {len(content)} bytes, over the limit of {MAX_SIZE}")
    if cipher not in get_args(Cipher):
        raise CMSError(f"unknown cipher {cipher!r}: use one of {', '.join(get_args(Cipher))}")
    if key_transport not in get_args(KeyTransport):
        raise CMSError(
            f"unknown key transport {key_transport!r}: use one of "
            f"{', '.join(get_args(KeyTransport))}"
        )
    if isinstance(recipients, x509.Certificate) or not recipients:
        raise CMSError("at least one recipient certificate is needed")
    spec = _CONTENT_CIPHERS[_BY_NAME[cipher]]
    targets = _recipient_keys(recipients)

    cek = os.urandom(spec.key_size)
    wrap_padding, wrap_algorithm = _wrap_padding(key_transport)
    recipient_infos = []
    for asn1_cert, public_key in targets:
        issuer_and_serial = cms.IssuerAndSerialNumber(
            {"issuer": asn1_cert.issuer, "serial_number": asn1_cert.serial_number}
        )
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            recipient_infos.append(_key_agree_info(issuer_and_serial, public_key, cek))
            continue
        ktri = cms.KeyTransRecipientInfo(
            {
                "version": "v0",
                "rid": cms.RecipientIdentifier(
                    name="issuer_and_serial_number", value=issuer_and_serial
                ),
                "key_encryption_algorithm": wrap_algorithm,
                "encrypted_key": public_key.encrypt(cek, wrap_padding),
            }
        )
        recipient_infos.append(cms.RecipientInfo(name="ktri", value=ktri))
    # RFC 5652 §6.1: version 2 as soon as one RecipientInfo is not version 0 (kari is 3).
    version = "v2" if any(info.name == "kari" for info in recipient_infos) else "v0"

    if spec.mode == "cbc":
        iv = os.urandom(spec.block_size)
        padder = sym_padding.PKCS7(spec.block_size * 8).padder()
        padded = padder.update(content) + padder.finalize()
        encryptor = _Cipher(algorithms.AES(cek), modes.CBC(iv)).encryptor()
        ciphertext = encryptor.update(padded) + encryptor.finalize()
        enveloped = cms.EnvelopedData(
            {
                "version": version,
                "recipient_infos": recipient_infos,
                "encrypted_content_info": _encrypted_content_info(
                    spec, core.OctetString(iv), ciphertext
                ),
            }
        )
        info = cms.ContentInfo({"content_type": "enveloped_data", "content": enveloped})
    else:
        nonce = os.urandom(_GCM_NONCE_SIZE)
        encryptor = _Cipher(algorithms.AES(cek), modes.GCM(nonce)).encryptor()
        ciphertext = encryptor.update(content) + encryptor.finalize()
        params = _GcmParameters({"aes_nonce": nonce, "aes_icvlen": _GCM_TAG_SIZE})
        auth_enveloped = cms.AuthEnvelopedData(
            {
                "version": "v0",
                "recipient_infos": recipient_infos,
                "auth_encrypted_content_info": _encrypted_content_info(spec, params, ciphertext),
                "mac": encryptor.tag,
            }
        )
        info = cms.ContentInfo(
            {"content_type": "authenticated_enveloped_data", "content": auth_enveloped}
        )
    encoded: bytes = info.dump()
    return encoded


def _recipient_keys(
    recipients: Sequence[x509.Certificate],
) -> list[tuple[asn1_x509.Certificate, rsa.RSAPublicKey | ec.EllipticCurvePublicKey]]:
    """(asn1crypto certificate, public key) of each recipient; refuses duplicates."""
    seen: set[tuple[bytes, int]] = set()
    targets: list[tuple[asn1_x509.Certificate, rsa.RSAPublicKey | ec.EllipticCurvePublicKey]] = []
    for cert in recipients:
        if not isinstance(cert, x509.Certificate):
            raise CMSError("every recipient must be an x509.Certificate")
        try:
            public_key = cert.public_key()
        except ValueError as exc:
            raise CMSError(f"a recipient's public key cannot be read: {one_line(exc)}") from exc
        subject = cert.subject.rfc4514_string()
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            if public_key.curve.name not in _EC_CURVES:
                raise CMSError(
                    f"the recipient {subject} has an EC key on {public_key.curve.name}; "
                    "only P-256, P-384 and P-521 are supported"
                )
        elif not isinstance(public_key, rsa.RSAPublicKey):
            raise CMSError(f"the recipient {subject} has neither an RSA nor an EC key")
        elif public_key.key_size < 2048:
            raise CMSError(
                f"the recipient {subject} has a {public_key.key_size}-bit RSA key; "
                "at least 2048 bits are needed"
            )
        key = (cert.issuer.public_bytes(), cert.serial_number)
        if key in seen:
            raise CMSError(f"the recipient {subject} is listed more than once")
        seen.add(key)
        asn1_cert = asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
        targets.append((asn1_cert, public_key))
    return targets


def _shared_info(wrap_oid: str, ukm: bytes | None, kek_size: int) -> bytes:
    info = _EccCmsSharedInfo(
        {
            # The key wrap algorithm with absent parameters, as RFC 5753 and OpenSSL have it.
            "key_info": cms.KeyEncryptionAlgorithm({"algorithm": wrap_oid}),
            "entity_u_info": ukm,
            "supp_pub_info": (kek_size * 8).to_bytes(4, "big"),
        }
    )
    encoded: bytes = info.dump()
    return encoded


def _key_agree_info(
    issuer_and_serial: cms.IssuerAndSerialNumber,
    public_key: ec.EllipticCurvePublicKey,
    cek: bytes,
) -> cms.RecipientInfo:
    """KeyAgreeRecipientInfo: ephemeral-static ECDH, X9.63 KDF with SHA-256, AES-256 wrap."""
    ephemeral = ec.generate_private_key(public_key.curve)
    shared_secret = ephemeral.exchange(ec.ECDH(), public_key)
    kek = X963KDF(
        algorithm=hashes.SHA256(), length=32, sharedinfo=_shared_info(_OID_AES256_WRAP, None, 32)
    ).derive(shared_secret)
    point = ephemeral.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    kari = cms.KeyAgreeRecipientInfo(
        {
            "version": "v3",
            "originator": cms.OriginatorIdentifierOrKey(
                name="originator_key",
                value=asn1_keys.PublicKeyInfo(
                    {"algorithm": {"algorithm": "ec"}, "public_key": point}
                ),
            ),
            "key_encryption_algorithm": cms.KeyEncryptionAlgorithm(
                {
                    "algorithm": _OID_ECDH_SHA256,
                    "parameters": cms.KeyEncryptionAlgorithm({"algorithm": "aes256_wrap"}),
                }
            ),
            "recipient_encrypted_keys": [
                {
                    "rid": cms.KeyAgreementRecipientIdentifier(
                        name="issuer_and_serial_number", value=issuer_and_serial
                    ),
                    "encrypted_key": aes_key_wrap(kek, cek),
                }
            ],
        }
    )
    return cms.RecipientInfo(name="kari", value=kari)


def _wrap_padding(key_transport: str) -> tuple[AsymmetricPadding, cms.KeyEncryptionAlgorithm]:
    if key_transport == "oaep":
        params = algos.RSAESOAEPParams(
            {
                "hash_algorithm": {"algorithm": "sha256"},
                "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": "sha256"}},
            }
        )
        return (
            padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None),
            cms.KeyEncryptionAlgorithm({"algorithm": "rsaes_oaep", "parameters": params}),
        )
    return padding.PKCS1v15(), cms.KeyEncryptionAlgorithm(
        {"algorithm": "rsaes_pkcs1v15", "parameters": core.Null()}
    )


def _encrypted_content_info(
    spec: _ContentCipher, params: core.Asn1Value, ciphertext: bytes
) -> cms.EncryptedContentInfo:
    return cms.EncryptedContentInfo(
        {
            "content_type": "data",
            "content_encryption_algorithm": algos.EncryptionAlgorithm(
                {"algorithm": _BY_NAME[spec.name], "parameters": params}
            ),
            "encrypted_content": ciphertext,
        }
    )


def decrypt(
    data: bytes,
    certificate: x509.Certificate,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | PrivateKeyDecrypt,
    *,
    max_size: int = MAX_SIZE,
) -> Decrypted:
    """Decrypt a CMS EnvelopedData or AuthEnvelopedData message (DER, BER or PEM)
    addressed to `certificate`, whose private key is `key`. For an RSA certificate
    `key` is an RSA key object or a callable `(ciphertext, padding) -> plaintext`
    doing the RSA decryption (a PKCS#11 token), which must raise ValueError when
    decryption fails; for an EC certificate it is an EC key object.

    Finds the RecipientInfo naming `certificate` (issuerAndSerialNumber or
    subjectKeyIdentifier): a KeyTransRecipientInfo for RSA, a
    KeyAgreeRecipientInfo (ephemeral-static ECDH, RFC 5753) for EC. Unwraps the
    content-encryption key and decrypts and checks the content (CBC padding, GCM
    tag). Any failure of the key or of the content gives the one message "the
    message cannot be decrypted with this key" (see the module notes on padding
    oracles); a message without a RecipientInfo for `certificate` gives "... not
    for this recipient ...".

    Raises CMSError, and nothing else, for any message that cannot be decrypted.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CMSError("the CMS message must be bytes")
    if len(data) > max_size:
        raise CMSError(f"the CMS message is {len(data)} bytes, over the limit of {max_size}")
    if not isinstance(certificate, x509.Certificate):
        raise CMSError("the recipient certificate must be an x509.Certificate")
    unwrap = _unwrapper(certificate, key)
    der = unarmour(bytes(data))
    try:
        return _decrypt(_join_encrypted_content(definite_lengths(der)), certificate, unwrap)
    except CMSError:
        raise
    except Exception as exc:
        # asn1crypto parses lazily and has no exception contract: malformed bytes
        # surface as ValueError, TypeError, KeyError... wherever a field is read.
        raise CMSError(f"the CMS message is malformed: {one_line(exc)}") from exc


def _unwrapper(
    certificate: x509.Certificate,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | PrivateKeyDecrypt,
) -> PrivateKeyDecrypt | ec.EllipticCurvePrivateKey:
    """The RSA decryption function or the EC key of `key`, after checking it fits
    `certificate`."""
    try:
        public_key = certificate.public_key()
    except ValueError as exc:
        raise CMSError(f"the recipient's public key cannot be read: {one_line(exc)}") from exc
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CMSError("the recipient certificate has an EC key: the private key must be EC")
        if public_key.curve.name not in _EC_CURVES:
            raise CMSError(
                f"the recipient certificate's EC key is on {public_key.curve.name}; "
                "only P-256, P-384 and P-521 are supported"
            )
        try:
            matches = key.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            ) == public_key.public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
        except Exception as exc:
            raise CMSError(f"the private key cannot be read: {one_line(exc)}") from exc
        if not matches or key.curve.name != public_key.curve.name:
            raise CMSError("the private key does not belong to the recipient certificate")
        return key
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise CMSError("the recipient certificate has neither an RSA nor an EC key")
    if isinstance(key, ec.EllipticCurvePrivateKey):
        raise CMSError("the recipient certificate has an RSA key: the private key must be RSA")
    if isinstance(key, rsa.RSAPrivateKey):
        try:
            matches = key.public_key().public_numbers() == public_key.public_numbers()
        except Exception as exc:
            raise CMSError(f"the private key cannot be read: {one_line(exc)}") from exc
        if not matches:
            raise CMSError("the private key does not belong to the recipient certificate")
        return key.decrypt
    if callable(key):
        return key
    raise CMSError("the private key must be an RSA private key or a decryption function")


def _join_encrypted_content(der: bytes) -> bytes:
    """`der` with a constructed encryptedContent [0] IMPLICIT OCTET STRING (as BER
    streaming writes it, and asn1crypto refuses) joined into a primitive one.
    Other shapes are left for the parser to judge."""
    _, top_contents, top_end = read_tlv(der, 0, len(der))
    path = [(0, top_contents, top_end)]
    top = children(der, top_contents, top_end)
    if len(top) != 2 or top[1][0] != 0xA0:
        return der
    explicit = children(der, top[1][2], top[1][3])
    if len(explicit) != 1 or explicit[0][0] != 0x30:
        return der
    path.append((top[1][1], top[1][2], top[1][3]))
    envelope = explicit[0]
    path.append((envelope[1], envelope[2], envelope[3]))
    fields = children(der, envelope[2], envelope[3])
    tags = [tag for tag, _, _, _ in fields]
    if 0x31 not in tags or 0x30 not in tags[tags.index(0x31) :]:
        return der
    eci = fields[tags.index(0x30, tags.index(0x31))]
    path.append((eci[1], eci[2], eci[3]))
    eci_fields = children(der, eci[2], eci[3])
    if len(eci_fields) != 3 or eci_fields[2][0] != 0xA0:
        return der
    _, start, contents, end = eci_fields[2]
    joined = b"".join(octets(der[s:e]) for _, s, _, e in children(der, contents, end))
    replacement = b"\x80" + der_length(len(joined)) + joined
    for outer_start, outer_contents, outer_end in reversed(path):
        body = der[outer_contents:start] + replacement + der[end:outer_end]
        replacement = der[outer_start : outer_start + 1] + der_length(len(body)) + body
        start, end = outer_start, outer_end
    return replacement


def _decrypt(
    der: bytes,
    certificate: x509.Certificate,
    unwrap: PrivateKeyDecrypt | ec.EllipticCurvePrivateKey,
) -> Decrypted:
    info = cms.ContentInfo.load(der, strict=True)
    content_type = info["content_type"].dotted
    if content_type == _OID_ENVELOPED_DATA:
        authenticated = False
        eci_field = "encrypted_content_info"
    elif content_type == _OID_AUTH_ENVELOPED_DATA:
        authenticated = True
        eci_field = "auth_encrypted_content_info"
    else:
        raise CMSError(
            f"the CMS message is not encrypted data (it is {info['content_type'].native})"
        )
    envelope = info["content"]
    if not isinstance(envelope, cms.EnvelopedData | cms.AuthEnvelopedData):
        raise CMSError("the CMS message is not encrypted data (the content is missing)")
    if envelope["version"].native not in ("v0", "v2", "v3", "v4"):
        raise CMSError("the EnvelopedData version is not one RFC 5652 defines")
    _ = envelope["originator_info"].native  # read it so a malformed one is refused

    recipient_infos = envelope["recipient_infos"]
    _ = recipient_infos.native
    if len(recipient_infos) == 0:
        raise CMSError("the CMS message has no recipients")

    eci = envelope[eci_field]
    if eci["content_type"].dotted != _OID_DATA:
        raise CMSError(f"the CMS message encrypts {eci['content_type'].native}, not data")
    algorithm = eci["content_encryption_algorithm"]
    oid = algorithm["algorithm"].dotted
    spec = _CONTENT_CIPHERS.get(oid)
    if spec is None:
        raise CMSError(
            f"the content encryption algorithm {algorithm['algorithm'].native} is not supported"
        )
    if authenticated != (spec.mode == "gcm"):
        kind = "AuthEnvelopedData" if authenticated else "EnvelopedData"
        raise CMSError(f"{spec.name} cannot be used in {kind}")
    encrypted = eci["encrypted_content"]
    if isinstance(encrypted, core.Void):
        raise CMSError("the CMS message carries no encrypted content (detached content)")
    ciphertext = bytes(encrypted)

    # _our_recipient_info() picks kari for an EC certificate, ktri for an RSA one,
    # and _unwrapper() gave an EC key for the first, a decryption function for the other.
    ours, encrypted_key = _our_recipient_info(recipient_infos, certificate)
    key_step: Callable[[int], bytes]
    if isinstance(ours, cms.KeyAgreeRecipientInfo) and isinstance(
        unwrap, ec.EllipticCurvePrivateKey
    ):
        agreement = _key_agreement(ours, unwrap)
        transport = "ecdh"

        def key_step(size: int) -> bytes:
            return _unwrap_agreed(agreement, encrypted_key, size)

    elif isinstance(ours, cms.KeyTransRecipientInfo) and not isinstance(
        unwrap, ec.EllipticCurvePrivateKey
    ):
        decrypt_key = unwrap
        wrap_padding, transport = _key_transport(ours["key_encryption_algorithm"])

        def key_step(size: int) -> bytes:
            return _unwrap_key(decrypt_key, encrypted_key, wrap_padding, size)

    else:  # pragma: no cover - excluded by the two functions named above
        raise CMSError("the recipient's key does not fit its RecipientInfo")

    # Everything that does not depend on the key is checked before the unwrap.
    if spec.mode == "cbc":
        iv, tag, aad = _cbc_iv(algorithm["parameters"], spec), b"", b""
        if not ciphertext or len(ciphertext) % spec.block_size:
            raise CMSError("the encrypted content is not a whole number of cipher blocks")
    else:
        assert isinstance(envelope, cms.AuthEnvelopedData)
        iv, tag = _gcm_nonce_and_tag(algorithm["parameters"], bytes(envelope["mac"]))
        aad = _auth_attrs_der(envelope["auth_attrs"])
        _ = envelope["unauth_attrs"].native

    cek = key_step(spec.key_size)
    content = _decrypt_content(spec, cek, iv, tag, aad, ciphertext)
    return Decrypted(
        content=content,
        cipher=spec.name,
        key_transport=transport,
        recipient_count=len(recipient_infos),
    )


def _our_recipient_info(
    recipient_infos: cms.RecipientInfos, certificate: x509.Certificate
) -> tuple[cms.KeyTransRecipientInfo | cms.KeyAgreeRecipientInfo, bytes]:
    """The first KeyTransRecipientInfo (RSA certificate) or KeyAgreeRecipientInfo
    (EC certificate) that names `certificate`, and the encrypted key it holds for it."""
    asn1_cert = asn1_x509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER))
    key_ids = {x509.SubjectKeyIdentifier.from_public_key(certificate.public_key()).digest}
    if asn1_cert.key_identifier is not None:
        key_ids = {asn1_cert.key_identifier}

    def names_us(rid: core.Choice) -> bool:
        if rid.name == "issuer_and_serial_number":
            return bool(
                rid.chosen["serial_number"].native == asn1_cert.serial_number
                and rid.chosen["issuer"] == asn1_cert.issuer
            )
        if rid.name == "subject_key_identifier":  # RecipientIdentifier (ktri)
            return rid.chosen.native in key_ids
        if rid.name == "r_key_id":  # KeyAgreementRecipientIdentifier (kari)
            return rid.chosen["subject_key_identifier"].native in key_ids
        return False

    want = "kari" if isinstance(certificate.public_key(), ec.EllipticCurvePublicKey) else "ktri"
    for recipient_info in recipient_infos:
        if recipient_info.name != want:
            continue  # other kinds (KEK, password, other) are never ours
        info = recipient_info.chosen
        if want == "ktri":
            if names_us(info["rid"]):
                return info, bytes(info["encrypted_key"])
            continue
        for recipient_key in info["recipient_encrypted_keys"]:
            if names_us(recipient_key["rid"]):
                return info, bytes(recipient_key["encrypted_key"])
    raise CMSError(
        "the message is not for this recipient: none of its recipients is "
        f"{certificate.subject.rfc4514_string()} (serial {certificate.serial_number:x})"
    )


@dataclass(frozen=True)
class _Agreement:
    """What a KeyAgreeRecipientInfo says, checked, ready for the key step."""

    key: ec.EllipticCurvePrivateKey
    originator: ec.EllipticCurvePublicKey
    kdf_hash: type[hashes.HashAlgorithm]
    wrap_oid: str
    kek_size: int
    ukm: bytes | None


def _key_agreement(kari: cms.KeyAgreeRecipientInfo, key: ec.EllipticCurvePrivateKey) -> _Agreement:
    if kari["version"].native != "v3":
        raise CMSError("the KeyAgreeRecipientInfo version is not 3")
    originator = kari["originator"]
    if originator.name != "originator_key":
        raise CMSError(
            "only ephemeral-static ECDH is supported (the originator is named by a certificate)"
        )
    originator_key = originator.chosen
    if originator_key["algorithm"]["algorithm"].dotted != _OID_EC_PUBLIC_KEY:
        raise CMSError("the originator key of the key agreement is not an EC key")
    point = originator_key["public_key"].native
    if not isinstance(point, bytes):
        raise CMSError("the originator key of the key agreement is malformed")
    try:
        peer = ec.EllipticCurvePublicKey.from_encoded_point(key.curve, point)
    except ValueError as exc:
        raise CMSError(
            f"the originator key is not a point on {key.curve.name}: {one_line(exc)}"
        ) from exc

    algorithm = kari["key_encryption_algorithm"]
    kdf_hash = _ECDH_SCHEMES.get(algorithm["algorithm"].dotted)
    if kdf_hash is None:
        raise CMSError(
            f"the key agreement algorithm {algorithm['algorithm'].native} is not supported "
            "(dhSinglePass ECDH with an X9.63 SHA-1/SHA-2 KDF is)"
        )
    params = algorithm["parameters"]
    if isinstance(params, core.Void | core.Null):
        raise CMSError("the key agreement algorithm does not name its key wrap algorithm")
    wrap = cms.KeyEncryptionAlgorithm.load(params.dump(), strict=True)
    wrap_oid = wrap["algorithm"].dotted
    kek_size = _KEY_WRAPS.get(wrap_oid)
    if kek_size is None:
        raise CMSError(
            f"the key wrap algorithm {wrap['algorithm'].native} is not supported (AES key wrap is)"
        )
    if not isinstance(wrap["parameters"], core.Void | core.Null):
        raise CMSError("the AES key wrap algorithm has unexpected parameters")
    ukm = kari["ukm"]
    return _Agreement(
        key=key,
        originator=peer,
        kdf_hash=kdf_hash,
        wrap_oid=wrap_oid,
        kek_size=kek_size,
        ukm=None if isinstance(ukm, core.Void) else bytes(ukm),
    )


def _unwrap_agreed(agreement: _Agreement, encrypted_key: bytes, size: int) -> bytes:
    """The content-encryption key from ECDH, the X9.63 KDF and AES key unwrap."""
    try:
        shared_secret = agreement.key.exchange(ec.ECDH(), agreement.originator)
    except MailPKIError as exc:
        raise CMSError(f"the private key cannot decrypt the message: {one_line(exc)}") from exc
    except Exception as exc:
        raise CMSError(_CANNOT_DECRYPT) from exc
    kek = X963KDF(
        algorithm=agreement.kdf_hash(),
        length=agreement.kek_size,
        sharedinfo=_shared_info(agreement.wrap_oid, agreement.ukm, agreement.kek_size),
    ).derive(shared_secret)
    try:
        cek = aes_key_unwrap(kek, encrypted_key)
    except (InvalidUnwrap, ValueError) as exc:
        raise CMSError(_CANNOT_DECRYPT) from exc
    if len(cek) != size:
        raise CMSError(_CANNOT_DECRYPT)
    return cek


def _key_transport(
    algorithm: cms.KeyEncryptionAlgorithm,
) -> tuple[AsymmetricPadding, str]:
    oid = algorithm["algorithm"].dotted
    params = algorithm["parameters"]
    if oid == _OID_RSA:
        if not isinstance(params, core.Void | core.Null):
            raise CMSError("the rsaEncryption key transport has unexpected parameters")
        return padding.PKCS1v15(), "pkcs1v15"
    if oid != _OID_OAEP:
        raise CMSError(
            f"the key transport algorithm {algorithm['algorithm'].native} is not supported "
            "(RSA PKCS#1 v1.5 and RSA-OAEP are)"
        )
    if isinstance(params, core.Void | core.Null):
        params = algos.RSAESOAEPParams({})  # RFC 4055: every field takes its SHA-1 default
    hash_cls = _oaep_hash(params["hash_algorithm"])
    mgf = params["mask_gen_algorithm"]
    if mgf["algorithm"].dotted != _OID_MGF1:
        raise CMSError("the RSA-OAEP mask generation function is not MGF1")
    mgf_hash_cls = _oaep_hash(mgf["parameters"])
    source = params["p_source_algorithm"]
    if source["algorithm"].dotted != _OID_P_SPECIFIED:
        raise CMSError("the RSA-OAEP label source is not pSpecified")
    label = source["parameters"].native if not isinstance(source["parameters"], core.Void) else b""
    if not isinstance(label, bytes):
        raise CMSError("the RSA-OAEP label is not an OCTET STRING")
    oaep = padding.OAEP(mgf=padding.MGF1(mgf_hash_cls()), algorithm=hash_cls(), label=label or None)
    return oaep, "oaep"


def _oaep_hash(algorithm: algos.DigestAlgorithm) -> type[hashes.HashAlgorithm]:
    if not isinstance(algorithm["parameters"], core.Void | core.Null):
        raise CMSError("the RSA-OAEP hash algorithm has unexpected parameters")
    hash_cls = _OAEP_HASHES.get(algorithm["algorithm"].dotted)
    if hash_cls is None:
        raise CMSError(
            f"the RSA-OAEP hash {algorithm['algorithm'].native} is not supported "
            "(SHA-1, SHA-224, SHA-256, SHA-384 and SHA-512 are)"
        )
    return hash_cls


def _cbc_iv(params: core.Asn1Value, spec: _ContentCipher) -> bytes:
    if isinstance(params, core.Void | core.Null):
        raise CMSError(f"the {spec.name} parameters (the IV) are missing")
    iv = params.native
    if not isinstance(iv, bytes) or len(iv) != spec.block_size:
        raise CMSError(f"the {spec.name} IV is not {spec.block_size} bytes")
    return iv


def _gcm_nonce_and_tag(params: core.Asn1Value, mac: bytes) -> tuple[bytes, bytes]:
    if isinstance(params, core.Void | core.Null):
        raise CMSError("the AES-GCM parameters (the nonce) are missing")
    gcm = _GcmParameters.load(params.dump(), strict=True)
    nonce = gcm["aes_nonce"].native
    tag_size = gcm["aes_icvlen"].native
    if not isinstance(nonce, bytes) or not 8 <= len(nonce) <= 64:
        raise CMSError("the AES-GCM nonce has an impossible size")
    if tag_size not in (12, 13, 14, 15, 16):
        raise CMSError("the AES-GCM tag length must be 12 to 16 bytes (RFC 5084)")
    if len(mac) != tag_size:
        raise CMSError(f"the AES-GCM tag is {len(mac)} bytes, not the {tag_size} announced")
    return nonce, mac


def _auth_attrs_der(attrs: core.Asn1Value) -> bytes:
    """The additional authenticated data: the DER of authAttrs as a SET (RFC 5083 §2.2)."""
    if isinstance(attrs, core.Void):
        return b""
    encoded: bytes = attrs.dump(force=True)
    if encoded[:1] != b"\xa1":
        raise CMSError("the CMS authenticated attributes are not tagged [1]")
    return b"\x31" + encoded[1:]


def _unwrap_key(
    unwrap: PrivateKeyDecrypt, encrypted_key: bytes, wrap_padding: AsymmetricPadding, size: int
) -> bytes:
    """The content-encryption key. For PKCS#1 v1.5 a failed unwrap gives a random key
    of the right size instead of an error (Bleichenbacher: see the module notes)."""
    decoy = os.urandom(size)
    try:
        cek = unwrap(encrypted_key, wrap_padding)
    except CMSError:
        raise
    except MailPKIError as exc:  # the key cannot be used at all (not a decryption failure)
        raise CMSError(f"the private key cannot decrypt the message: {one_line(exc)}") from exc
    except Exception as exc:
        if isinstance(wrap_padding, padding.PKCS1v15):
            return decoy
        raise CMSError(_CANNOT_DECRYPT) from exc
    if not isinstance(cek, bytes | bytearray) or len(cek) != size:
        if isinstance(wrap_padding, padding.PKCS1v15):
            return decoy
        raise CMSError(_CANNOT_DECRYPT)
    return bytes(cek)


def _decrypt_content(
    spec: _ContentCipher, cek: bytes, iv: bytes, tag: bytes, aad: bytes, ciphertext: bytes
) -> bytes:
    if spec.mode == "gcm":
        decryptor = _Cipher(
            algorithms.AES(cek), modes.GCM(iv, tag, min_tag_length=len(tag))
        ).decryptor()
        if aad:
            decryptor.authenticate_additional_data(aad)
        try:
            return decryptor.update(ciphertext) + decryptor.finalize()
        except InvalidTag as exc:
            raise CMSError(_CANNOT_DECRYPT) from exc
    block: algorithms.AES | TripleDES = (
        TripleDES(cek) if spec.name == "des-ede3-cbc" else algorithms.AES(cek)
    )
    cbc = _Cipher(block, modes.CBC(iv)).decryptor()
    padded = cbc.update(ciphertext) + cbc.finalize()
    unpadder = sym_padding.PKCS7(spec.block_size * 8).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError as exc:
        raise CMSError(_CANNOT_DECRYPT) from exc
