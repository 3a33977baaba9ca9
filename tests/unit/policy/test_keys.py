"""Key policy: strong RSA and the BR curves pass; everything else is refused clearly."""

from __future__ import annotations

import dataclasses

import pytest
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x25519

from mailpki.errors import InputError, KeyPolicyError
from mailpki.policy.keys import check_public_key, key_kind
from mailpki.policy.profile import load_profile
from tests.unit.policy._chain import rsa_2048_key

PROFILE = load_profile("sponsored-multipurpose")


def _fake_rsa(bits: int, e: int = 65537) -> rsa.RSAPublicKey:
    # A public key only needs n odd and of the right length: no slow generation.
    n = (1 << (bits - 1)) | 0xFFFF | 1
    return rsa.RSAPublicNumbers(e, n).public_key()


def test_rsa_2048_and_p256_p384_accepted() -> None:
    check_public_key(PROFILE, rsa_2048_key().public_key())
    check_public_key(PROFILE, ec.generate_private_key(ec.SECP256R1()).public_key())
    check_public_key(PROFILE, ec.generate_private_key(ec.SECP384R1()).public_key())
    check_public_key(PROFILE, _fake_rsa(4096))


def test_key_kind() -> None:
    assert key_kind(rsa_2048_key().public_key()) == "rsa"
    assert key_kind(ec.generate_private_key(ec.SECP256R1()).public_key()) == "ec"


def test_key_policy_error_is_an_input_error() -> None:
    assert issubclass(KeyPolicyError, InputError)


def test_rsa_1024_refused() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    with pytest.raises(KeyPolicyError, match="1024 bits is too weak"):
        check_public_key(PROFILE, key)


def test_rsa_exponent_3_refused() -> None:
    n = rsa_2048_key().public_key().public_numbers().n
    key = rsa.RSAPublicNumbers(3, n).public_key()
    with pytest.raises(KeyPolicyError, match="exponent 3"):
        check_public_key(PROFILE, key)


def test_rsa_modulus_not_multiple_of_8_refused() -> None:
    with pytest.raises(KeyPolicyError, match="not a multiple of 8"):
        check_public_key(PROFILE, _fake_rsa(2052))


def test_rsa_size_not_in_profile_refused() -> None:
    narrow = dataclasses.replace(PROFILE, rsa_sizes=(3072,))
    with pytest.raises(KeyPolicyError, match=r"RSA-2048 is not allowed.*3072"):
        check_public_key(narrow, rsa_2048_key().public_key())
    with pytest.raises(KeyPolicyError, match="RSA-2056 is not allowed"):
        check_public_key(PROFILE, _fake_rsa(2056))


@pytest.mark.parametrize(
    ("curve", "name"),
    [(ec.SECP256K1(), "secp256k1"), (ec.SECP521R1(), "secp521r1"), (ec.SECP224R1(), "secp224r1")],
)
def test_disallowed_curves_refused(curve: ec.EllipticCurve, name: str) -> None:
    key = ec.generate_private_key(curve).public_key()
    with pytest.raises(KeyPolicyError, match=f"EC curve {name} is not allowed"):
        check_public_key(PROFILE, key)


@pytest.mark.parametrize(
    ("make", "label"),
    [
        (lambda: dsa.generate_private_key(1024).public_key(), "DSA"),
        (lambda: ed25519.Ed25519PrivateKey.generate().public_key(), "Ed25519"),
        (lambda: ed448.Ed448PrivateKey.generate().public_key(), "Ed448"),
        (lambda: x25519.X25519PrivateKey.generate().public_key(), "X25519PublicKey"),
    ],
)
def test_other_key_types_refused(make: object, label: str) -> None:
    key = make()  # type: ignore[operator]
    with pytest.raises(KeyPolicyError, match=f"{label} keys are not supported"):
        check_public_key(PROFILE, key)
    with pytest.raises(KeyPolicyError):
        key_kind(key)


def test_private_key_refused() -> None:
    with pytest.raises(KeyPolicyError, match="expected a public key"):
        check_public_key(PROFILE, ec.generate_private_key(ec.SECP256R1()))


def test_non_key_refused() -> None:
    with pytest.raises(KeyPolicyError):
        check_public_key(PROFILE, b"not a key")
