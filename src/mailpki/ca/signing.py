"""Lint before sign, Boulder's way.

A to-be-signed certificate is first signed with a throwaway key of the issuing
key's type and linted; only a passing lint yields a single-use SigningToken, and
the real key signs through that token alone. The token checks that the real
certificate's TBS bytes are exactly the ones that were linted.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from mailpki.ca.lint import Linter
from mailpki.errors import CAError
from mailpki.keystore.keys import CAPrivateKey

_lint_keys: dict[tuple[str, int | str], CAPrivateKey] = {}
_lint_keys_lock = threading.Lock()


def signature_hash(key: CAPrivateKey) -> hashes.SHA256 | hashes.SHA384:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def _lint_key_for(key: CAPrivateKey) -> CAPrivateKey:
    """A throwaway software key of the same type and size (never used for real)."""
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        spec: tuple[str, int | str] = ("rsa", public.key_size)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        spec = ("ec", public.curve.name)
    else:  # pragma: no cover - the key stores only make RSA and EC keys
        raise CAError(f"unsupported CA key type {type(public).__name__}")
    with _lint_keys_lock:
        if spec not in _lint_keys:
            if isinstance(public, rsa.RSAPublicKey):
                _lint_keys[spec] = rsa.generate_private_key(65537, public.key_size)
            else:
                assert isinstance(public, ec.EllipticCurvePublicKey)
                _lint_keys[spec] = ec.generate_private_key(public.curve)
        return _lint_keys[spec]


@dataclass
class SigningToken:
    """Permission to sign exactly one linted certificate, once."""

    _builder: x509.CertificateBuilder
    _tbs: bytes
    _used: bool = field(default=False)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def sign(self, key: CAPrivateKey) -> x509.Certificate:
        with self._lock:
            if self._used:
                raise CAError("this signing token was already used; lint the certificate again")
            self._used = True
        certificate = self._builder.sign(key, signature_hash(key))
        if certificate.tbs_certificate_bytes != self._tbs:
            raise CAError("the signed certificate differs from the linted one; refusing it")
        return certificate


def lint_for_signing(
    builder: x509.CertificateBuilder, *, key: CAPrivateKey, linter: Linter, lint_type: str | None
) -> SigningToken:
    """Lint the certificate the builder would make; LintError if it has findings."""
    lint_key = _lint_key_for(key)
    candidate = builder.sign(lint_key, signature_hash(key))
    linter.check(candidate.public_bytes(Encoding.DER), lint_type)
    return SigningToken(builder, candidate.tbs_certificate_bytes)
