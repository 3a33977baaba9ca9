"""Lint before sign: only a linted, unchanged certificate is signed, and only once."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mailpki.ca.lint import Linter
from mailpki.ca.signing import SigningToken, lint_for_signing
from mailpki.errors import CAError, LintError

KEY = ec.generate_private_key(ec.SECP256R1())
NOW = dt.datetime.now(dt.UTC)


def builder(days: int = 30) -> x509.CertificateBuilder:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CA")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(KEY.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(KEY.public_key()), critical=False)
    )


class Recording(Linter):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[bytes] = []

    def check(self, certificate_der: bytes, lint_type: str | None) -> None:
        self.seen.append(certificate_der)


def test_token_signs_once_and_matches_what_was_linted() -> None:
    linter = Recording()
    token = lint_for_signing(builder(), key=KEY, linter=linter, lint_type=None)
    certificate = token.sign(KEY)
    linted = x509.load_der_x509_certificate(linter.seen[0])
    assert certificate.tbs_certificate_bytes == linted.tbs_certificate_bytes
    with pytest.raises(CAError, match="already used"):
        token.sign(KEY)


def test_token_refuses_a_certificate_other_than_the_linted_one() -> None:
    token = SigningToken(builder(), b"not the linted tbs")
    with pytest.raises(CAError, match="differs from the linted one"):
        token.sign(KEY)


def test_lint_findings_refuse_a_token() -> None:
    class Failing(Linter):
        def check(self, certificate_der: bytes, lint_type: str | None) -> None:
            raise LintError("refused", ["ERROR x"])

    with pytest.raises(LintError):
        lint_for_signing(builder(), key=KEY, linter=Failing(), lint_type=None)
