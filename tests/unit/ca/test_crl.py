"""CRL building: entries, extensions, partitions, signature, reasons."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, NameOID

from mailpki.ca.crl import REASONS, RevokedEntry, build_crl, parse_reason
from mailpki.errors import CAError, InputError

NOW = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)


def _ca(
    curve: ec.EllipticCurve = ec.SECP256R1(),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(curve)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test Issuing CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


@pytest.fixture(scope="module")
def ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    return _ca()


CA = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


def _build(
    ca: CA,
    entries: Iterable[RevokedEntry | tuple[int, dt.datetime, x509.ReasonFlags | None]],
    **kw: Any,
) -> x509.CertificateRevocationList:
    cert, key = ca
    args: dict[str, Any] = {
        "issuer": cert,
        "key": key,
        "entries": entries,
        "number": 7,
        "this_update": NOW,
        "next_update": NOW + dt.timedelta(days=7),
    }
    args.update(kw)
    return build_crl(**args)


def test_entries_round_trip(ca: CA) -> None:
    entries: list[RevokedEntry | tuple[int, dt.datetime, x509.ReasonFlags | None]] = [
        RevokedEntry(0x1234, NOW - dt.timedelta(days=1), x509.ReasonFlags.key_compromise),
        RevokedEntry(2**150 + 5, NOW - dt.timedelta(hours=3), None),
        RevokedEntry(99, NOW - dt.timedelta(minutes=5), x509.ReasonFlags.unspecified),
        # a plain tuple with a naive datetime, as a database row gives it: taken as UTC
        (77, dt.datetime(2025, 2, 1, 8, 30), x509.ReasonFlags.superseded),
    ]
    crl = _build(ca, entries)
    got = {r.serial_number: r for r in crl}
    assert set(got) == {0x1234, 2**150 + 5, 99, 77}
    assert got[0x1234].revocation_date_utc == NOW - dt.timedelta(days=1)
    assert got[77].revocation_date_utc == dt.datetime(2025, 2, 1, 8, 30, tzinfo=dt.UTC)

    def reason(r: x509.RevokedCertificate) -> x509.ReasonFlags | None:
        try:
            return r.extensions.get_extension_for_class(x509.CRLReason).value.reason
        except x509.ExtensionNotFound:
            return None

    assert reason(got[0x1234]) is x509.ReasonFlags.key_compromise
    assert reason(got[77]) is x509.ReasonFlags.superseded
    assert reason(got[2**150 + 5]) is None
    assert reason(got[99]) is None  # unspecified is said by omission (RFC 5280 §5.3.1)


def test_header_extensions_and_signature(ca: CA) -> None:
    cert, _ = ca
    crl = _build(ca, [RevokedEntry(5, NOW, None)])
    assert crl.issuer == cert.subject
    assert crl.last_update_utc == NOW
    assert crl.next_update_utc == NOW + dt.timedelta(days=7)
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 7
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    with pytest.raises(x509.ExtensionNotFound):
        crl.extensions.get_extension_for_oid(ExtensionOID.ISSUING_DISTRIBUTION_POINT)
    assert crl.is_signature_valid(ca[1].public_key())
    assert isinstance(crl.signature_hash_algorithm, hashes.SHA256)


def test_partitioned_crl_has_critical_idp(ca: CA) -> None:
    url = "http://pki.example.org/crl/issuing-3.crl"
    crl = _build(ca, [], distribution_point=url)
    ext = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint)
    assert ext.critical
    assert ext.value.full_name == [x509.UniformResourceIdentifier(url)]
    assert ext.value.only_contains_user_certs
    assert not ext.value.only_contains_ca_certs
    assert len(crl) == 0
    assert crl.is_signature_valid(ca[1].public_key())


def test_p384_uses_sha384() -> None:
    ca384 = _ca(ec.SECP384R1())
    crl = _build(ca384, [])
    assert isinstance(crl.signature_hash_algorithm, hashes.SHA384)
    crl = _build(ca384, [], hash_alg=hashes.SHA512())
    assert isinstance(crl.signature_hash_algorithm, hashes.SHA512)


def test_rejects_bad_input(ca: CA) -> None:
    with pytest.raises(InputError, match="after"):
        _build(ca, [], next_update=NOW)
    with pytest.raises(InputError, match="twice"):
        _build(ca, [RevokedEntry(3, NOW), RevokedEntry(3, NOW)])
    with pytest.raises(InputError, match="removeFromCRL"):
        _build(ca, [RevokedEntry(3, NOW, x509.ReasonFlags.remove_from_crl)])
    with pytest.raises(InputError, match="serial"):
        _build(ca, [RevokedEntry(-1, NOW)])
    with pytest.raises(InputError, match="CRL number"):
        _build(ca, [], number=-1)
    with pytest.raises(InputError, match="sha1"):
        _build(ca, [], hash_alg=hashes.SHA1())
    other_key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(CAError, match="does not belong"):
        _build(ca, [], key=other_key)


def test_ten_thousand_entries_quickly(ca: CA) -> None:
    entries = (
        RevokedEntry(1000 + i, NOW - dt.timedelta(seconds=i), x509.ReasonFlags.superseded)
        for i in range(10_000)
    )
    t0 = time.perf_counter()
    crl = _build(ca, entries)
    elapsed = time.perf_counter() - t0
    assert len(crl) == 10_000
    assert crl.get_revoked_certificate_by_serial_number(1000 + 9_999) is not None
    assert elapsed < 2.0, elapsed  # ~0.05 s here; quadratic building would be minutes
    der = crl.public_bytes(serialization.Encoding.DER)
    assert x509.load_der_x509_crl(der).is_signature_valid(ca[1].public_key())


@pytest.mark.parametrize(
    ("text", "flag"),
    [
        ("keyCompromise", x509.ReasonFlags.key_compromise),
        ("KEYCOMPROMISE", x509.ReasonFlags.key_compromise),
        ("key-compromise", x509.ReasonFlags.key_compromise),
        ("  superseded ", x509.ReasonFlags.superseded),
        ("cACompromise", x509.ReasonFlags.ca_compromise),
        ("certificateHold", x509.ReasonFlags.certificate_hold),
        ("aACompromise", x509.ReasonFlags.aa_compromise),
    ],
)
def test_parse_reason(text: str, flag: x509.ReasonFlags) -> None:
    assert parse_reason(text) is flag


def test_reasons_cover_rfc5280() -> None:
    assert set(REASONS.values()) == set(x509.ReasonFlags)
    assert len(REASONS) == 10


@pytest.mark.parametrize("text", ["", "compromised", "key compromise!", "7"])
def test_parse_reason_rejects(text: str) -> None:
    with pytest.raises(InputError) as err:
        parse_reason(text)
    assert "keyCompromise" in str(err.value)  # lists the choices
