"""CMS (RFC 5652) SignedData: built and verified here, strictly.

Signing builds the SignedData itself (pyca/cryptography's builder cannot add the
encryption-key preference attributes); only the signature comes from the key, so a
PKCS#11 key signs unchanged. Verification parses the message with asn1crypto and
checks every step itself: exactly one SignerInfo, the signer's certificate carried in
the message, the contentType and messageDigest signed attributes, and the signature
over the signed attributes as received. Signed attributes mailpki does not know are
covered by that signature and reported by name, never parsed into a failure.

Verification proves only that the key in the returned signer certificate signed the
content. Whether that certificate is trustworthy (chain, validity, key usage,
revocation) is the caller's decision.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from asn1crypto import algos, cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from mailpki.cms._der import definite_lengths as _definite_lengths
from mailpki.cms._der import der_length as _der_length
from mailpki.cms._der import elements as _elements
from mailpki.cms._der import one_line as _one_line
from mailpki.cms._der import unarmour as _unarmour
from mailpki.cms.attributes import (
    EncryptionKeyPreference,
    RawAttributes,
    attribute_name,
    der_set,
    encode_attribute,
    preference_values,
    read_preference,
)
from mailpki.errors import CMSError

__all__ = ["EncryptionKeyPreference", "SignedContent", "sign", "verify_signed"]

_OID_DATA = "1.2.840.113549.1.7.1"
_OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
_OID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
_OID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
_OID_SIGNING_TIME = "1.2.840.113549.1.9.5"
_OID_MGF1 = "1.2.840.113549.1.1.8"
_OID_SMIME_CAPABILITIES = "1.2.840.113549.1.9.15"
_OID_SHA1 = "1.3.14.3.2.26"

_DIGESTS: dict[str, str] = {
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
}
_WEAK_DIGESTS = frozenset({_OID_SHA1, "1.2.840.113549.2.5", "1.2.840.113549.2.2"})
_HASHES: dict[str, type[hashes.SHA1 | hashes.SHA256 | hashes.SHA384 | hashes.SHA512]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}

# Signature algorithm OID -> (family, hash it implies or None when the
# SignerInfo's digestAlgorithm decides).
_RSA, _PSS, _ECDSA = "rsa", "pss", "ecdsa"
_SIGNATURES: dict[str, tuple[str, str | None]] = {
    "1.2.840.113549.1.1.1": (_RSA, None),  # rsaEncryption, as OpenSSL writes it
    "1.2.840.113549.1.1.11": (_RSA, "sha256"),
    "1.2.840.113549.1.1.12": (_RSA, "sha384"),
    "1.2.840.113549.1.1.13": (_RSA, "sha512"),
    "1.2.840.113549.1.1.10": (_PSS, None),  # hash is in the parameters
    "1.2.840.10045.2.1": (_ECDSA, None),  # id-ecPublicKey, seen in the wild
    "1.2.840.10045.4.3.2": (_ECDSA, "sha256"),
    "1.2.840.10045.4.3.3": (_ECDSA, "sha384"),
    "1.2.840.10045.4.3.4": (_ECDSA, "sha512"),
}
_WEAK_SIGNATURES = frozenset(
    {
        "1.2.840.113549.1.1.2",  # md2WithRSAEncryption
        "1.2.840.113549.1.1.4",  # md5WithRSAEncryption
    }
)
# Accepted only when the caller allows SHA-1 (mail from older clients).
_SHA1_SIGNATURES: dict[str, tuple[str, str | None]] = {
    "1.2.840.113549.1.1.5": (_RSA, "sha1"),  # sha1WithRSAEncryption
    "1.3.14.3.2.29": (_RSA, "sha1"),  # sha1WithRSASignature (OIW)
    "1.2.840.10045.4.1": (_ECDSA, "sha1"),  # ecdsa-with-SHA1
}
_WEAK_MESSAGE = "SHA-1/MD5 signatures are not accepted"
_SHA1_MESSAGE = _WEAK_MESSAGE + " here (mail from older clients: allow SHA-1 explicitly)"

# Capabilities announced in our signatures (RFC 8551 §2.5.2), most preferred first:
# the content ciphers mailpki decrypts.
_CAPABILITIES = (
    "2.16.840.1.101.3.4.1.46",  # id-aes256-GCM
    "2.16.840.1.101.3.4.1.42",  # id-aes256-CBC
    "2.16.840.1.101.3.4.1.22",  # id-aes192-CBC
    "2.16.840.1.101.3.4.1.2",  # id-aes128-CBC
)


class _SignerInfo(cms.SignerInfo):  # type: ignore[misc]
    """SignerInfo whose attributes are read as (type, raw values): see cms.attributes."""

    _fields = [  # noqa: RUF012 - asn1crypto's schema idiom
        (name, RawAttributes, *rest) if name in ("signed_attrs", "unsigned_attrs") else field
        for field in cms.SignerInfo._fields
        for name, _spec, *rest in [field]
    ]


class _SignerInfos(core.SetOf):  # type: ignore[misc]
    _child_spec = _SignerInfo


class _SignedData(cms.SignedData):  # type: ignore[misc]
    _fields = [  # noqa: RUF012 - asn1crypto's schema idiom
        ("signer_infos", _SignerInfos) if field[0] == "signer_infos" else field
        for field in cms.SignedData._fields
    ]


class _ContentInfo(cms.ContentInfo):  # type: ignore[misc]
    _oid_specs = {**cms.ContentInfo._oid_specs, "signed_data": _SignedData}  # noqa: RUF012


@dataclass(frozen=True)
class SignedContent:
    """What a verified SignedData message says, and who signed it."""

    content: bytes  # the encapsulated (or given detached) content
    signer: x509.Certificate  # the certificate whose key made the verified signature
    certificates: tuple[x509.Certificate, ...]  # every certificate carried in the message
    signing_time: dt.datetime | None  # the signingTime signed attribute (UTC), if present
    digest_algorithm: str  # e.g. "sha256"
    # Names of the signed attributes, in the order sent (unknown ones by OID).
    attributes: tuple[str, ...] = ()
    # The certificate the signer asks to be encrypted to, if the message says.
    encryption_preference: EncryptionKeyPreference | None = None

    @property
    def unknown_attributes(self) -> tuple[str, ...]:
        """The signed attributes mailpki does not interpret (covered by the signature)."""
        return tuple(name for name in self.attributes if set(name) <= set("0123456789."))


def sign(
    content: bytes,
    certificate: x509.Certificate,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    *,
    extra_certificates: Sequence[x509.Certificate] = (),
    detached: bool = False,
    pss: bool = False,
    encryption_certificate: x509.Certificate | None = None,
    extra_attributes: Sequence[tuple[str, bytes]] = (),
) -> bytes:
    """DER ContentInfo holding SignedData over `content`: SHA-256, signed attributes
    (contentType, signingTime, messageDigest, SMIMECapabilities), the signer's
    certificate and `extra_certificates` included. With `detached` the content is
    left out and must be passed to the verifier separately. With `pss` an RSA key signs
    with RSASSA-PSS (MGF1-SHA-256, salt of the digest length; RFC 4056) instead of
    PKCS#1 v1.5.

    With `encryption_certificate` the signature also carries the encryption-key
    preference, both as id-aa-encrypKeyPref (RFC 8551) and as Microsoft's attribute,
    naming that certificate (the signer's own in single-key mode, the encryption half
    in dual-key mode), and the certificate itself is included. `extra_attributes`
    (type OID, DER value) are signed as given, e.g. to reproduce another client's."""
    if _spki(key.public_key()) != _spki(certificate.public_key()):
        raise CMSError("the signing key does not belong to the signer certificate")
    if pss and not isinstance(key, rsa.RSAPrivateKey):
        raise CMSError("PSS is an RSA signature scheme; this key is not RSA")
    content = bytes(content)
    attributes = [
        encode_attribute(_OID_CONTENT_TYPE, core.ObjectIdentifier(_OID_DATA).dump()),
        encode_attribute(_OID_SIGNING_TIME, cms.Time({"utc_time": _now()}).dump()),
        encode_attribute(_OID_MESSAGE_DIGEST, core.OctetString(_sha256(content)).dump()),
        encode_attribute(_OID_SMIME_CAPABILITIES, _capabilities()),
    ]
    if encryption_certificate is not None:
        attributes += [
            encode_attribute(oid, v) for oid, v in preference_values(encryption_certificate)
        ]
    attributes += [encode_attribute(oid, value) for oid, value in extra_attributes]
    signed_attrs = der_set(attributes)  # what the signature covers (RFC 5652 §5.4)

    if isinstance(key, ec.EllipticCurvePrivateKey):
        signature = key.sign(signed_attrs, ec.ECDSA(hashes.SHA256()))
        signature_algorithm = algos.SignedDigestAlgorithm({"algorithm": "sha256_ecdsa"})
    elif pss:
        salt = hashes.SHA256.digest_size
        signature = key.sign(
            signed_attrs,
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=salt),
            hashes.SHA256(),
        )
        signature_algorithm = algos.SignedDigestAlgorithm(
            {
                "algorithm": "rsassa_pss",
                "parameters": {
                    "hash_algorithm": {"algorithm": "sha256"},
                    "mask_gen_algorithm": {
                        "algorithm": "mgf1",
                        "parameters": {"algorithm": "sha256"},
                    },
                    "salt_length": salt,
                },
            }
        )
    else:
        signature = key.sign(signed_attrs, padding.PKCS1v15(), hashes.SHA256())
        # rsaEncryption, as OpenSSL and NSS write it (the digest algorithm names the hash).
        signature_algorithm = algos.SignedDigestAlgorithm({"algorithm": "rsassa_pkcs1v15"})

    asn1_signer = asn1_x509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER))
    signer_info = _SignerInfo(
        {
            "version": "v1",
            "sid": cms.SignerIdentifier(
                {
                    "issuer_and_serial_number": {
                        "issuer": asn1_signer.issuer,
                        "serial_number": certificate.serial_number,
                    }
                }
            ),
            "digest_algorithm": {"algorithm": "sha256"},
            "signed_attrs": RawAttributes.load(signed_attrs),
            "signature_algorithm": signature_algorithm,
            "signature": signature,
        }
    )
    carried: dict[bytes, None] = {}
    for cert in (certificate, encryption_certificate, *extra_certificates):
        if cert is not None:
            carried.setdefault(cert.public_bytes(serialization.Encoding.DER))
    signed_data = _SignedData(
        {
            "version": "v1",
            "digest_algorithms": [{"algorithm": "sha256"}],
            "encap_content_info": {
                "content_type": "data",
                "content": None if detached else content,
            },
            "certificates": [asn1_x509.Certificate.load(der) for der in carried],
            "signer_infos": [signer_info],
        }
    )
    info: bytes = _ContentInfo({"content_type": "signed_data", "content": signed_data}).dump()
    return info


