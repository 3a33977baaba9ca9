"""Certificate revocation lists: full and partitioned (RFC 5280 §5).

Pure: no database and no files. The caller passes the revoked entries, the CRL
number and the times; this module only shapes and signs.

Speed matters here (a CRL may list a million serials). Each revoked entry is
encoded to DER once (``encode_entry``, when the certificate is revoked; the store
keeps the bytes), and a CRL run only concatenates those bytes into the
TBSCertList and signs it once (``assemble_crl``): no Python object per entry, and
memory grows with the size of the CRL, not with the number of objects.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtensionOID

from mailpki.base.crl_entry import der_length as _der_length
from mailpki.base.crl_entry import encode_entry
from mailpki.base.crl_entry import tlv as _tlv
from mailpki.errors import CAError, InputError

__all__ = [
    "REASONS",
    "PrivateKey",
    "RevokedEntry",
    "SignatureHash",
    "assemble_crl",
    "build_crl",
    "default_hash",
    "encode_entries",
    "encode_entry",
    "parse_reason",
    "reason_name",
]

PrivateKey = CertificateIssuerPrivateKeyTypes
# Hashes cryptography signs certificates, CRLs and OCSP responses with (no SHA-1, no MD5).
SignatureHash = (
    hashes.SHA224
    | hashes.SHA256
    | hashes.SHA384
    | hashes.SHA512
    | hashes.SHA3_224
    | hashes.SHA3_256
    | hashes.SHA3_384
    | hashes.SHA3_512
)


@dataclass(frozen=True, slots=True)
class RevokedEntry:
    """One revoked certificate as the CRL lists it."""

    serial: int
    revoked_at: dt.datetime  # naive datetimes are taken as UTC (SQLite gives naive ones)
    reason: x509.ReasonFlags | None = None


# RFC 5280 §5.3.1 names, as people type them; looked up case-insensitively.
_REASON_NAMES: dict[str, x509.ReasonFlags] = {
    "unspecified": x509.ReasonFlags.unspecified,
    "keyCompromise": x509.ReasonFlags.key_compromise,
    "cACompromise": x509.ReasonFlags.ca_compromise,
    "affiliationChanged": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessationOfOperation": x509.ReasonFlags.cessation_of_operation,
    "certificateHold": x509.ReasonFlags.certificate_hold,
    "removeFromCRL": x509.ReasonFlags.remove_from_crl,
    "privilegeWithdrawn": x509.ReasonFlags.privilege_withdrawn,
    "aACompromise": x509.ReasonFlags.aa_compromise,
}
REASONS: dict[str, x509.ReasonFlags] = {k.lower(): v for k, v in _REASON_NAMES.items()}
_RFC_NAMES: dict[x509.ReasonFlags, str] = {v: k for k, v in _REASON_NAMES.items()}


def reason_name(flag: x509.ReasonFlags) -> str:
    """The RFC 5280 spelling people type and read (keyCompromise, not key_compromise)."""
    return _RFC_NAMES[flag]


def parse_reason(text: str) -> x509.ReasonFlags:
    """Map an RFC 5280 reason name (any case; '-', '_' and spaces ignored) to ReasonFlags."""
    key = text.strip().replace("-", "").replace("_", "").replace(" ", "").lower()
    try:
        return REASONS[key]
    except KeyError:
        raise InputError(
            f"unknown revocation reason {text!r}; choose one of: {', '.join(_REASON_NAMES)}"
        ) from None


def default_hash(key: PrivateKey) -> SignatureHash | None:
    """The signature hash that matches the key's strength (None for EdDSA, which has its own)."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.key_size >= 521:
            return hashes.SHA512()
        if key.curve.key_size >= 384:
            return hashes.SHA384()
    return hashes.SHA256()


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _authority_key_identifier(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        # No SKI in the issuer: derive the same value RFC 5280 method 1 would give.
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer.public_key()  # type: ignore[arg-type]
        )
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _check_key_matches(issuer: x509.Certificate, key: PrivateKey) -> None:
    # A CRL signed by the wrong key is silently useless to every relying party.
    if (
        isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
        and key.public_key() != issuer.public_key()
    ):
        raise CAError(f"the CRL signing key does not belong to {issuer.subject.rfc4514_string()}")


# -- assembly -----------------------------------------------------------------------------
# Entries are encoded once (base/crl_entry.py, at revocation) and stored; a CRL run only
# concatenates stored bytes. Unit tests check the result byte for byte against
# cryptography's own CRL builder.


