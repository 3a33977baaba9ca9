"""CMS signed attributes as mail clients send them, read and written without trusting
a schema for the values.

asn1crypto 1.5 parses every signed attribute by its type and gives up on the whole
message when one value does not fit its schema (it fails on the `id-aa-encrypKeyPref`
that Thunderbird and Outlook send). Here the attributes are read as (type, raw
values): the ones mailpki acts on are parsed one by one, the rest are only named.
The signature is checked over the attributes' bytes as received, so an attribute
mailpki does not understand can never make a good signature fail.

The encryption-key preference tells a correspondent which certificate to encrypt a
reply to (in dual-key mode not the signing one). Two attributes carry it:
`id-aa-encrypKeyPref` (RFC 8551 §2.5.3, a CHOICE whose [0] is an
IssuerAndSerialNumber) and Microsoft's 1.3.6.1.4.1.311.16.4 (an IssuerAndSerialNumber),
which Outlook reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from asn1crypto import cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mailpki.cms._der import der_length
from mailpki.cms._der import one_line as _one_line

__all__ = [
    "OID_ENCRYPTION_KEY_PREFERENCE",
    "OID_MS_ENCRYPTION_KEY_PREFERENCE",
    "EncryptionKeyPreference",
    "RawAttribute",
    "RawAttributes",
    "attribute_name",
    "der_set",
    "encode_attribute",
    "issuer_and_serial",
    "preference_values",
    "read_preference",
]

OID_ENCRYPTION_KEY_PREFERENCE = "1.2.840.113549.1.9.16.2.11"
OID_MS_ENCRYPTION_KEY_PREFERENCE = "1.3.6.1.4.1.311.16.4"

_NAMES = {
    "1.2.840.113549.1.9.3": "contentType",
    "1.2.840.113549.1.9.4": "messageDigest",
    "1.2.840.113549.1.9.5": "signingTime",
    "1.2.840.113549.1.9.15": "smimeCapabilities",
    "1.2.840.113549.1.9.52": "cmsAlgorithmProtection",
    "1.2.840.113549.1.9.16.2.12": "signingCertificate",
    "1.2.840.113549.1.9.16.2.47": "signingCertificateV2",
    OID_ENCRYPTION_KEY_PREFERENCE: "encrypKeyPref",
    OID_MS_ENCRYPTION_KEY_PREFERENCE: "msEncryptionKeyPreference",
}
_LABELS = {
    OID_ENCRYPTION_KEY_PREFERENCE: "id-aa-encrypKeyPref",
    OID_MS_ENCRYPTION_KEY_PREFERENCE: "Microsoft encryption-key preference (1.3.6.1.4.1.311.16.4)",
}


def _raw_any(value: core.Any) -> bytes:
    """An ANY's bytes as read; parsed (and re-encoded) only when it was built here."""
    if value._parsed is None and value._header is not None:
        return bytes(value._header + value.contents + value._trailer)
    return bytes(value.dump())


class _AnyValues(core.SetOf):  # type: ignore[misc]
    """SET OF ANY whose values are never parsed to be re-encoded.

    asn1crypto takes a definite length whose last octet is 0x80 (a SignerInfo of 384
    bytes: 82 01 80) for an indefinite one and re-encodes everything below it; an ANY
    re-encodes by parsing itself, which fails for a context-class value without a schema
    (id-aa-encrypKeyPref's [0] IMPLICIT IssuerAndSerialNumber). The values are DER
    already (written by encode_attribute, or read from a DER SET), so their bytes stay.
    """

    _child_spec = core.Any

    def _set_contents(self, force: bool = False) -> None:
        if self.children is None:
            self._parse_children()
        self._contents = b"".join(sorted(_raw_any(child) for child in self))
        self._header = None
        self._trailer = b""


class RawAttribute(core.Sequence):  # type: ignore[misc]
    """Attribute ::= SEQUENCE { attrType OID, attrValues SET OF ANY }: values unparsed."""

    _fields = [("type", core.ObjectIdentifier), ("values", _AnyValues)]  # noqa: RUF012


class RawAttributes(core.SetOf):  # type: ignore[misc]
    _child_spec = RawAttribute


def attribute_name(oid: str) -> str:
    """A readable name for a signed attribute type: its usual name, else the OID."""
    return _NAMES.get(oid, oid)


def is_known(oid: str) -> bool:
    return oid in _NAMES


@dataclass(frozen=True)
class EncryptionKeyPreference:
    """Which certificate the signer asks correspondents to encrypt to.

    `certificate` is the carried certificate the attributes name (None when they name
    none that is in the message, or cannot be read: then `problem` says why);
    `named_by` lists the attributes that named it."""

    certificate: x509.Certificate | None
    named_by: tuple[str, ...]
    problem: str | None = None


# -- writing -----------------------------------------------------------------------------


def der_set(elements: Sequence[bytes]) -> bytes:
    """DER SET OF: the encoded elements in ascending byte order (X.690 §11.6)."""
    contents = b"".join(sorted(elements))
    return b"\x31" + der_length(len(contents)) + contents


def encode_attribute(oid: str, value: bytes) -> bytes:
    """DER Attribute with one (already encoded) value."""
    contents: bytes = core.ObjectIdentifier(oid).dump() + der_set([value])
    return b"\x30" + der_length(len(contents)) + contents


def issuer_and_serial(certificate: x509.Certificate) -> bytes:
    """DER IssuerAndSerialNumber of `certificate`, the issuer Name as the certificate
    encodes it (re-encoding a Name could change its bytes and then it matches nothing)."""
    tbs = asn1_x509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER))
    # dump() without force: the issuer's bytes exactly as the certificate has them.
    issuer: bytes = tbs["tbs_certificate"]["issuer"].dump()
    serial: bytes = core.Integer(certificate.serial_number).dump()
    contents = issuer + serial
    return b"\x30" + der_length(len(contents)) + contents


