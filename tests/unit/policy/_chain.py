"""Test helpers: a throwaway P-256 root + issuing CA built with mailpki's own builders.

Used by the policy, lint and OpenSSL tests. Kept as a plain module (not a conftest)
so tests outside this directory can import it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from mailpki.ca.lint import Linter
from mailpki.policy.certificate import CertificateUrls, build_certificate
from mailpki.policy.hierarchy import CACertificateUrls, build_issuing_ca, build_root_ca
from mailpki.policy.person import Person
from mailpki.policy.profile import Profile

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
ORG = "Example Ltd"
URLS = CertificateUrls(
    crl="http://pki.example.com/crl/issuing-0.crl",
    ca_issuers="http://pki.example.com/issuing.der",
    ocsp="http://ocsp.example.com/",
)
CA_URLS = CACertificateUrls(
    root_crl="http://pki.example.com/root.crl", root_issuers="http://pki.example.com/root.der"
)


@dataclass(frozen=True)
class Chain:
    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    issuing_key: ec.EllipticCurvePrivateKey
    issuing: x509.Certificate


def make_chain(now: datetime = NOW) -> Chain:
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = build_root_ca(org=ORG, public_key=root_key.public_key(), serial=1, now=now).sign(
        root_key, hashes.SHA256()
    )
    issuing_key = ec.generate_private_key(ec.SECP256R1())
    issuing = build_issuing_ca(
        org=ORG,
        public_key=issuing_key.public_key(),
        root=root,
        serial=2,
        now=now,
        urls=CA_URLS,
    ).sign(root_key, hashes.SHA256())
    return Chain(root_key, root, issuing_key, issuing)


def alice() -> Person:
    return Person.from_untrusted(
        name="Alice Smith",
        email="alice@example.com",
        organisation=ORG,
        site="London",
        organisation_identifier="NTRGB-12345678",
    )


def issue(
    chain: Chain,
    profile: Profile,
    key: CertificatePublicKeyTypes,
    person: Person | None = None,
    serial: int = 0x1234_5678_9ABC_DEF0_1234,
    now: datetime = NOW,
) -> x509.Certificate:
    builder = build_certificate(
        profile,
        person or alice(),
        key,
        issuer=chain.issuing,
        serial=serial,
        now=now,
        urls=URLS,
    )
    return builder.sign(chain.issuing_key, hashes.SHA256())


@functools.cache
def rsa_2048_key() -> rsa.RSAPrivateKey:
    """One RSA-2048 key per test process: generating RSA keys is slow."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.cache
def shared_linter() -> Linter:
    """One Linter per test process: building a pkilint validator costs ~200 ms."""
    return Linter("WARNING")