def _read_tlv(data: bytes | memoryview, offset: int) -> tuple[int, int, int]:
    """(tag, content start, end) of the DER element at ``offset``."""
    tag = data[offset]
    first = data[offset + 1]
    start = offset + 2
    if first & 0x80:
        count = first & 0x7F
        length = int.from_bytes(bytes(data[start : start + count]), "big")
        start += count
    else:
        length = first
    return tag, start, start + length


# One throwaway key per key family gives the CRL template its signatureAlgorithm
# without a signature by the CA key: the CA key signs each CRL exactly once.
_SHAPE_KEYS: dict[str, PrivateKey] = {}


def _new_shape_key(family: str) -> PrivateKey:
    if family == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if family == "rsa":
        # Signs only the template, whose signature is thrown away.
        return rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    if family == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return ed448.Ed448PrivateKey.generate()


def _shape_key(key: PrivateKey) -> PrivateKey:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        family = "ec"
    elif isinstance(key, rsa.RSAPrivateKey):
        family = "rsa"
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        family = "ed25519"
    elif isinstance(key, ed448.Ed448PrivateKey):
        family = "ed448"
    else:
        raise CAError(f"cannot sign a CRL with a {type(key).__name__}")
    if family not in _SHAPE_KEYS:
        _SHAPE_KEYS[family] = _new_shape_key(family)
    return _SHAPE_KEYS[family]


def _sign_tbs(key: PrivateKey, tbs: bytes, alg: SignatureHash | None) -> bytes:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        assert alg is not None
        return key.sign(tbs, ec.ECDSA(alg))
    if isinstance(key, rsa.RSAPrivateKey):
        assert alg is not None
        return key.sign(tbs, padding.PKCS1v15(), alg)
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return key.sign(tbs)
    raise CAError(f"cannot sign a CRL with a {type(key).__name__}")


def assemble_crl(
    *,
    issuer: x509.Certificate,
    key: PrivateKey,
    entry_ders: Iterable[bytes],
    number: int,
    this_update: dt.datetime,
    next_update: dt.datetime,
    distribution_point: str | None = None,
    hash_alg: hashes.HashAlgorithm | None = None,
    counter: list[int] | None = None,
) -> bytes:
    """Sign a CRL whose revokedCertificates are the given pre-encoded entries; its DER.

    Entries come from ``encode_entry`` (stored at revocation) and are copied, not
    parsed; an item may hold several entries already concatenated (the database joins
    them). The caller guarantees the serials are unique (the store's constraint).
    The rest of the TBSCertList (issuer, times, CRL number, AKI, IDP) comes from
    cryptography's builder; the TBS is signed once with ``key``. Memory grows with the
    output (about three times its size at the peak), not with the number of entries.
    ``counter``, when given, receives the number of items as its only element.
    """
    if number < 0 or number.bit_length() > 159:
        raise InputError(f"CRL number must be 0..2^159-1 (RFC 5280 §5.2.3), got {number}")
    this_update = _utc(this_update)
    next_update = _utc(next_update)
    if next_update <= this_update:
        raise InputError("CRL next_update must be after this_update")
    _check_key_matches(issuer, key)
    alg = default_hash(key) if hash_alg is None else hash_alg
    if alg is not None and not isinstance(alg, SignatureHash):
        raise InputError(f"{alg.name} cannot sign a CRL; use SHA-256 or stronger")
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        alg = None

    extensions: list[x509.Extension[x509.ExtensionType]] = [
        x509.Extension(ExtensionOID.CRL_NUMBER, False, x509.CRLNumber(number)),
        x509.Extension(
            ExtensionOID.AUTHORITY_KEY_IDENTIFIER, False, _authority_key_identifier(issuer)
        ),
    ]
    if distribution_point is not None:
        idp = x509.IssuingDistributionPoint(
            full_name=[x509.UniformResourceIdentifier(distribution_point)],
            relative_name=None,
            only_contains_user_certs=True,
            only_contains_ca_certs=False,
            only_some_reasons=None,
            indirect_crl=False,
            only_contains_attribute_certs=False,
        )
        # Critical per RFC 5280 §5.2.5: a client that ignores it would treat a
        # partition as the complete list and accept certs revoked elsewhere.
        extensions.append(x509.Extension(ExtensionOID.ISSUING_DISTRIBUTION_POINT, True, idp))

    # 1. A template CRL without entries gives every other field of the TBSCertList.
    try:
        template = (
            x509.CertificateRevocationListBuilder(
                issuer_name=issuer.subject,
                last_update=this_update,
                next_update=next_update,
                extensions=extensions,
            )
            .sign(private_key=_shape_key(key), algorithm=alg)  # type: ignore[arg-type]
            .public_bytes(serialization.Encoding.DER)
        )
    except (ValueError, TypeError) as exc:
        raise CAError(f"cannot sign the CRL: {exc}") from exc
    _, outer_start, _ = _read_tlv(template, 0)
    _, tbs_start, tbs_end = _read_tlv(template, outer_start)
    _, _, sigalg_end = _read_tlv(template, tbs_end)
    signature_algorithm = template[tbs_end:sigalg_end]

    # 2. Split the template's TBS after nextUpdate: version, signature, issuer,
    # thisUpdate, nextUpdate come before revokedCertificates; [0] crlExtensions after.
    offset = tbs_start
    for _ in range(5):
        _, _, offset = _read_tlv(template, offset)
    head, tail = template[tbs_start:offset], template[offset:tbs_end]

    # 3. The entries, concatenated as they stream in (a single chunk is not copied).
    chunks: list[bytes] = []
    body = bytearray()
    count = 0
    for der in entry_ders:
        if count == 0:
            chunks.append(der)
        else:
            if chunks:
                body += chunks.pop()
            body += der
        count += 1
    if counter is not None:
        counter[:] = [count]
    entries: bytes | bytearray = chunks[0] if chunks else body
    revoked = (b"\x30" + _der_length(len(entries)), entries) if entries else (b"", b"")

    # 4. Sign the TBS once; wrap it with the algorithm and the signature.
    inner_len = len(head) + len(revoked[0]) + len(revoked[1]) + len(tail)
    tbs = b"".join((b"\x30", _der_length(inner_len), head, revoked[0], revoked[1], tail))
    del body, chunks, entries, revoked
    try:
        signature = _sign_tbs(key, tbs, alg)
    except (ValueError, TypeError) as exc:
        raise CAError(f"cannot sign the CRL: {exc}") from exc
    bit_string = _tlv(0x03, b"\x00" + signature)
    outer_len = len(tbs) + len(signature_algorithm) + len(bit_string)
    return b"".join((b"\x30", _der_length(outer_len), tbs, signature_algorithm, bit_string))