def _spki(public_key: object) -> bytes:
    if not isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise CMSError("only RSA and EC keys sign CMS messages")
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _sha256(content: bytes) -> bytes:
    return hashlib.sha256(content).digest()


def _capabilities() -> bytes:
    """SMIMECapabilities: SEQUENCE OF SEQUENCE { capabilityID } (no parameters)."""
    entries = b"".join(
        b"\x30" + _der_length(len(oid)) + oid
        for oid in (core.ObjectIdentifier(dotted).dump() for dotted in _CAPABILITIES)
    )
    return b"\x30" + _der_length(len(entries)) + entries


def verify_signed(
    data: bytes,
    *,
    detached_content: bytes | None = None,
    max_size: int = 16 * 1024 * 1024,
    allow_sha1: bool = False,
) -> SignedContent:
    """Verify a CMS SignedData message (DER, BER or PEM) with exactly one signer.

    Checks the structure, finds the signer's certificate among those carried in
    the message (by issuerAndSerialNumber or subjectKeyIdentifier), checks the
    contentType and messageDigest signed attributes and the signature. Accepts
    SHA-256/384/512 with RSA PKCS#1 v1.5, RSA-PSS or ECDSA; only id-data content.
    `allow_sha1` also accepts SHA-1 (mail signed by older clients); MD5 never.

    Signed attributes it does not know are reported in `SignedContent.attributes`;
    the encryption-key preference, if stated, in `encryption_preference` (a damaged or
    dangling one is described there, it does not fail the verification).

    It does NOT check the signer certificate's chain, validity period, key usage
    or revocation: the caller must do that with `SignedContent.signer` before
    trusting the content.

    Raises CMSError, and nothing else, for any message that fails a check.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CMSError("the CMS message must be bytes")
    if len(data) > max_size:
        raise CMSError(f"the CMS message is {len(data)} bytes, over the limit of {max_size}")
    if detached_content is not None and len(detached_content) > max_size:
        raise CMSError(
            f"the detached content is {len(detached_content)} bytes, over the limit of {max_size}"
        )
    der = _unarmour(bytes(data))
    try:
        return _verify(
            der, None if detached_content is None else bytes(detached_content), allow_sha1
        )
    except CMSError:
        raise
    except Exception as exc:
        # asn1crypto parses lazily and has no exception contract: malformed bytes
        # surface as ValueError, TypeError, KeyError... wherever a field is read.
        raise CMSError(f"the CMS message is malformed: {_one_line(exc)}") from exc


def _verify(data: bytes, detached_content: bytes | None, allow_sha1: bool) -> SignedContent:
    info = _ContentInfo.load(_definite_lengths(data), strict=True)
    if info["content_type"].dotted != _OID_SIGNED_DATA:
        raise CMSError(f"the CMS message is not signed data (it is {info['content_type'].native})")
    signed_data = info["content"]
    if not isinstance(signed_data, _SignedData):
        raise CMSError("the CMS message is not signed data (the content is missing)")

    signer_infos = signed_data["signer_infos"]
    if len(signer_infos) == 0:
        raise CMSError("the CMS message has no signer")
    if len(signer_infos) > 1:
        raise CMSError(f"the CMS message has {len(signer_infos)} signers; exactly one is accepted")
    signer_info = signer_infos[0]
    # asn1crypto parses lazily: read every field but the certificates (which
    # cryptography parses) and the attribute values (read one by one below) so that
    # a malformed one is refused, not skipped.
    _ = signed_data["digest_algorithms"].native, signed_data["crls"].native
    for name in ("version", "sid", "digest_algorithm", "signature_algorithm", "signature"):
        _ = signer_info[name].native
    attributes = _raw_attributes(signer_info["signed_attrs"])
    _raw_attributes(signer_info["unsigned_attrs"])
    if signed_data["version"].native not in ("v1", "v3", "v4", "v5"):
        raise CMSError("the SignedData version is not one RFC 5652 defines")
    if signer_info["version"].native not in ("v1", "v3"):
        raise CMSError("the SignerInfo version is not one RFC 5652 defines")

    encap = signed_data["encap_content_info"]
    content_type = encap["content_type"].dotted
    # Only id-data: the result does not report a content type, so accepting other
    # types would let e.g. a signed receipt pass as a signed request.
    if content_type != _OID_DATA:
        raise CMSError(f"the CMS message encapsulates {encap['content_type'].native}, not data")
    content = _content(encap["content"], detached_content)

    asn1_certs, certificates = _certificates(signed_data)
    signer = _find_signer(signer_info["sid"], asn1_certs, certificates)

    digest_name = _digest_name(signer_info["digest_algorithm"]["algorithm"].dotted, allow_sha1)
    content_digest = hashlib.new(digest_name, content).digest()

    signing_time: dt.datetime | None = None
    signed_attrs = signer_info["signed_attrs"]
    if isinstance(signed_attrs, core.Void):
        candidates = [content]
    else:
        signing_time = _check_signed_attrs(attributes, content_type, content_digest)
        candidates = _signed_attrs_encodings(signed_attrs)

    _check_signature(
        signer,
        signer_info["signature_algorithm"],
        digest_name,
        signer_info["signature"].native,
        candidates,
        allow_sha1,
    )
    return SignedContent(
        content=content,
        signer=signer,
        certificates=certificates,
        signing_time=signing_time,
        digest_algorithm=digest_name,
        attributes=tuple(attribute_name(oid) for oid, _ in attributes),
        encryption_preference=read_preference(attributes, asn1_certs, certificates),
    )


def _raw_attributes(attrs: core.Asn1Value) -> list[tuple[str, tuple[bytes, ...]]]:
    """(type OID, raw DER of each value) of every attribute; values are not parsed."""
    if isinstance(attrs, core.Void):
        return []
    found = []
    for attr in attrs:
        # The SET's contents split by hand: asn1crypto's Any would parse each value.
        found.append((attr["type"].dotted, tuple(_elements(attr["values"].contents or b""))))
    return found


def _content(econtent: core.Asn1Value, detached_content: bytes | None) -> bytes:
    """The signed content: embedded (eContent present, even if empty) or detached."""
    if isinstance(econtent, core.Void):
        if detached_content is None:
            raise CMSError(
                "the CMS message carries no content (a detached signature); "
                "pass the signed content as detached_content"
            )
        return detached_content
    if detached_content is not None:
        raise CMSError(
            "the CMS message carries its own content; detached content must not be given too"
        )
    # _definite_lengths() already joined the chunks of a streamed (BER) content.
    return bytes(econtent)


def _certificates(
    signed_data: cms.SignedData,
) -> tuple[list[asn1_x509.Certificate], tuple[x509.Certificate, ...]]:
    """The X.509 certificates carried in the message, as asn1crypto and cryptography
    objects; other certificate choices (attribute certificates) cannot be signers."""
    asn1_certs: list[asn1_x509.Certificate] = []
    certificates: list[x509.Certificate] = []
    choices = signed_data["certificates"]
    if isinstance(choices, core.Void):
        return asn1_certs, ()
    for choice in choices:
        if choice.name != "certificate":
            continue
        try:
            # dump() without force: the certificate's original bytes, so its own
            # signature stays checkable by the caller.
            parsed = x509.load_der_x509_certificate(choice.chosen.dump())
        except ValueError as exc:
            raise CMSError(
                f"a certificate in the CMS message cannot be parsed: {_one_line(exc)}"
            ) from exc
        asn1_certs.append(choice.chosen)
        certificates.append(parsed)
    return asn1_certs, tuple(certificates)


def _find_signer(
    sid: cms.SignerIdentifier,
    asn1_certs: list[asn1_x509.Certificate],
    certificates: tuple[x509.Certificate, ...],
) -> x509.Certificate:
    """The one carried certificate that the SignerIdentifier names."""
    if sid.name == "issuer_and_serial_number":
        issuer = sid.chosen["issuer"]
        serial = sid.chosen["serial_number"].native
        matches = [
            cert
            for asn1_cert, cert in zip(asn1_certs, certificates, strict=True)
            if asn1_cert.serial_number == serial and asn1_cert.issuer == issuer
        ]
    elif sid.name == "subject_key_identifier":
        key_id = sid.chosen.native
        matches = [
            cert
            for asn1_cert, cert in zip(asn1_certs, certificates, strict=True)
            if asn1_cert.key_identifier is not None and asn1_cert.key_identifier == key_id
        ]
    else:  # pragma: no cover - asn1crypto only builds the two alternatives
        raise CMSError("the CMS signer identifier is of an unknown kind")
    distinct = {cert.public_bytes(serialization.Encoding.DER): cert for cert in matches}
    if not distinct:
        raise CMSError("the signer's certificate is not included in the CMS message")
    if len(distinct) > 1:
        raise CMSError("several certificates in the CMS message match the signer; refused")
    return next(iter(distinct.values()))


def _digest_name(oid: str, allow_sha1: bool = False) -> str:
    if oid == _OID_SHA1 and allow_sha1:
        return "sha1"
    if oid == _OID_SHA1:
        raise CMSError(_SHA1_MESSAGE)
    if oid in _WEAK_DIGESTS:
        raise CMSError(_WEAK_MESSAGE)
    name = _DIGESTS.get(oid)
    if name is None:
        raise CMSError(
            f"the CMS digest algorithm {oid} is not supported (use SHA-256, SHA-384 or SHA-512)"
        )
    return name


def _single_value(attrs: list[tuple[str, tuple[bytes, ...]]], oid: str, label: str) -> bytes | None:
    """The raw value of the attribute `oid`, which must occur at most once with one value."""
    found = [values for kind, values in attrs if kind == oid]
    if not found:
        return None
    if len(found) > 1:
        raise CMSError(f"the {label} signed attribute occurs more than once")
    if len(found[0]) != 1:
        raise CMSError(f"the {label} signed attribute must have exactly one value")
    return found[0][0]


def _check_signed_attrs(
    attrs: list[tuple[str, tuple[bytes, ...]]], content_type: str, content_digest: bytes
) -> dt.datetime | None:
    """Check contentType and messageDigest (RFC 5652 §5.3, §11); the signingTime."""
    type_value = _single_value(attrs, _OID_CONTENT_TYPE, "contentType")
    if type_value is None:
        raise CMSError("the CMS signed attributes lack the contentType attribute")
    try:
        signed_type = core.ObjectIdentifier.load(type_value, strict=True).dotted
    except Exception as exc:
        raise CMSError("the contentType signed attribute is not an object identifier") from exc
    if signed_type != content_type:
        raise CMSError("the contentType signed attribute does not match the content type")

    digest_value = _single_value(attrs, _OID_MESSAGE_DIGEST, "messageDigest")
    if digest_value is None:
        raise CMSError("the CMS signed attributes lack the messageDigest attribute")
    try:
        signed_digest = core.OctetString.load(digest_value, strict=True).native
    except Exception as exc:
        raise CMSError("the messageDigest signed attribute is not an octet string") from exc
    if not hmac.compare_digest(bytes(signed_digest), content_digest):
        raise CMSError("messageDigest does not match the content")

    time_value = _single_value(attrs, _OID_SIGNING_TIME, "signingTime")
    if time_value is None:
        return None
    try:
        when = cms.Time.load(time_value, strict=True).native
    except Exception as exc:
        raise CMSError("the signingTime signed attribute is not a valid time") from exc
    if not isinstance(when, dt.datetime) or when.tzinfo is None:
        raise CMSError("the signingTime signed attribute is not a valid time")
    return when.astimezone(dt.UTC)


def _signed_attrs_encodings(attrs: RawAttributes) -> list[bytes]:
    """The bytes the signature may cover: the attributes as a SET (RFC 5652 §5.4), not
    the [0] IMPLICIT form they travel in. First exactly as received (indefinite
    lengths already made definite), so attributes mailpki does not parse are covered
    as the signer wrote them; then, if different, re-encoded as DER with the SET OF
    sorted, for signers that send another order than the one they signed."""
    received: bytes = attrs.dump()
    if received[:1] != b"\xa0":
        raise CMSError("the CMS signed attributes are not tagged [0]")
    encodings = [b"\x31" + received[1:]]
    sorted_der = der_set(_elements(attrs.contents or b""))
    if sorted_der != encodings[0]:
        encodings.append(sorted_der)
    return encodings


def _check_signature(
    signer: x509.Certificate,
    algorithm: cms.SignedDigestAlgorithm,
    digest_name: str,
    signature: bytes,
    candidates: list[bytes],
    allow_sha1: bool,
) -> None:
    """The signature must verify over one of the `candidates` (see
    `_signed_attrs_encodings`)."""
    oid = algorithm["algorithm"].dotted
    if oid in _WEAK_SIGNATURES:
        raise CMSError(_WEAK_MESSAGE)
    if oid in _SHA1_SIGNATURES and not allow_sha1:
        raise CMSError(_SHA1_MESSAGE)
    family, implied_hash = {**_SIGNATURES, **_SHA1_SIGNATURES}.get(oid, (None, None))
    if family is None:
        raise CMSError(
            f"the CMS signature algorithm {algorithm['algorithm'].native} is not supported"
        )
    if implied_hash is not None and implied_hash != digest_name:
        raise CMSError(
            f"the signature algorithm uses {implied_hash} but the digest algorithm is {digest_name}"
        )
    params = algorithm["parameters"]
    # Only RSA-PSS and (loosely) id-ecPublicKey carry parameters; others are absent or NULL.
    takes_params = family == _PSS or (family == _ECDSA and implied_hash is None)
    if not takes_params and not isinstance(params, core.Void | core.Null):
        raise CMSError("the CMS signature algorithm has unexpected parameters")

    try:
        public_key = signer.public_key()
    except ValueError as exc:
        raise CMSError(f"the signer's public key cannot be read: {_one_line(exc)}") from exc
    hash_cls = _HASHES[digest_name]
    if family in (_RSA, _PSS) and not isinstance(public_key, rsa.RSAPublicKey):
        raise CMSError(f"the signer's key is not an RSA key, but the signature is {family}")
    if family == _ECDSA and not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise CMSError("the signer's key is not an EC key, but the signature is ECDSA")
    pss = (
        _pss_padding(params, digest_name, public_key)
        if family == _PSS and isinstance(public_key, rsa.RSAPublicKey)
        else None
    )
    for signed_bytes in candidates:
        try:
            if isinstance(public_key, rsa.RSAPublicKey):
                public_key.verify(signature, signed_bytes, pss or padding.PKCS1v15(), hash_cls())
            elif isinstance(public_key, ec.EllipticCurvePublicKey):
                public_key.verify(signature, signed_bytes, ec.ECDSA(hash_cls()))
            return
        except InvalidSignature:
            continue
    raise CMSError("the CMS signature does not verify")


def _pss_padding(
    params: core.Asn1Value, digest_name: str, public_key: rsa.RSAPublicKey
) -> padding.PSS:
    """PSS padding from RSASSA-PSS-params (RFC 4055); absent fields take the
    (SHA-1) defaults, which are refused."""
    if isinstance(params, core.Void | core.Null):
        raise CMSError(_WEAK_MESSAGE + " (RSA-PSS without parameters means SHA-1)")
    pss_hash = _digest_name(params["hash_algorithm"]["algorithm"].dotted)
    if pss_hash != digest_name:
        raise CMSError(f"the RSA-PSS hash is {pss_hash} but the digest algorithm is {digest_name}")
    mgf = params["mask_gen_algorithm"]
    if mgf["algorithm"].dotted != _OID_MGF1:
        raise CMSError("the RSA-PSS mask generation function is not MGF1")
    mgf_hash = _digest_name(mgf["parameters"]["algorithm"].dotted)
    salt_length = params["salt_length"].native
    max_salt = (public_key.key_size + 6) // 8 - _HASHES[pss_hash].digest_size - 2
    if not isinstance(salt_length, int) or not 0 <= salt_length <= max_salt:
        raise CMSError(f"the RSA-PSS salt length {salt_length} is impossible for this key")
    if params["trailer_field"].native != "trailer_field_bc":
        raise CMSError("the RSA-PSS trailer field is not 1")
    # An explicit salt length makes OpenSSL check it exactly, not just up to a maximum.
    return padding.PSS(mgf=padding.MGF1(_HASHES[mgf_hash]()), salt_length=salt_length)
