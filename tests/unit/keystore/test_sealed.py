"""Secrets sealed under the instance secret: they open only with the same secret and
for the row they were sealed for."""

from __future__ import annotations

import pytest

from mailpki.errors import KeyStoreError
from mailpki.keystore.sealed import Sealed, SecretSealer


def sealer(secret: bytes = b"instance passphrase") -> SecretSealer:
    return SecretSealer(lambda: secret, iterations=1000)


def test_a_sealed_value_opens_for_its_row() -> None:
    box = sealer()
    sealed = box.seal(b"totp secret", b"row:jane")
    assert b"totp secret" not in sealed.ciphertext
    assert box.open(sealed, b"row:jane") == b"totp secret"
    assert sealer().open(sealed, b"row:jane") == b"totp secret"  # another process


def test_two_seals_of_one_value_differ() -> None:
    box = sealer()
    a, b = box.seal(b"x", b"r"), box.seal(b"x", b"r")
    assert a.salt != b.salt and a.nonce != b.nonce and a.ciphertext != b.ciphertext


@pytest.mark.parametrize(
    "change",
    ["other row", "other secret", "flipped bit"],
)
def test_a_sealed_value_does_not_open_elsewhere(change: str) -> None:
    sealed = sealer().seal(b"totp secret", b"row:jane")
    box, bound = sealer(), b"row:jane"
    if change == "other row":
        bound = b"row:john"
    elif change == "other secret":
        box = sealer(b"another passphrase")
    else:
        flipped = bytes([sealed.ciphertext[0] ^ 1]) + sealed.ciphertext[1:]
        sealed = Sealed(sealed.salt, sealed.nonce, flipped)
    with pytest.raises(KeyStoreError, match="does not open"):
        box.open(sealed, bound)


def test_the_instance_secret_is_read_once_and_never_shown() -> None:
    reads = []

    def secret() -> bytes:
        reads.append(1)
        return b"instance passphrase"

    box = SecretSealer(secret, iterations=1000)
    for _ in range(3):
        box.open(box.seal(b"v", b"r"), b"r")
    assert len(reads) == 1
    assert "passphrase" not in repr(box)
