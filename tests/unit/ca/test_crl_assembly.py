"""The assembled CRL (entries encoded once, concatenated, signed once) is byte for byte
what cryptography's own CRL builder produces for the same input."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtensionOID, NameOID

from mailpki.ca.crl import PrivateKey, assemble_crl, encode_entry
from mailpki.errors import InputError

NOW = dt.datetime(2025, 3, 1, 12, 0, 7, 123456, tzinfo=dt.UTC)
POINT = "http://pki.example.org/crl/issuing-3.crl"

ENTRIES: list[tuple[int, dt.datetime, x509.ReasonFlags | None]] = [
    (1, NOW - dt.timedelta(days=1), x509.ReasonFlags.key_compromise),
    (0x7F, NOW, None),
    (0x80, NOW, x509.ReasonFlags.unspecified),  # said by omitting the reason
    (0xFF, dt.datetime(1950, 1, 1, tzinfo=dt.UTC), x509.ReasonFlags.superseded),
    (2**150 + 5, dt.datetime(2049, 12, 31, 23, 59, 59, tzinfo=dt.UTC), None),
    (2**159 - 1, dt.datetime(2050, 1, 1, tzinfo=dt.UTC), x509.ReasonFlags.aa_compromise),
    *[
        (1000 + i, NOW - dt.timedelta(hours=i), flag)
        for i, flag in enumerate(x509.ReasonFlags)
        if flag is not x509.ReasonFlags.remove_from_crl
    ],
]


def _issuer(key: PrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Assembly Test CA")])
    alg = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())  # type: ignore[arg-type]
        .serial_number(1)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(key, alg)  # type: ignore[arg-type]
    )


def _reference(issuer: x509.Certificate, key: PrivateKey, point: str | None) -> bytes:
    """The TBSCertList cryptography's builder makes from the same input."""
    revoked = []
    for serial, when, reason in ENTRIES:
        b = x509.RevokedCertificateBuilder(serial_number=serial, revocation_date=when)
        if reason is not None and reason is not x509.ReasonFlags.unspecified:
            b = b.add_extension(x509.CRLReason(reason), critical=False)
        revoked.append(b.build())
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateRevocationListBuilder(revoked_certificates=revoked)
        .issuer_name(issuer.subject)
        .last_update(NOW)
        .next_update(NOW + dt.timedelta(days=7))
        .add_extension(x509.CRLNumber(42), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )
    if point is not None:
        idp = x509.IssuingDistributionPoint(
            full_name=[x509.UniformResourceIdentifier(point)],
            relative_name=None,
            only_contains_user_certs=True,
            only_contains_ca_certs=False,
            only_some_reasons=None,
            indirect_crl=False,
            only_contains_attribute_certs=False,
        )
        builder = builder.add_extension(idp, critical=True)
    alg = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, alg).tbs_certlist_bytes  # type: ignore[arg-type]


KEYS = {
    "p256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "rsa2048": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "ed25519": ed25519.Ed25519PrivateKey.generate,
}


@pytest.mark.parametrize("kind", sorted(KEYS))
@pytest.mark.parametrize("point", [None, POINT])
def test_same_tbs_as_cryptography(kind: str, point: str | None) -> None:
    key: PrivateKey = KEYS[kind]()  # type: ignore[assignment]
    issuer = _issuer(key)
    counter: list[int] = []
    der = assemble_crl(
        issuer=issuer,
        key=key,
        entry_ders=(encode_entry(*entry) for entry in ENTRIES),
        number=42,
        this_update=NOW,
        next_update=NOW + dt.timedelta(days=7),
        distribution_point=point,
        hash_alg=None if kind == "ed25519" else hashes.SHA256(),
        counter=counter,
    )
    assert counter == [len(ENTRIES)]
    crl = x509.load_der_x509_crl(der)
    assert crl.public_bytes(serialization.Encoding.DER) == der
    assert crl.tbs_certlist_bytes == _reference(issuer, key, point)
    assert crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    assert len(crl) == len(ENTRIES)
    idp = [e for e in crl.extensions if e.oid == ExtensionOID.ISSUING_DISTRIBUTION_POINT]
    assert bool(idp) == (point is not None)


def test_empty_crl_has_no_revoked_list() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    issuer = _issuer(key)
    der = assemble_crl(
        issuer=issuer,
        key=key,
        entry_ders=[],
        number=1,
        this_update=NOW,
        next_update=NOW + dt.timedelta(hours=1),
    )
    crl = x509.load_der_x509_crl(der)
    assert len(crl) == 0 and crl.is_signature_valid(key.public_key())


@pytest.mark.parametrize(
    ("serial", "when", "reason", "message"),
    [
        (0, NOW, None, "serial"),
        (-5, NOW, None, "serial"),
        (2**159, NOW, None, "serial"),
        (5, dt.datetime(1949, 12, 31, tzinfo=dt.UTC), None, "1950"),
        (5, NOW, x509.ReasonFlags.remove_from_crl, "removeFromCRL"),
    ],
)
def test_encode_entry_refuses(
    serial: int, when: dt.datetime, reason: x509.ReasonFlags | None, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        encode_entry(serial, when, reason)