def encode_entries(
    entries: Iterable[RevokedEntry | tuple[int, dt.datetime, x509.ReasonFlags | None]],
    *,
    check_duplicates: bool = True,
) -> Iterator[bytes]:
    """``encode_entry`` over RevokedEntry objects or (serial, revoked_at, reason) rows."""
    seen: set[int] = set()
    for entry in entries:
        if isinstance(entry, RevokedEntry):
            serial, revoked_at, reason = entry.serial, entry.revoked_at, entry.reason
        else:
            serial, revoked_at, reason = entry
        if check_duplicates:
            if serial in seen:
                raise InputError(f"serial {serial:#x} is listed twice in the CRL entries")
            seen.add(serial)
        yield encode_entry(serial, revoked_at, reason)


def build_crl(
    *,
    issuer: x509.Certificate,
    key: PrivateKey,
    entries: Iterable[RevokedEntry | tuple[int, dt.datetime, x509.ReasonFlags | None]],
    number: int,
    this_update: dt.datetime,
    next_update: dt.datetime,
    distribution_point: str | None = None,
    hash_alg: hashes.HashAlgorithm | None = None,
    serials_unique: bool = False,
) -> x509.CertificateRevocationList:
    """Build and sign a CRL for ``issuer`` from revoked entries (encoded here).

    ``serials_unique=True`` skips the duplicate check when the caller already
    guarantees it (the store's unique constraint). With ``distribution_point`` the
    CRL is a partition: it carries a critical IssuingDistributionPoint naming that
    URI, which must be byte-equal to the CRL distribution point in the certificates
    it covers. The CA's own CRLs use ``assemble_crl`` with entries stored at revocation.
    """
    der = assemble_crl(
        issuer=issuer,
        key=key,
        entry_ders=encode_entries(entries, check_duplicates=not serials_unique),
        number=number,
        this_update=this_update,
        next_update=next_update,
        distribution_point=distribution_point,
        hash_alg=hash_alg,
    )
    return x509.load_der_x509_crl(der)
