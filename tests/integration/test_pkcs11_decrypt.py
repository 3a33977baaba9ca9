"""RSA-OAEP decryption inside a SoftHSM2 token (the Key Recovery Service's transport key)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mailpki.errors import InputError, KeyStoreError
from mailpki.keystore.pkcs11 import PKCS11KeyStore, PKCS11RSAPrivateKey
from tests.fixtures.softhsm import SoftHSMToken

pytestmark = pytest.mark.integration


def _label(prefix: str) -> str:
    # One token for the whole run: distinct labels keep tests independent.
    return f"{prefix}-{secrets.token_hex(4)}"


def _oaep(algorithm: hashes.HashAlgorithm, label: bytes | None = None) -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(algorithm), algorithm=algorithm, label=label)


@pytest.fixture(scope="module")
def store(softhsm_token: SoftHSMToken) -> Iterator[PKCS11KeyStore]:
    with PKCS11KeyStore(softhsm_token.module, softhsm_token.label, softhsm_token.pin.encode()) as s:
        yield s


@pytest.fixture(scope="module")
def transport(store: PKCS11KeyStore) -> tuple[str, PKCS11RSAPrivateKey]:
    """One RSA-2048 decryption key, generated in the token once for the module."""
    label = _label("transport")
    key = store.generate(label, "rsa2048", usage="decrypt")
    assert isinstance(key, PKCS11RSAPrivateKey)
    return label, key


def test_oaep_sha1_round_trip(transport: tuple[str, PKCS11RSAPrivateKey]) -> None:
    _, key = transport
    assert key.key_size == 2048
    for _ in range(3):
        secret = os.urandom(64)
        blob = key.public_key().encrypt(secret, _oaep(hashes.SHA1()))
        assert key.decrypt(blob, _oaep(hashes.SHA1())) == secret


def test_loaded_again_still_decrypts(
    transport: tuple[str, PKCS11RSAPrivateKey], store: PKCS11KeyStore
) -> None:
    label, key = transport
    again = store.load(label)
    assert isinstance(again, PKCS11RSAPrivateKey)
    secret = os.urandom(64)
    blob = key.public_key().encrypt(secret, _oaep(hashes.SHA1()))
    assert again.decrypt(blob, _oaep(hashes.SHA1())) == secret


@pytest.mark.parametrize(
    "algorithm", [hashes.SHA256(), hashes.SHA384(), hashes.SHA512()], ids=lambda a: a.name
)
def test_oaep_sha2(
    transport: tuple[str, PKCS11RSAPrivateKey], algorithm: hashes.HashAlgorithm
) -> None:
    _, key = transport
    secret = os.urandom(64)
    blob = key.public_key().encrypt(secret, _oaep(algorithm))
    try:
        assert key.decrypt(blob, _oaep(algorithm)) == secret
    except KeyStoreError as exc:
        # SoftHSM2 2.6.1 implements CKM_RSA_PKCS_OAEP with SHA-1 only (ArgumentsBad
        # for anything else); a token that does SHA-2 takes the branch above.
        name = algorithm.name.upper().replace("SHA", "SHA-")
        assert str(exc) == (
            f"the token refused RSA-OAEP with {name}; SoftHSM2 supports only SHA-1: "
            "set the OAEP hash to sha1"
        )


def test_tampered_and_wrong_ciphertexts(transport: tuple[str, PKCS11RSAPrivateKey]) -> None:
    _, key = transport
    blob = bytearray(key.public_key().encrypt(os.urandom(64), _oaep(hashes.SHA1())))
    blob[40] ^= 0x01
    foreign = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    others = [
        bytes(blob),
        foreign.encrypt(os.urandom(64), _oaep(hashes.SHA1())),
        b"\x00" * 256,
    ]
    messages = set()
    for bad in others:
        with pytest.raises(KeyStoreError, match="damaged or was not made for this key") as info:
            key.decrypt(bad, _oaep(hashes.SHA1()))
        messages.add(str(info.value))
    assert len(messages) == 1  # no padding oracle in the messages
    with pytest.raises(KeyStoreError, match="needs exactly 256"):
        key.decrypt(bytes(blob[:-1]), _oaep(hashes.SHA1()))
    # The key is still usable after failures (no operation left half-open).
    secret = os.urandom(64)
    good = key.public_key().encrypt(secret, _oaep(hashes.SHA1()))
    assert key.decrypt(good, _oaep(hashes.SHA1())) == secret


def test_refused_paddings(transport: tuple[str, PKCS11RSAPrivateKey]) -> None:
    _, key = transport
    public = key.public_key()
    v15 = public.encrypt(os.urandom(64), padding.PKCS1v15())
    with pytest.raises(KeyStoreError, match="PKCS1-v1_5 is not supported.*use RSA-OAEP"):
        key.decrypt(v15, padding.PKCS1v15())
    labelled = public.encrypt(os.urandom(64), _oaep(hashes.SHA1(), b"label"))
    with pytest.raises(KeyStoreError, match="with a label is not supported"):
        key.decrypt(labelled, _oaep(hashes.SHA1(), b"label"))
    with pytest.raises(KeyStoreError, match="not supported in the token"):
        key.decrypt(v15, _oaep(hashes.SHA224()))


def test_decryption_key_is_protected_and_cannot_sign(
    transport: tuple[str, PKCS11RSAPrivateKey], store: PKCS11KeyStore
) -> None:
    label, key = transport
    flags = store.key_attributes(label)
    assert flags["sensitive"] and flags["always_sensitive"]
    assert not flags["extractable"] and flags["never_extractable"]
    assert flags["local"] and flags["private"]
    assert flags["decrypt"] and flags["unwrap"]
    assert not (flags["sign"] or flags["derive"])
    with pytest.raises(KeyStoreError, match="not extractable"):
        store.export_pem(label, b"backup")
    # Key separation: a decryption key is never asked to sign.
    with pytest.raises(KeyStoreError, match="it is a decryption key"):
        key.sign(b"data", padding.PKCS1v15(), hashes.SHA256())


def test_signing_key_refuses_to_decrypt(store: PKCS11KeyStore) -> None:
    label = _label("signer")
    key = store.generate(label, "rsa2048")
    try:
        assert isinstance(key, rsa.RSAPrivateKey)
        blob = key.public_key().encrypt(os.urandom(64), _oaep(hashes.SHA1()))
        with pytest.raises(KeyStoreError, match="it is a signing key"):
            key.decrypt(blob, _oaep(hashes.SHA1()))
        assert not store.key_attributes(label)["decrypt"]
    finally:
        store.remove(label)


def test_decrypt_usage_needs_rsa(store: PKCS11KeyStore) -> None:
    label = _label("ec-decrypt")
    with pytest.raises(InputError, match="cannot be a decryption key"):
        store.generate(label, "p256", usage="decrypt")
    assert not store.exists(label)
