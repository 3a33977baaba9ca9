"""Key recovery blocks: seal, unwrap with the transport key, open against the certificate."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mailpki.errors import ConfigError, EscrowError
from mailpki.keystore.recovery_block import (
    AES_KEY_BYTES,
    OAEP_HASHES,
    SPKI_HASH_BYTES,
    PrivateKey,
    RecoveryBlock,
    TransportKey,
    _associated_data,
    oaep,
    open_block,
    seal,
    spki_sha256,
    split_unwrapped,
)


@pytest.fixture(scope="module")
def transport_private() -> rsa.RSAPrivateKey:
    """The recovery service's RSA-3072 transport key, made once for the module."""
    return rsa.generate_private_key(public_exponent=65537, key_size=3072)


@pytest.fixture(scope="module")
def transport(transport_private: rsa.RSAPrivateKey) -> TransportKey:
    return TransportKey(transport_private.public_key(), "sha256")


@pytest.fixture(scope="module")
def p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def rsa2048() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module", params=["p256", "rsa2048"])
def subscriber(request: pytest.FixtureRequest) -> tuple[str, PrivateKey]:
    key: PrivateKey = request.getfixturevalue(request.param)
    return request.param, key


def spki_der(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def private_der(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def unwrap(block: RecoveryBlock, transport_private: rsa.RSAPrivateKey) -> bytes:
    """What the recovery service does with the block's wrapped key."""
    return transport_private.decrypt(block.wrapped_key, oaep(block.oaep_hash))


def aes_key_of(block: RecoveryBlock, transport_private: rsa.RSAPrivateKey) -> bytes:
    aes_key, bound = split_unwrapped(unwrap(block, transport_private))
    assert bound == block.spki_sha256
    return aes_key


def flip(data: bytes, index: int = 0) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


# -- round trip ---------------------------------------------------------------------------


def test_seal_and_open_round_trip(
    subscriber: tuple[str, PrivateKey],
    transport: TransportKey,
    transport_private: rsa.RSAPrivateKey,
) -> None:
    key_type, key = subscriber
    block = seal(key, key_type, transport)
    assert block.key_type == key_type
    assert block.krs_key_id == transport.key_id
    assert block.oaep_hash == "sha256"
    assert block.spki_sha256 == spki_sha256(key.public_key())
    assert len(block.nonce) == 12
    assert private_der(key) not in block.ciphertext  # the key is not in the clear

    opened = open_block(block, aes_key_of(block, transport_private), key.public_key())
    assert type(opened) is type(key)
    assert private_der(opened) == private_der(key)


def test_the_wrapped_key_is_the_aes_key_then_the_spki_hash(
    p256: ec.EllipticCurvePrivateKey,
    transport: TransportKey,
    transport_private: rsa.RSAPrivateKey,
) -> None:
    block = seal(p256, "p256", transport)
    plain = unwrap(block, transport_private)
    assert len(plain) == AES_KEY_BYTES + SPKI_HASH_BYTES
    assert plain[AES_KEY_BYTES:] == hashlib.sha256(spki_der(p256)).digest()
    assert block.spki_sha256 == hashlib.sha256(spki_der(p256)).hexdigest()
    # The first half really is the AES key: it opens the block.
    assert private_der(open_block(block, plain[:AES_KEY_BYTES], p256.public_key())) == (
        private_der(p256)
    )


def test_each_seal_uses_a_fresh_aes_key_and_nonce(
    p256: ec.EllipticCurvePrivateKey,
    transport: TransportKey,
    transport_private: rsa.RSAPrivateKey,
) -> None:
    one, two = seal(p256, "p256", transport), seal(p256, "p256", transport)
    assert one.nonce != two.nonce
    assert one.ciphertext != two.ciphertext
    assert one.wrapped_key != two.wrapped_key
    assert aes_key_of(one, transport_private) != aes_key_of(two, transport_private)
    assert one.spki_sha256 == two.spki_sha256


@pytest.mark.parametrize("hash_name", sorted(OAEP_HASHES))
def test_every_oaep_hash_round_trips(
    hash_name: str,
    p256: ec.EllipticCurvePrivateKey,
    transport_private: rsa.RSAPrivateKey,
) -> None:
    transport = TransportKey(transport_private.public_key(), hash_name)
    block = seal(p256, "p256", transport)
    assert block.oaep_hash == hash_name
    opened = open_block(block, aes_key_of(block, transport_private), p256.public_key())
    assert private_der(opened) == private_der(p256)
    if hash_name != "sha256":  # the label hash is part of OAEP: another one fails
        with pytest.raises(ValueError):
            transport_private.decrypt(block.wrapped_key, oaep("sha256"))


# -- refusals -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sealed(
    p256: ec.EllipticCurvePrivateKey,
    transport: TransportKey,
    transport_private: rsa.RSAPrivateKey,
) -> tuple[RecoveryBlock, bytes]:
    block = seal(p256, "p256", transport)
    return block, aes_key_of(block, transport_private)


def test_a_wrong_aes_key_is_refused(
    sealed: tuple[RecoveryBlock, bytes], p256: ec.EllipticCurvePrivateKey
) -> None:
    block, aes_key = sealed
    with pytest.raises(EscrowError, match="does not decrypt"):
        open_block(block, flip(aes_key), p256.public_key())
    with pytest.raises(EscrowError, match="does not decrypt"):
        open_block(block, bytes(AES_KEY_BYTES), p256.public_key())
    for length in (0, 16, AES_KEY_BYTES - 1, AES_KEY_BYTES + 1):
        with pytest.raises(EscrowError, match="wrong length"):
            open_block(block, aes_key[:1] * length, p256.public_key())


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda b: {"ciphertext": flip(b.ciphertext)}, id="ciphertext-first-byte"),
        pytest.param(
            lambda b: {"ciphertext": flip(b.ciphertext, len(b.ciphertext) - 1)}, id="gcm-tag"
        ),
        pytest.param(lambda b: {"ciphertext": b.ciphertext[:-1]}, id="ciphertext-truncated"),
        pytest.param(lambda b: {"nonce": flip(b.nonce)}, id="nonce"),
        # The associated data: the key type is bound into it.
        pytest.param(lambda b: {"key_type": "rsa2048"}, id="associated-data-key-type"),
    ],
)
def test_tampering_is_refused(
    tamper: object, sealed: tuple[RecoveryBlock, bytes], p256: ec.EllipticCurvePrivateKey
) -> None:
    block, aes_key = sealed
    changed = dataclasses.replace(block, **tamper(block))  # type: ignore[operator]
    with pytest.raises(EscrowError, match="does not decrypt"):
        open_block(changed, aes_key, p256.public_key())
    # The untouched block still opens with the same AES key.
    assert private_der(open_block(block, aes_key, p256.public_key())) == private_der(p256)


