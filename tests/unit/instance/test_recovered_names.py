"""The friendly names of a recovered key history carry each serial as the CLI prints it:
zero-padded to 32 hex digits, also for a serial with leading zero digits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mailpki.ca.serials import parse_serial
from mailpki.instance.recovery_admin import _history_name


def certificate(serial: int, not_after: datetime) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bob")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_after - timedelta(days=365))
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )


def test_history_names_carry_the_padded_serial() -> None:
    until = datetime(2027, 3, 1, tzinfo=UTC)
    newest = certificate(0x00A1B2C3D4E5F60718293A4B5C6D7E8F, until)
    older = certificate(0x0F, until)
    assert (
        _history_name("bob@example.com", 0, newest)
        == "bob@example.com (recovered S/MIME 00A1B2C3D4E5F60718293A4B5C6D7E8F, newest)"
    )
    name = _history_name("bob@example.com", 1, older)
    assert name == (
        "bob@example.com (recovered S/MIME 0000000000000000000000000000000F, until 2027-03-01)"
    )
    # What the name shows is read back by the CLI's own parser.
    assert parse_serial(name.split("S/MIME ")[1].split(",")[0]) == 0x0F
