"""The CA hierarchy's own certificates: root, issuing CA, OCSP responder.

Shape: a self-signed root (offline in spirit), one issuing CA below it with
pathlen 0 and EKU emailProtection (the S/MIME BR want S/MIME subordinate CAs
restricted to it, and OpenSSL's smime purposes then accept the chain), and a
delegated OCSP responder certificate issued by the issuing CA.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mailpki.errors import CAError, InputError, KeyPolicyError
from mailpki.policy.certificate import (
    as_utc,
    authority_information_access,
    authority_key_identifier,
    check_http_url,
    check_serial,
    crl_distribution_points,
    key_usage,
    require_ca,
)
from mailpki.policy.person import UB_COMMON_NAME, UB_ORGANISATION

CA_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})
ANY_POLICY = "2.5.29.32.0"


@dataclass(frozen=True)
class CACertificateUrls:
    """What the issuing CA certificate points at: the root's CRL and certificate."""

    root_crl: str  # CDP: http URL of the root CA's CRL
    root_issuers: str  # AIA caIssuers: http URL of the root certificate (DER)

    def __post_init__(self) -> None:
        check_http_url("root_crl", self.root_crl)
        check_http_url("root_issuers", self.root_issuers)


def check_ca_key(key: object) -> None:
    """CA keys: RSA >= 2048 (multiple of 8, e=65537) or P-256/P-384/P-521 (BR 6.1.5)."""
    if isinstance(key, rsa.RSAPublicKey):
        n = key.key_size
        if n < 2048 or n % 8 or key.public_numbers().e != 65537:
            raise KeyPolicyError(
                f"CA RSA key ({n} bits, e={key.public_numbers().e}) must be >= 2048 bits, "
                "a multiple of 8, with e=65537"
            )
        return
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in CA_CURVES:
            raise KeyPolicyError(f"CA EC key on {key.curve.name}; use P-256, P-384 or P-521")
        return
    raise KeyPolicyError(f"CA key of type {type(key).__name__}; use RSA or ECDSA")


def build_root_ca(
    *,
    org: str,
    public_key: CertificatePublicKeyTypes,
    serial: int,
    now: datetime,
    years: int = 20,
) -> x509.CertificateBuilder:
    """Self-signed root: CA critical (no path length), keyCertSign+cRLSign critical, SKI."""
    check_ca_key(public_key)
    check_serial(serial)
    name = _ca_name(org, f"{_org(org)} S/MIME Root CA")
    not_before = as_utc(now).replace(microsecond=0)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(_plus_years(not_before, years))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(key_usage(frozenset({"keyCertSign", "cRLSign"})), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def build_issuing_ca(
    *,
    org: str,
    public_key: CertificatePublicKeyTypes,
    root: x509.Certificate,
    serial: int,
    now: datetime,
    urls: CACertificateUrls,
    years: int = 10,
    common_name: str | None = None,
) -> x509.CertificateBuilder:
    """Issuing CA below `root`: pathlen 0, EKU emailProtection, CDP + AIA of the root.

    `common_name` defaults to "<org> S/MIME Issuing CA"; give a distinct one (e.g.
    with a year) when a second issuing CA is made, so relying parties can tell them apart.
    """
    check_ca_key(public_key)
    check_serial(serial)
    require_ca(root)
    not_before = as_utc(now).replace(microsecond=0)
    # Never outlive the root: a chain is only as valid as its shortest link.
    not_after = min(_plus_years(not_before, years), root.not_valid_after_utc)
    if not_after <= not_before:
        raise CAError("the root CA certificate has expired; make a new root first")
    return (
        x509.CertificateBuilder()
        .subject_name(_ca_name(org, common_name or f"{_org(org)} S/MIME Issuing CA"))
        .issuer_name(root.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage(frozenset({"keyCertSign", "cRLSign"})), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
        # An affiliated subordinate CA may assert anyPolicy (S/MIME BR 7.1.2.2);
        # the end-entity profiles then pick their specific OIDs.
        .add_extension(
            x509.CertificatePolicies(
                [x509.PolicyInformation(x509.ObjectIdentifier(ANY_POLICY), None)]
            ),
            critical=False,
        )
        .add_extension(crl_distribution_points(urls.root_crl), critical=False)
        .add_extension(authority_information_access(ca_issuers=urls.root_issuers), critical=False)
        .add_extension(authority_key_identifier(root), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def build_ocsp_responder(
    *,
    org: str,
    public_key: CertificatePublicKeyTypes,
    issuer: x509.Certificate,
    serial: int,
    now: datetime,
    days: int = 365,
) -> x509.CertificateBuilder:
    """Delegated OCSP responder for `issuer`: EKU OCSPSigning, id-pkix-ocsp-nocheck."""
    check_ca_key(public_key)
    check_serial(serial)
    require_ca(issuer)
    if not 1 <= days <= 825:
        raise InputError(f"OCSP responder validity of {days} days is outside 1..825")
    not_before = as_utc(now).replace(microsecond=0)
    not_after = min(not_before + timedelta(days=days), issuer.not_valid_after_utc)
    return (
        x509.CertificateBuilder()
        .subject_name(_ca_name(org, f"{_org(org)} S/MIME OCSP Responder"))
        .issuer_name(issuer.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(frozenset({"digitalSignature"})), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
        # Relying parties must not try to check the responder's own status (RFC 6960
        # 4.2.2.2.1): keep its validity short instead.
        .add_extension(x509.OCSPNoCheck(), critical=False)
        .add_extension(authority_key_identifier(issuer), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _org(org: str) -> str:
    """The organisation name, checked: it ends up in every CA subject."""
    text = org.strip() if isinstance(org, str) else ""
    if not text:
        raise InputError("org: must not be empty")
    if len(text) > UB_ORGANISATION or not text.isprintable():
        raise InputError(f"org: must be printable and at most {UB_ORGANISATION} characters")
    return text


def _ca_name(org: str, common_name: str) -> x509.Name:
    if len(common_name) > UB_COMMON_NAME or not common_name.isprintable():
        raise InputError(
            f"CA common name {common_name!r} must be printable and at most "
            f"{UB_COMMON_NAME} characters; use a shorter org name"
        )
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _org(org)),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _plus_years(start: datetime, years: int) -> datetime:
    if not isinstance(years, int) or not 1 <= years <= 50:
        raise InputError(f"years={years!r} must be between 1 and 50")
    try:
        return start.replace(year=start.year + years)
    except ValueError:  # 29 February into a non-leap year
        return start.replace(year=start.year + years, day=28)


__all__ = [
    "CACertificateUrls",
    "build_issuing_ca",
    "build_ocsp_responder",
    "build_root_ca",
    "check_ca_key",
]