def test_a_block_opened_for_another_certificate_is_refused(
    sealed: tuple[RecoveryBlock, bytes],
    rsa2048: rsa.RSAPrivateKey,
) -> None:
    block, aes_key = sealed
    with pytest.raises(EscrowError, match="belongs to another key"):
        open_block(block, aes_key, rsa2048.public_key())


def test_a_block_relabelled_for_another_certificate_is_refused(
    sealed: tuple[RecoveryBlock, bytes],
    rsa2048: rsa.RSAPrivateKey,
) -> None:
    # Moving the block to another certificate means rewriting its public-key hash;
    # that hash is the associated data, so the ciphertext no longer authenticates.
    block, aes_key = sealed
    moved = dataclasses.replace(block, spki_sha256=spki_sha256(rsa2048.public_key()))
    with pytest.raises(EscrowError, match="does not decrypt"):
        open_block(moved, aes_key, rsa2048.public_key())


def test_a_block_holding_another_key_than_it_names_is_refused(
    sealed: tuple[RecoveryBlock, bytes],
    p256: ec.EllipticCurvePrivateKey,
) -> None:
    # Whoever holds the AES key could re-encrypt another key under the right
    # associated data; the key that comes out is still checked against the certificate.
    block, aes_key = sealed
    other = ec.generate_private_key(ec.SECP256R1())
    ciphertext = AESGCM(aes_key).encrypt(
        block.nonce, private_der(other), _associated_data(block.spki_sha256, block.key_type)
    )
    swapped = dataclasses.replace(block, ciphertext=ciphertext)
    with pytest.raises(EscrowError, match="does not match its certificate"):
        open_block(swapped, aes_key, p256.public_key())


# -- split_unwrapped ----------------------------------------------------------------------


def test_split_unwrapped_lengths() -> None:
    plain = bytes(range(AES_KEY_BYTES + SPKI_HASH_BYTES))
    aes_key, bound = split_unwrapped(plain)
    assert aes_key == plain[:32] and len(aes_key) == AES_KEY_BYTES == 32
    assert bound == plain[32:].hex() and len(bound) == 2 * SPKI_HASH_BYTES == 64
    for length in (0, 32, 63, 65, 96):
        with pytest.raises(EscrowError, match="wrong length"):
            split_unwrapped(bytes(length))


# -- the transport key --------------------------------------------------------------------


def test_transport_key_refuses_rsa_2048_and_ec(
    rsa2048: rsa.RSAPrivateKey, p256: ec.EllipticCurvePrivateKey
) -> None:
    with pytest.raises(ConfigError, match="3072"):
        TransportKey(rsa2048.public_key(), "sha256")
    with pytest.raises(ConfigError, match="3072"):
        TransportKey(p256.public_key(), "sha256")  # type: ignore[arg-type]
    ec_pem = p256.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(ConfigError, match="RSA"):
        TransportKey.from_pem(ec_pem, "sha256")
    rsa_pem = rsa2048.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(ConfigError, match="3072"):
        TransportKey.from_pem(rsa_pem, "sha256")
    with pytest.raises(ConfigError, match="not a PEM public key"):
        TransportKey.from_pem(
            b"-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n", "sha256"
        )


@pytest.mark.parametrize("hash_name", ["md5", "SHA256", "sha3-256", ""])
def test_an_unknown_oaep_hash_is_a_config_error(
    hash_name: str, transport_private: rsa.RSAPrivateKey
) -> None:
    with pytest.raises(ConfigError, match="unknown OAEP hash"):
        TransportKey(transport_private.public_key(), hash_name)
    with pytest.raises(ConfigError, match="unknown OAEP hash"):
        oaep(hash_name)


def test_key_id_is_stable(transport: TransportKey, transport_private: rsa.RSAPrivateKey) -> None:
    assert transport.key_id == transport.key_id
    assert (
        transport.key_id
        == hashlib.sha256(
            transport_private.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        ).hexdigest()
    )
    # Pinned as PEM and read back: the same id, whatever the OAEP hash.
    again = TransportKey.from_pem(transport.to_pem(), "sha512")
    assert again.key_id == transport.key_id
    assert TransportKey(transport_private.public_key(), "sha1").key_id == transport.key_id
