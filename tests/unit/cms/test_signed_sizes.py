"""Signing with the encryption-key preference works for every size of issuer name.

asn1crypto reads a definite length whose last octet is 0x80 (82 01 80: 384 bytes) as
an indefinite one and re-encodes what is below it; the preference attribute's value
([0] IMPLICIT IssuerAndSerialNumber) could not be re-encoded, so `mail sign` failed for
issuers of some name lengths ("Example Corp S/MIME Issuing CA G2" was one)."""

from __future__ import annotations

import datetime
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mailpki.cms.signed import sign, verify_signed

KEY = ec.generate_private_key(ec.SECP256R1())


def _certificate(common_name: str) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Corp"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(KEY.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(KEY, hashes.SHA256())
    )


@pytest.mark.parametrize("length", range(1, 65))
def test_every_issuer_name_length_signs_and_verifies(length: int) -> None:
    certificate = _certificate("A" * length)
    signed = sign(b"hello", certificate, KEY, encryption_certificate=certificate)
    assert verify_signed(signed).content == b"hello"


def test_the_size_that_failed_is_accepted_by_openssl(tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is not installed")
    certificate = _certificate("Example Corp S/MIME Issuing CA G2")
    signed = sign(b"hello", certificate, KEY, encryption_certificate=certificate)
    (tmp_path / "m.der").write_bytes(signed)
    result = subprocess.run(
        [openssl, "cms", "-verify", "-noverify", "-inform", "DER", "-in", tmp_path / "m.der"],
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hello"
