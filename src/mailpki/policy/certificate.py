"""End-entity certificate content: one uniform shape per profile.

`build_certificate` returns an unsigned builder; the CA lints the to-be-signed
result and signs it. Nothing from a CSR reaches this function except the public
key, so a requester cannot smuggle in extensions, names or validity.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mailpki.errors import CAError, ConfigError, InputError
from mailpki.policy.keys import check_public_key, key_kind
from mailpki.policy.person import Person
from mailpki.policy.profile import Profile

# Tolerate a relying party's clock running slightly behind ours, without the
# hour-long backdate public CAs use (our clients are on the same network).
BACKDATE = timedelta(minutes=1)

_KEY_USAGE_ARGS = {
    "digitalSignature": "digital_signature",
    "nonRepudiation": "content_commitment",
    "keyEncipherment": "key_encipherment",
    "dataEncipherment": "data_encipherment",
    "keyAgreement": "key_agreement",
    "keyCertSign": "key_cert_sign",
    "cRLSign": "crl_sign",
}


@dataclass(frozen=True)
class CertificateUrls:
    """Where relying parties fetch revocation data and the issuer certificate."""

    crl: str  # the CDP of this certificate's CRL partition, http URL
    ca_issuers: str  # AIA caIssuers, http URL of the issuing CA cert (DER)
    ocsp: str  # AIA OCSP, http URL

    def __post_init__(self) -> None:
        for field in ("crl", "ca_issuers", "ocsp"):
            check_http_url(field, getattr(self, field))


def check_http_url(field: str, url: str) -> None:
    """S/MIME BR (multipurpose/strict) allow only http: for CDP and AIA (pkilint errors)."""
    if not isinstance(url, str) or not url.isascii() or any(c.isspace() for c in url):
        raise ConfigError(f"{field} URL {url!r} must be ASCII without spaces")
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ConfigError(
            f"{field} URL {url!r} must be a plain http:// URL with a host "
            "(https is refused by clients fetching CRLs/OCSP and by the S/MIME BR)"
        )


def build_certificate(
    profile: Profile,
    person: Person,
    public_key: CertificatePublicKeyTypes,
    *,
    issuer: x509.Certificate,
    serial: int,
    now: datetime,
    urls: CertificateUrls,
) -> x509.CertificateBuilder:
    """The unsigned end-entity certificate for `person` under `profile`."""
    check_public_key(profile, public_key)
    kind = key_kind(public_key)
    check_serial(serial)
    require_ca(issuer)
    not_before = as_utc(now).replace(microsecond=0) - BACKDATE
    # RFC 5280 validity includes both ends (pkilint counts notAfter - notBefore + 1 s),
    # so subtract a second to make the period exactly validity_days.
    not_after = not_before + timedelta(days=profile.validity_days) - timedelta(seconds=1)
    if not_after > issuer.not_valid_after_utc:
        raise CAError(
            f"the issuing CA certificate expires {issuer.not_valid_after_utc:%Y-%m-%d}, before "
            f"this {profile.validity_days}-day certificate would; renew the issuing CA"
        )

    builder = (
        x509.CertificateBuilder()
        .subject_name(subject_for(profile, person))
        .issuer_name(issuer.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(profile.key_usage_for(kind)), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(person.email)]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(authority_key_identifier(issuer), critical=False)
        .add_extension(crl_distribution_points(urls.crl), critical=False)
        .add_extension(
            authority_information_access(ocsp=urls.ocsp, ca_issuers=urls.ca_issuers),
            critical=False,
        )
    )
    if profile.policy_oids:
        builder = builder.add_extension(
            x509.CertificatePolicies(
                [
                    x509.PolicyInformation(x509.ObjectIdentifier(o), None)
                    for o in profile.policy_oids
                ]
            ),
            critical=False,
        )
    return builder


def subject_for(profile: Profile, person: Person) -> x509.Name:
    """The subject DN under the profile's naming rule (most significant RDN first)."""
    need = f"profile {profile.name} needs"
    if profile.subject == "mailbox":
        # Mailbox validation proves only the address: anything else is unvalidated.
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, person.email)])
    if profile.subject == "sponsored":
        if person.organisation is None:
            raise InputError(f"{need} the person's organisation")
        if person.organisation_identifier is None:
            raise InputError(
                f"{need} the organisation identifier (e.g. NTRGB-12345678); "
                "S/MIME BR 7.1.4.2.2 requires it for sponsor-validated certificates"
            )
        if person.given_name is None and person.surname is None:
            raise InputError(
                f"{need} a given name or surname; {person.name!r} cannot be split "
                "unambiguously, so take them from the directory (givenName, sn)"
            )
        attrs = [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, person.organisation),
            x509.NameAttribute(NameOID.ORGANIZATION_IDENTIFIER, person.organisation_identifier),
        ]
        if person.given_name is not None:
            attrs.append(x509.NameAttribute(NameOID.GIVEN_NAME, person.given_name))
        if person.surname is not None:
            attrs.append(x509.NameAttribute(NameOID.SURNAME, person.surname))
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, person.name))
        return x509.Name(attrs)
    if profile.subject == "directory-dn":
        # Mirrors the directory entry; no emailAddress attribute (the SAN carries it).
        attrs = []
        if person.organisation is not None:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, person.organisation))
        if person.site is not None:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, person.site))
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, person.name))
        return x509.Name(attrs)
    raise InputError(f"profile {profile.name}: unknown naming rule {profile.subject!r}")


