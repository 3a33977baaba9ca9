"""OpenSSL as a peer: it accepts the chain and end-entity certificates mailpki shapes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mailpki.policy.profile import load_profile
from tests.unit.policy._chain import issue, make_chain, rsa_2048_key

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed"),
]


def _pem(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.mark.parametrize(
    ("profile", "kind", "purpose"),
    [
        ("sponsored-multipurpose", "rsa", "smimesign"),
        ("sponsored-multipurpose", "ec", "smimesign"),
        ("sponsored-multipurpose", "rsa", "smimeencrypt"),
        ("sponsored-strict-signing", "ec", "smimesign"),
        ("sponsored-strict-encryption", "rsa", "smimeencrypt"),
        ("mailbox-strict", "ec", "smimesign"),
        ("enterprise-private", "rsa", "smimesign"),
    ],
)
def test_openssl_verify_accepts_chain(
    tmp_path: Path, profile: str, kind: str, purpose: str
) -> None:
    # The chain's validity starts at a fixed date in 2026; verify at that date so the
    # test does not depend on the wall clock.
    chain = make_chain()
    key = (
        rsa_2048_key().public_key()
        if kind == "rsa"
        else ec.generate_private_key(ec.SECP256R1()).public_key()
    )
    ee = issue(chain, load_profile(profile), key)
    at = int(ee.not_valid_before_utc.timestamp()) + 3600
    result = subprocess.run(
        [
            "openssl",
            "verify",
            "-purpose",
            purpose,
            "-attime",
            str(at),
            "-CAfile",
            str(_pem(tmp_path / "root.pem", chain.root)),
            "-untrusted",
            str(_pem(tmp_path / "issuing.pem", chain.issuing)),
            str(_pem(tmp_path / "ee.pem", ee)),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith(": OK")


def test_openssl_refuses_signing_only_for_encryption(tmp_path: Path) -> None:
    # The dual-key split is real: the signing half cannot be used to encrypt to.
    chain = make_chain()
    ee = issue(chain, load_profile("sponsored-strict-signing"), rsa_2048_key().public_key())
    at = int(ee.not_valid_before_utc.timestamp()) + 3600
    result = subprocess.run(
        [
            "openssl",
            "verify",
            "-purpose",
            "smimeencrypt",
            "-attime",
            str(at),
            "-CAfile",
            str(_pem(tmp_path / "root.pem", chain.root)),
            "-untrusted",
            str(_pem(tmp_path / "issuing.pem", chain.issuing)),
            str(_pem(tmp_path / "ee.pem", ee)),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