def preference_values(certificate: x509.Certificate) -> list[tuple[str, bytes]]:
    """The two encryption-key preference attributes naming `certificate`:
    (type, DER value) for id-aa-encrypKeyPref ([0] IMPLICIT) and Microsoft's."""
    named = issuer_and_serial(certificate)
    return [
        (OID_ENCRYPTION_KEY_PREFERENCE, b"\xa0" + named[1:]),
        (OID_MS_ENCRYPTION_KEY_PREFERENCE, named),
    ]


# -- reading -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Reference:
    """What a preference attribute names: issuer and serial, or a key identifier."""

    issuer: asn1_x509.Name | None = None
    serial: int | None = None
    key_id: bytes | None = None

    def describe(self) -> str:
        if self.key_id is not None:
            return f"key identifier {self.key_id.hex()}"
        assert self.issuer is not None and self.serial is not None
        return f"issuer {self.issuer.human_friendly}, serial {self.serial:X}"


def _parse_issuer_and_serial(der: bytes) -> _Reference:
    value = cms.IssuerAndSerialNumber.load(der, strict=True)
    issuer = value["issuer"]
    _ = issuer.native  # parse the whole Name now: a damaged one is refused here
    serial = value["serial_number"].native
    if not isinstance(serial, int):
        raise ValueError("the serial number is not an integer")
    return _Reference(issuer=issuer, serial=serial)


def _parse_reference(oid: str, der: bytes) -> _Reference:
    """The certificate reference in one preference value; ValueError if malformed."""
    if not der:
        raise ValueError("the value is empty")
    if oid == OID_MS_ENCRYPTION_KEY_PREFERENCE:
        if der[0] != 0x30:
            raise ValueError("the value is not an IssuerAndSerialNumber")
        return _parse_issuer_and_serial(der)
    tag = der[0]
    if tag == 0xA0:  # issuerAndSerialNumber [0] IMPLICIT IssuerAndSerialNumber
        return _parse_issuer_and_serial(b"\x30" + der[1:])
    if tag == 0xA1:  # receipentKeyId [1] IMPLICIT RecipientKeyIdentifier
        value = cms.RecipientKeyIdentifier.load(b"\x30" + der[1:], strict=True)
        _ = value.native
        return _Reference(key_id=bytes(value["subject_key_identifier"].native))
    if tag == 0x82:  # subjectAltKeyIdentifier [2] IMPLICIT SubjectKeyIdentifier
        key_id = core.OctetString.load(b"\x04" + der[1:], strict=True).native
        return _Reference(key_id=bytes(key_id))
    raise ValueError(f"the value has an unknown choice (tag 0x{tag:02x})")


def _matching(
    reference: _Reference,
    asn1_certs: Sequence[asn1_x509.Certificate],
    certificates: Sequence[x509.Certificate],
) -> list[x509.Certificate]:
    found: dict[bytes, x509.Certificate] = {}
    for asn1_cert, cert in zip(asn1_certs, certificates, strict=True):
        if reference.key_id is not None:
            hit = asn1_cert.key_identifier == reference.key_id
        else:
            hit = asn1_cert.serial_number == reference.serial and asn1_cert.issuer == (
                reference.issuer
            )
        if hit:
            found[cert.public_bytes(serialization.Encoding.DER)] = cert
    return list(found.values())


def read_preference(
    attributes: Sequence[tuple[str, tuple[bytes, ...]]],
    asn1_certs: Sequence[asn1_x509.Certificate],
    certificates: Sequence[x509.Certificate],
) -> EncryptionKeyPreference | None:
    """The encryption-key preference the signed `attributes` (type, raw values) state,
    resolved against the certificates carried in the message; None if they state none.

    Never raises for a malformed or dangling preference: the signature over it may be
    perfectly good, so the problem is reported in the result instead."""
    chosen: list[tuple[str, x509.Certificate]] = []
    problems: list[str] = []
    named_by: list[str] = []
    for oid in (OID_ENCRYPTION_KEY_PREFERENCE, OID_MS_ENCRYPTION_KEY_PREFERENCE):
        label = _LABELS[oid]
        occurrences = [values for kind, values in attributes if kind == oid]
        if not occurrences:
            continue
        named_by.append(label)
        if len(occurrences) > 1 or len(occurrences[0]) != 1:
            problems.append(f"the {label} attribute must occur once with one value")
            continue
        try:
            reference = _parse_reference(oid, occurrences[0][0])
        except Exception as exc:  # asn1crypto raises many types for damaged input
            problems.append(f"the {label} attribute cannot be read: {_one_line(exc)}")
            continue
        matches = _matching(reference, asn1_certs, certificates)
        if not matches:
            problems.append(
                f"the {label} attribute names a certificate that is not in the message "
                f"({reference.describe()})"
            )
        elif len(matches) > 1:
            problems.append(f"the {label} attribute matches several certificates")
        else:
            chosen.append((label, matches[0]))
    if not named_by:
        return None
    distinct = {cert.public_bytes(serialization.Encoding.DER): cert for _, cert in chosen}
    if len(distinct) > 1:
        problems.append("the two encryption-key preference attributes name different certificates")
    if problems:
        return EncryptionKeyPreference(None, tuple(named_by), "; ".join(problems))
    return EncryptionKeyPreference(next(iter(distinct.values())), tuple(named_by))
