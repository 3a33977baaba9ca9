"""The hybrid (RSA-OAEP + ML-KEM-768) wrap of a recovery block's AES key."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric import mlkem, rsa

from mailpki.errors import ConfigError, EscrowError
from mailpki.keystore.hybrid_wrap import (
    HYBRID_VERSION,
    MAGIC,
    hybrid_unwrap,
    is_hybrid,
    parse_hybrid,
)
from mailpki.keystore.recovery_block import (
    WRAP_HYBRID,
    TransportKey,
    generation_id,
    oaep,
    open_block,
    seal,
    spki_sha256,
    split_unwrapped,
)

RSA_KEY = rsa.generate_private_key(65537, 3072)
MLKEM_KEY = mlkem.MLKEM768PrivateKey.generate()
TRANSPORT = TransportKey(RSA_KEY.public_key(), "sha256", MLKEM_KEY.public_key(), WRAP_HYBRID)
USER_KEY = rsa.generate_private_key(65537, 2048)


def unwrap(wrapped: bytes) -> bytes:
    return hybrid_unwrap(
        parse_hybrid(wrapped),
        rsa_decrypt=lambda ct: RSA_KEY.decrypt(ct, oaep("sha256")),
        mlkem_key=MLKEM_KEY,
    )


def test_round_trip_opens_the_escrowed_key() -> None:
    block = seal(USER_KEY, "rsa2048", TRANSPORT)
    assert block.wrap == WRAP_HYBRID and is_hybrid(block.wrapped_key)
    assert block.krs_key_id == generation_id(RSA_KEY.public_key(), MLKEM_KEY.public_key())
    aes_key, bound = split_unwrapped(unwrap(block.wrapped_key))
    assert bound == spki_sha256(USER_KEY.public_key())
    key = open_block(block, aes_key, USER_KEY.public_key())
    assert key.private_numbers() == USER_KEY.private_numbers()  # type: ignore[union-attr]


def _parts(wrapped: bytes) -> tuple[int, int]:
    parsed = parse_hybrid(wrapped)
    rsa_start = len(parsed.header)
    return rsa_start, rsa_start + len(parsed.rsa_ciphertext)


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]


def test_tampered_rsa_part_is_refused() -> None:
    wrapped = seal(USER_KEY, "rsa2048", TRANSPORT).wrapped_key
    rsa_start, _ = _parts(wrapped)
    with pytest.raises(EscrowError, match="RSA part|does not open"):
        unwrap(flip(wrapped, rsa_start + 10))


def test_tampered_mlkem_part_is_refused() -> None:
    wrapped = seal(USER_KEY, "rsa2048", TRANSPORT).wrapped_key
    _, mlkem_start = _parts(wrapped)
    with pytest.raises(EscrowError, match="tampered"):
        unwrap(flip(wrapped, mlkem_start + 100))


def test_tampered_sealed_payload_and_header_are_refused() -> None:
    wrapped = seal(USER_KEY, "rsa2048", TRANSPORT).wrapped_key
    with pytest.raises(EscrowError):
        unwrap(flip(wrapped, len(wrapped) - 1))
    with pytest.raises(EscrowError):
        unwrap(flip(wrapped, 10))  # the key id in the header: bound by the KDF and AEAD


def test_ciphertexts_swapped_between_two_blocks_are_refused() -> None:
    one = seal(USER_KEY, "rsa2048", TRANSPORT).wrapped_key
    two = seal(USER_KEY, "rsa2048", TRANSPORT).wrapped_key
    _, mlkem_start = _parts(one)
    with pytest.raises(EscrowError, match="tampered"):
        unwrap(one[:mlkem_start] + two[mlkem_start:])  # RSA part of one, ML-KEM of two
    with pytest.raises(EscrowError, match="tampered"):
        unwrap(two[:mlkem_start] + one[mlkem_start:])


@pytest.mark.parametrize("length", [0, 3, 20, 500, 1500, 1590])
def test_truncated_wrap_gives_a_clear_error(length: int) -> None:
    wrapped = seal(USER_KEY, "rsa2048", TRANSPORT).wrapped_key
    with pytest.raises(EscrowError, match="truncated|neither"):
        unwrap(wrapped[:length])


def test_unknown_version_gives_a_clear_error() -> None:
    wrapped = seal(USER_KEY, "rsa2048", TRANSPORT).wrapped_key
    assert wrapped[:4] == MAGIC and wrapped[4] == HYBRID_VERSION
    with pytest.raises(EscrowError, match="format version 3"):
        parse_hybrid(wrapped[:4] + bytes([3]) + wrapped[5:])


def test_rsa_only_blocks_keep_the_first_format() -> None:
    transport = TransportKey(RSA_KEY.public_key(), "sha256")
    block = seal(USER_KEY, "rsa2048", transport)
    assert block.wrap == "rsa-oaep" and len(block.wrapped_key) == 384
    assert not is_hybrid(block.wrapped_key)
    aes_key, _ = split_unwrapped(RSA_KEY.decrypt(block.wrapped_key, oaep("sha256")))
    assert open_block(block, aes_key, USER_KEY.public_key())


def test_hybrid_without_an_mlkem_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="rotate-key"):
        TransportKey(RSA_KEY.public_key(), "sha256", None, WRAP_HYBRID)


def test_random_garbage_never_opens() -> None:
    for size in (1591, 1700, 4096):
        with pytest.raises(EscrowError):
            unwrap(MAGIC + bytes([2]) + os.urandom(size))
