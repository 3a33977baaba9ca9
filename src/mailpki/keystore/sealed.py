"""Small secrets at rest in the database (the TOTP secrets of local operator accounts),
sealed with AES-256-GCM under a key derived from the instance secret.

The instance secret is what unlocks the CA key (the key files' passphrase or the token
PIN): whoever copies the database alone cannot read the sealed values. Each value has its
own random salt; the key is PBKDF2-HMAC-SHA256 (the key files' cost) of the instance
secret with that salt, derived once per salt and process. The associated data binds a
value to its row (a sealed secret moved to another account does not open).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from mailpki.errors import KeyStoreError
from mailpki.keystore.keys import PBKDF2_ITERATIONS

__all__ = ["Sealed", "SecretSealer"]

SALT_BYTES = 16
NONCE_BYTES = 12
_CACHE_LIMIT = 256  # derived keys kept per process (one per sealed value in use)


@dataclass(frozen=True)
class Sealed:
    """One sealed value: its salt, nonce and ciphertext (with the GCM tag)."""

    salt: bytes
    nonce: bytes
    ciphertext: bytes


class SecretSealer:
    """Seals and opens small secrets; `instance_secret` is called once, when first needed."""

    def __init__(
        self, instance_secret: Callable[[], bytes], *, iterations: int = PBKDF2_ITERATIONS
    ) -> None:
        self._instance_secret = instance_secret
        self._secret: bytes | None = None
        self._iterations = iterations
        self._keys: dict[bytes, AESGCM] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "SecretSealer(<key hidden>)"

    def _aead(self, salt: bytes) -> AESGCM:
        with self._lock:
            found = self._keys.get(salt)
            if found is not None:
                return found
            if self._secret is None:
                self._secret = self._instance_secret()
            secret = self._secret
        key = PBKDF2HMAC(
            algorithm=hashes.SHA256(), length=32, salt=salt, iterations=self._iterations
        ).derive(secret)
        aead = AESGCM(key)
        with self._lock:
            if len(self._keys) >= _CACHE_LIMIT:
                self._keys.clear()
            self._keys[salt] = aead
        return aead

    def seal(self, plaintext: bytes, bound_to: bytes) -> Sealed:
        salt, nonce = os.urandom(SALT_BYTES), os.urandom(NONCE_BYTES)
        return Sealed(salt, nonce, self._aead(salt).encrypt(nonce, plaintext, bound_to))

    def open(self, sealed: Sealed, bound_to: bytes) -> bytes:
        try:
            return self._aead(sealed.salt).decrypt(sealed.nonce, sealed.ciphertext, bound_to)
        except InvalidTag:
            raise KeyStoreError(
                "a sealed secret does not open: the instance's key passphrase (or token PIN) "
                "changed since it was sealed, or the database was tampered with"
            ) from None
