"""Public key rules: which keys a profile accepts.

Keys come from CSRs (untrusted) or from the key manager; both pass through
`check_public_key` before a certificate is built, so a weak key is refused with a
message the requester can act on instead of a lint finding later.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from mailpki.errors import KeyPolicyError
from mailpki.policy.profile import Profile

MIN_RSA_BITS = 2048
RSA_EXPONENT = 65537  # S/MIME BR 6.1.6 allows more, but 65537 is what every client expects


def key_kind(key: object) -> str:
    """'rsa' or 'ec'; KeyPolicyError for every other key type."""
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return "rsa"
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return "ec"
    raise KeyPolicyError(f"{_describe(key)} keys are not supported; use RSA or ECDSA (P-256/P-384)")


def check_public_key(profile: Profile, key: object) -> None:
    """Refuse a key the profile does not allow, saying what would be accepted."""
    kind = key_kind(key)
    if isinstance(key, rsa.RSAPublicKey):
        bits = key.key_size
        if bits < MIN_RSA_BITS:
            raise KeyPolicyError(f"RSA key of {bits} bits is too weak; at least {MIN_RSA_BITS}")
        if bits % 8:
            raise KeyPolicyError(f"RSA modulus of {bits} bits is not a multiple of 8")
        if bits not in profile.rsa_sizes:
            raise KeyPolicyError(
                f"RSA-{bits} is not allowed by profile {profile.name}; "
                f"allowed sizes: {_list(profile.rsa_sizes) or 'none (use EC)'}"
            )
        exponent = key.public_numbers().e
        if exponent != RSA_EXPONENT:
            raise KeyPolicyError(
                f"RSA public exponent {exponent} is not allowed; use {RSA_EXPONENT}"
            )
        return
    if isinstance(key, ec.EllipticCurvePublicKey):
        curve = key.curve.name
        if curve not in profile.curves:
            raise KeyPolicyError(
                f"EC curve {curve} is not allowed by profile {profile.name}; "
                f"allowed curves: {_list(profile.curves) or 'none (use RSA)'}"
            )
        return
    # A private key object passed by mistake: never guess, say so.
    raise KeyPolicyError(f"expected a public key, got a {kind.upper()} private key")


def _describe(key: object) -> str:
    if isinstance(key, dsa.DSAPublicKey | dsa.DSAPrivateKey):
        return "DSA"
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return "Ed25519"
    if isinstance(key, ed448.Ed448PublicKey | ed448.Ed448PrivateKey):
        return "Ed448"
    return type(key).__name__


def _list(values: tuple[int, ...] | tuple[str, ...]) -> str:
    return ", ".join(str(v) for v in values)
