"""End-entity and CA certificate content, and zero lint findings for every profile."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mailpki.errors import CAError, ConfigError, InputError, KeyPolicyError
from mailpki.policy.certificate import CertificateUrls, build_certificate
from mailpki.policy.hierarchy import build_issuing_ca, build_ocsp_responder, build_root_ca
from mailpki.policy.person import Person
from mailpki.policy.profile import list_profiles, load_profile
from tests.unit.policy._chain import (
    CA_URLS,
    NOW,
    ORG,
    URLS,
    Chain,
    alice,
    issue,
    make_chain,
    rsa_2048_key,
    shared_linter,
)

PROFILE_NAMES = [p.name for p in list_profiles()]


@pytest.fixture(scope="module")
def chain() -> Chain:
    return make_chain()


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _ext(
    cert: x509.Certificate, cls: type[x509.ExtensionType]
) -> x509.Extension[x509.ExtensionType]:
    return cert.extensions.get_extension_for_class(cls)


@pytest.mark.parametrize("kind", ["rsa", "ec"])
@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_every_profile_lints_clean(
    chain: Chain, ec_key: ec.EllipticCurvePrivateKey, name: str, kind: str
) -> None:
    profile = load_profile(name)
    key = rsa_2048_key() if kind == "rsa" else ec_key
    cert = issue(chain, profile, key.public_key())
    assert shared_linter().lint(_der(cert), profile.lint_type) == []
    shared_linter().check(_der(cert), profile.lint_type)  # does not raise


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_common_content(chain: Chain, ec_key: ec.EllipticCurvePrivateKey, name: str) -> None:
    profile = load_profile(name)
    cert = issue(chain, profile, ec_key.public_key(), serial=4242)
    assert cert.serial_number == 4242
    assert cert.issuer == chain.issuing.subject
    bc = _ext(cert, x509.BasicConstraints)
    assert bc.critical and not bc.value.ca  # type: ignore[attr-defined]
    assert _ext(cert, x509.KeyUsage).critical
    eku = _ext(cert, x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.EMAIL_PROTECTION]  # type: ignore[call-overload]
    san = _ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.RFC822Name) == ["alice@example.com"]  # type: ignore[attr-defined]
    aki = _ext(cert, x509.AuthorityKeyIdentifier).value
    ski = _ext(chain.issuing, x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest  # type: ignore[attr-defined]
    cdp = _ext(cert, x509.CRLDistributionPoints).value
    assert cdp[0].full_name[0].value == URLS.crl  # type: ignore[index]
    aia = {
        d.access_method: d.access_location.value
        for d in _ext(cert, x509.AuthorityInformationAccess).value
    }  # type: ignore[attr-defined]
    assert aia == {
        x509.oid.AuthorityInformationAccessOID.OCSP: URLS.ocsp,
        x509.oid.AuthorityInformationAccessOID.CA_ISSUERS: URLS.ca_issuers,
    }
    assert cert.not_valid_before_utc == NOW - timedelta(minutes=1)
    period = cert.not_valid_after_utc - cert.not_valid_before_utc + timedelta(seconds=1)
    assert period == timedelta(days=profile.validity_days)
    if profile.policy_oids:
        policies = _ext(cert, x509.CertificatePolicies).value
        assert [p.policy_identifier.dotted_string for p in policies] == list(profile.policy_oids)  # type: ignore[attr-defined]


def _attrs(cert: x509.Certificate) -> list[tuple[str, str]]:
    return [(a.oid._name, str(a.value)) for a in cert.subject]


def test_mailbox_subject_is_only_the_address(
    chain: Chain, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    cert = issue(chain, load_profile("mailbox-strict"), ec_key.public_key())
    assert _attrs(cert) == [("commonName", "alice@example.com")]


def test_sponsored_subject(chain: Chain, ec_key: ec.EllipticCurvePrivateKey) -> None:
    cert = issue(chain, load_profile("sponsored-multipurpose"), ec_key.public_key())
    subject = cert.subject
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == ORG
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_IDENTIFIER)[0].value == (
        "NTRGB-12345678"
    )
    assert subject.get_attributes_for_oid(NameOID.GIVEN_NAME)[0].value == "Alice"
    assert subject.get_attributes_for_oid(NameOID.SURNAME)[0].value == "Smith"
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Alice Smith"


def test_enterprise_subject_mirrors_directory(
    chain: Chain, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    cert = issue(chain, load_profile("enterprise-private"), ec_key.public_key())
    assert cert.subject.rfc4514_string() == "CN=Alice Smith,OU=London,O=Example Ltd"
    assert not cert.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.CertificatePolicies)


@pytest.mark.parametrize(
    ("name", "kind", "bits"),
    [
        ("sponsored-multipurpose", "rsa", {"digital_signature", "key_encipherment"}),
        ("sponsored-multipurpose", "ec", {"digital_signature", "key_agreement"}),
        ("sponsored-strict-signing", "rsa", {"digital_signature", "content_commitment"}),
        ("sponsored-strict-signing", "ec", {"digital_signature", "content_commitment"}),
        ("sponsored-strict-encryption", "rsa", {"key_encipherment"}),
        ("sponsored-strict-encryption", "ec", {"key_agreement"}),
    ],
)
def test_key_usage_by_kind(
    chain: Chain, ec_key: ec.EllipticCurvePrivateKey, name: str, kind: str, bits: set[str]
) -> None:
    key = rsa_2048_key() if kind == "rsa" else ec_key
    ku = _ext(issue(chain, load_profile(name), key.public_key()), x509.KeyUsage).value
    names = [
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
    ]
    assert {n for n in names if getattr(ku, n)} == bits


def test_sponsored_needs_a_personal_name(chain: Chain, ec_key: ec.EllipticCurvePrivateKey) -> None:
    person = Person.from_untrusted(
        name="Mary Ann Smith",
        email="mary@example.com",
        organisation=ORG,
        organisation_identifier="NTRGB-12345678",
    )
    with pytest.raises(InputError, match="given name or surname"):
        issue(chain, load_profile("sponsored-multipurpose"), ec_key.public_key(), person)
    # the mailbox and directory rules do not need one
    issue(chain, load_profile("mailbox-strict"), ec_key.public_key(), person)
    issue(chain, load_profile("enterprise-private"), ec_key.public_key(), person)


def test_sponsored_needs_organisation_and_identifier(
    chain: Chain, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    profile = load_profile("sponsored-multipurpose")
    no_org = Person.from_untrusted(name="Alice Smith", email="alice@example.com")
    with pytest.raises(InputError, match="organisation"):
        issue(chain, profile, ec_key.public_key(), no_org)
    no_id = Person.from_untrusted(name="Alice Smith", email="alice@example.com", organisation=ORG)
    with pytest.raises(InputError, match="organisation identifier"):
        issue(chain, profile, ec_key.public_key(), no_id)


def test_weak_key_refused_by_builder(chain: Chain) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(KeyPolicyError):
        issue(chain, load_profile("sponsored-multipurpose"), weak.public_key())


def test_issuer_expiring_first_refused(chain: Chain, ec_key: ec.EllipticCurvePrivateKey) -> None:
    late = chain.issuing.not_valid_after_utc - timedelta(days=10)
    with pytest.raises(CAError, match="renew the issuing CA"):
        issue(chain, load_profile("sponsored-multipurpose"), ec_key.public_key(), now=late)


def test_issuer_must_be_ca(chain: Chain, ec_key: ec.EllipticCurvePrivateKey) -> None:
    ee = issue(chain, load_profile("mailbox-strict"), ec_key.public_key())
    with pytest.raises(CAError, match="not a CA"):
        build_certificate(
            load_profile("mailbox-strict"),
            alice(),
            ec_key.public_key(),
            issuer=ee,
            serial=5,
            now=NOW,
            urls=URLS,
        )


@pytest.mark.parametrize("serial", [0, -1, 2**160])
def test_bad_serial(chain: Chain, ec_key: ec.EllipticCurvePrivateKey, serial: int) -> None:
    with pytest.raises(CAError, match="serial"):
        issue(chain, load_profile("mailbox-strict"), ec_key.public_key(), serial=serial)


def test_naive_now_refused(chain: Chain, ec_key: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(InputError, match="timezone-aware"):
        issue(
            chain,
            load_profile("mailbox-strict"),
            ec_key.public_key(),
            now=datetime(2026, 3, 1, 12, 0),
        )


@pytest.mark.parametrize(
    "url", ["https://pki.example.com/x.crl", "ldap://pki.example.com/x", "http://", "http://a b/"]
)
def test_urls_must_be_http(url: str) -> None:
    with pytest.raises(ConfigError):
        CertificateUrls(crl=url, ca_issuers="http://a.example/c", ocsp="http://a.example/o")


def test_root_and_issuing_ca_content(chain: Chain) -> None:
    root, issuing = chain.root, chain.issuing
    assert root.subject.rfc4514_string() == "CN=Example Ltd S/MIME Root CA,O=Example Ltd"
    assert root.issuer == root.subject
    root_bc = _ext(root, x509.BasicConstraints)
    assert root_bc.critical and root_bc.value.ca and root_bc.value.path_length is None  # type: ignore[attr-defined]
    root_ku = _ext(root, x509.KeyUsage)
    assert root_ku.critical and root_ku.value.key_cert_sign and root_ku.value.crl_sign  # type: ignore[attr-defined]
    assert not root_ku.value.digital_signature  # type: ignore[attr-defined]
    assert root.not_valid_after_utc.year == NOW.year + 20

    assert issuing.subject.rfc4514_string() == "CN=Example Ltd S/MIME Issuing CA,O=Example Ltd"
    bc = _ext(issuing, x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0  # type: ignore[attr-defined]
    assert list(_ext(issuing, x509.ExtendedKeyUsage).value) == [  # type: ignore[call-overload]
        ExtendedKeyUsageOID.EMAIL_PROTECTION
    ]
    assert _ext(issuing, x509.AuthorityKeyIdentifier).value.key_identifier == (  # type: ignore[attr-defined]
        _ext(root, x509.SubjectKeyIdentifier).value.digest  # type: ignore[attr-defined]
    )
    assert _ext(issuing, x509.CRLDistributionPoints).value[0].full_name[0].value == CA_URLS.root_crl  # type: ignore[index]
    issuing.verify_directly_issued_by(root)
    assert issuing.not_valid_after_utc.year == NOW.year + 10


def test_issuing_ca_never_outlives_root(chain: Chain) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    late = NOW.replace(year=NOW.year + 15)
    builder = build_issuing_ca(
        org=ORG, public_key=key.public_key(), root=chain.root, serial=9, now=late, urls=CA_URLS
    )
    cert = builder.sign(chain.root_key, hashes.SHA256())
    assert cert.not_valid_after_utc == chain.root.not_valid_after_utc


def test_ocsp_responder_content(chain: Chain) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = build_ocsp_responder(
        org=ORG, public_key=key.public_key(), issuer=chain.issuing, serial=77, now=NOW
    ).sign(chain.issuing_key, hashes.SHA256())
    assert cert.issuer == chain.issuing.subject
    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.OCSP_SIGNING]  # type: ignore[call-overload]
    assert _ext(cert, x509.OCSPNoCheck)
    ku = _ext(cert, x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign  # type: ignore[attr-defined]
    bc = _ext(cert, x509.BasicConstraints)
    assert bc.critical and not bc.value.ca  # type: ignore[attr-defined]
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=365)


def test_ca_builders_refuse_weak_keys_and_bad_org() -> None:
    weak = ec.generate_private_key(ec.SECP256K1())
    with pytest.raises(KeyPolicyError):
        build_root_ca(org=ORG, public_key=weak.public_key(), serial=1, now=NOW)
    good = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(InputError, match="org"):
        build_root_ca(org="  ", public_key=good.public_key(), serial=1, now=NOW)
    with pytest.raises(InputError, match="shorter org name"):
        build_root_ca(org="O" * 60, public_key=good.public_key(), serial=1, now=NOW)


def test_profile_validity_is_applied(chain: Chain, ec_key: ec.EllipticCurvePrivateKey) -> None:
    profile = dataclasses.replace(load_profile("mailbox-strict"), validity_days=30)
    cert = issue(chain, profile, ec_key.public_key())
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=30, seconds=-1)
