"""Certificate revocation lists: full and partitioned (RFC 5280 §5).

Pure: no database and no files. The caller passes the revoked entries, the CRL
number and the times; this module only shapes and signs.

Speed matters here (a CRL may list a million serials): the revoked entries are
built into one list and handed to ``CertificateRevocationListBuilder``'s
constructor. ``add_revoked_certificate()`` copies the whole list on every call,
which is quadratic (1M entries do not finish in minutes).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtensionOID

from mailpki.errors import CAError, InputError

__all__ = [
    "REASONS",
    "PrivateKey",
    "RevokedEntry",
    "SignatureHash",
    "build_crl",
    "default_hash",
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
    """Build and sign a CRL for ``issuer``.

    ``serials_unique=True`` skips the duplicate check when the caller already
    guarantees it (the store's unique constraint): at a million entries the check's
    set costs ~75 MB.

    ``entries`` may be RevokedEntry objects or plain ``(serial, revoked_at, reason)``
    tuples (database rows). With ``distribution_point`` the CRL is a partition:
    it carries a critical IssuingDistributionPoint naming that URI, which must be
    byte-equal to the CRL distribution point in the certificates it covers.
    """
    if number < 0 or number.bit_length() > 159:
        raise InputError(f"CRL number must be 0..2^159-1 (RFC 5280 §5.2.3), got {number}")
    this_update = _utc(this_update)
    next_update = _utc(next_update)
    if next_update <= this_update:
        raise InputError("CRL next_update must be after this_update")
    _check_key_matches(issuer, key)

    revoked = _revoked_certificates(entries, check_duplicates=not serials_unique)

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

    builder = x509.CertificateRevocationListBuilder(
        issuer_name=issuer.subject,
        last_update=this_update,
        next_update=next_update,
        extensions=extensions,
        revoked_certificates=revoked,
    )
    alg = default_hash(key) if hash_alg is None else hash_alg
    if alg is not None and not isinstance(alg, SignatureHash):
        raise InputError(f"{alg.name} cannot sign a CRL; use SHA-256 or stronger")
    try:
        return builder.sign(private_key=key, algorithm=alg)
    except (ValueError, TypeError) as exc:
        raise CAError(f"cannot sign the CRL: {exc}") from exc


# Reason code extensions are immutable: share one object per reason.
_REASON_EXT: dict[x509.ReasonFlags, x509.CRLReason] = {
    r: x509.CRLReason(r) for r in x509.ReasonFlags if r is not x509.ReasonFlags.unspecified
}


def _revoked_certificates(
    entries: Iterable[RevokedEntry | tuple[int, dt.datetime, x509.ReasonFlags | None]],
    *,
    check_duplicates: bool = True,
) -> list[x509.RevokedCertificate]:
    out: list[x509.RevokedCertificate] = []
    append = out.append
    builder_cls = x509.RevokedCertificateBuilder
    reason_ext = _REASON_EXT
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
        if reason is x509.ReasonFlags.remove_from_crl:
            # Only meaningful in delta CRLs (RFC 5280 §5.3.1); a released hold is simply absent.
            raise InputError(f"serial {serial:#x}: removeFromCRL cannot appear in a full CRL")
        try:
            b = builder_cls(serial_number=serial, revocation_date=revoked_at)
            if reason is not None and reason is not x509.ReasonFlags.unspecified:
                # RFC 5280 §5.3.1: unspecified SHOULD be expressed by omitting the extension.
                b = b.add_extension(reason_ext[reason], critical=False)
            append(b.build())
        except (ValueError, TypeError) as exc:
            raise InputError(f"bad CRL entry for serial {serial!r}: {exc}") from exc
    return out