def key_usage(names: frozenset[str]) -> x509.KeyUsage:
    """A KeyUsage extension value from RFC 5280 bit names."""
    args = dict.fromkeys(_KEY_USAGE_ARGS.values(), False)
    for name in names:
        args[_KEY_USAGE_ARGS[name]] = True
    return x509.KeyUsage(encipher_only=False, decipher_only=False, **args)


def authority_key_identifier(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """AKI copied from the issuer's SKI, so chain building matches exactly."""
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound as exc:
        raise CAError(
            f"issuer {issuer.subject.rfc4514_string()} has no subject key identifier"
        ) from exc
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def authority_information_access(
    *, ca_issuers: str, ocsp: str | None = None
) -> x509.AuthorityInformationAccess:
    """AIA with the OCSP responder (when there is one) and the issuer's certificate URL."""
    access = x509.oid.AuthorityInformationAccessOID
    descriptions = (
        []
        if ocsp is None
        else [x509.AccessDescription(access.OCSP, x509.UniformResourceIdentifier(ocsp))]
    )
    descriptions.append(
        x509.AccessDescription(access.CA_ISSUERS, x509.UniformResourceIdentifier(ca_issuers))
    )
    return x509.AuthorityInformationAccess(descriptions)


def crl_distribution_points(url: str) -> x509.CRLDistributionPoints:
    return x509.CRLDistributionPoints(
        [
            x509.DistributionPoint(
                full_name=[x509.UniformResourceIdentifier(url)],
                relative_name=None,
                reasons=None,
                crl_issuer=None,
            )
        ]
    )


def require_ca(issuer: x509.Certificate) -> None:
    """Refuse to chain below a certificate that is not a CA."""
    try:
        bc = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is None or not bc.ca:
        raise CAError(f"{issuer.subject.rfc4514_string()} is not a CA certificate")


def check_serial(serial: int) -> None:
    """RFC 5280 4.1.2.2: positive, at most 20 octets; BR 7.1: at least 64 random bits."""
    if not isinstance(serial, int) or isinstance(serial, bool):
        raise CAError("serial must be an integer")
    if not 0 < serial < 2**159:
        raise CAError("serial must be positive and fit in 20 octets")


def as_utc(now: datetime) -> datetime:
    """`now` in UTC; a naive datetime is refused rather than guessed."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise InputError("now must be a timezone-aware datetime")
    return now.astimezone(UTC)
