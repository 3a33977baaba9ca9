"""The hybrid wrap of a recovery block's AES key: RSA-OAEP and ML-KEM-768 together.

A block's AES key must stay secret for decades, longer than RSA may resist a quantum
computer ("harvest now, decrypt later"). The hybrid wrap protects it with both:

  1. a random 32-byte secret `r` is encrypted with RSA-OAEP to the transport RSA key;
  2. ML-KEM-768 encapsulation to the transport ML-KEM key gives a shared secret `s`
     and its ciphertext;
  3. KEK = HKDF-SHA-256(ikm = r || s, salt = SHA-256(header || RSA ct || ML-KEM ct),
     info = LABEL): the key-encryption key depends on both secrets and is bound to
     both ciphertexts, the key generation and the format version;
  4. the payload (AES key + public-key hash of the escrowed key) is sealed with
     AES-256-GCM under the KEK (a single-use key, so a zero nonce), the header and
     both ciphertexts as associated data.

Whoever breaks RSA learns `r` but not `s`; whoever breaks ML-KEM learns `s` but not
`r`: either way HKDF's output stays unknown, and so does the payload.

The wrapped bytes (all integers big-endian):

    "MPKW"  version (1 byte, 2)  key id (32)  RSA ct length (2)  RSA ct
    ML-KEM-768 ct (1088)  AES-GCM(payload) (64 + 16)

A first-format (`rsa-oaep`) wrap is the bare RSA-OAEP ciphertext: exactly the RSA
modulus long (256, 384 or 512 bytes), never starting a longer string with "MPKW".
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import mlkem, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mailpki.errors import EscrowError

MAGIC = b"MPKW"
HYBRID_VERSION = 2
LABEL = b"mailpki key recovery block: hybrid RSA-OAEP + ML-KEM-768 KEK, v2"
MLKEM768_CIPHERTEXT_BYTES = 1088
RSA_SECRET_BYTES = 32
KEY_ID_BYTES = 32
RSA_CIPHERTEXT_SIZES = (256, 384, 512)  # RSA-2048/3072/4096: the first format's length
# The payload is always an AES-256 key and a SHA-256 hash; sealed, 16 bytes of tag more.
SEALED_BYTES = 32 + 32 + 16
_HEADER = struct.Struct(">4sB32sH")
_ZERO_NONCE = bytes(12)


@dataclass(frozen=True)
class HybridWrapped:
    """A parsed hybrid wrap: which key generation it is for and its three parts."""

    key_id: bytes
    rsa_ciphertext: bytes
    mlkem_ciphertext: bytes
    sealed: bytes
    header: bytes

    @property
    def key_id_hex(self) -> str:
        return self.key_id.hex()

    @property
    def bound(self) -> bytes:
        """What the KDF and the AEAD are bound to: header and both ciphertexts."""
        return self.header + self.rsa_ciphertext + self.mlkem_ciphertext


def is_hybrid(wrapped: bytes) -> bool:
    """True for a hybrid (or any later, versioned) wrap, False for a bare RSA-OAEP one."""
    return len(wrapped) not in RSA_CIPHERTEXT_SIZES and wrapped[:4] == MAGIC


def hybrid_wrap(
    payload: bytes,
    *,
    rsa_key: rsa.RSAPublicKey,
    rsa_padding: padding.OAEP,
    mlkem_key: mlkem.MLKEM768PublicKey,
    key_id: bytes,
) -> bytes:
    """`payload` wrapped to both keys of one transport key generation (`key_id`)."""
    if len(key_id) != KEY_ID_BYTES:
        raise EscrowError("a transport key id is 32 bytes (SHA-256)")
    secret = os.urandom(RSA_SECRET_BYTES)
    rsa_ciphertext = rsa_key.encrypt(secret, rsa_padding)
    shared, mlkem_ciphertext = mlkem_key.encapsulate()
    header = _HEADER.pack(MAGIC, HYBRID_VERSION, key_id, len(rsa_ciphertext))
    bound = header + rsa_ciphertext + mlkem_ciphertext
    sealed = AESGCM(_kek(secret, shared, bound)).encrypt(_ZERO_NONCE, payload, bound)
    return bound + sealed


def parse_hybrid(wrapped: bytes) -> HybridWrapped:
    """The parts of a hybrid wrap; EscrowError naming what is wrong with it."""
    if len(wrapped) < _HEADER.size:
        raise EscrowError("the wrapped key is truncated (shorter than its header)")
    magic, version, key_id, rsa_length = _HEADER.unpack_from(wrapped)
    if magic != MAGIC:
        raise EscrowError("the wrapped key is neither RSA-OAEP nor a mailpki hybrid wrap")
    if version != HYBRID_VERSION:
        raise EscrowError(
            f"the wrapped key has format version {version}, which this mailpki does not "
            f"know (it reads version {HYBRID_VERSION}): upgrade mailpki"
        )
    if rsa_length not in RSA_CIPHERTEXT_SIZES:
        raise EscrowError(f"the wrapped key names an RSA ciphertext of {rsa_length} bytes")
    rsa_end = _HEADER.size + rsa_length
    mlkem_end = rsa_end + MLKEM768_CIPHERTEXT_BYTES
    expected = mlkem_end + SEALED_BYTES
    if len(wrapped) < expected:
        raise EscrowError("the wrapped key is truncated")
    if len(wrapped) > expected:
        raise EscrowError("the wrapped key has bytes after its end")
    return HybridWrapped(
        key_id=key_id,
        rsa_ciphertext=wrapped[_HEADER.size : rsa_end],
        mlkem_ciphertext=wrapped[rsa_end:mlkem_end],
        sealed=wrapped[mlkem_end:],
        header=wrapped[: _HEADER.size],
    )


def hybrid_unwrap(
    parsed: HybridWrapped,
    *,
    rsa_decrypt: Callable[[bytes], bytes],
    mlkem_key: mlkem.MLKEM768PrivateKey,
) -> bytes:
    """The payload of a hybrid wrap. `rsa_decrypt` is the RSA-OAEP decryption (in a
    token, when the key lives in one). EscrowError if either part was tampered with."""
    try:
        secret = rsa_decrypt(parsed.rsa_ciphertext)
    except ValueError:
        raise EscrowError(
            "the RSA part of the wrapped key does not decrypt with this transport key"
        ) from None
    if len(secret) != RSA_SECRET_BYTES:
        raise EscrowError("the RSA part of the wrapped key has the wrong length")
    try:
        # ML-KEM rejects implicitly: a changed ciphertext gives another, random secret,
        # and the AEAD below fails.
        shared = mlkem_key.decapsulate(parsed.mlkem_ciphertext)
    except ValueError:
        raise EscrowError("the ML-KEM part of the wrapped key is malformed") from None
    try:
        return AESGCM(_kek(secret, shared, parsed.bound)).decrypt(
            _ZERO_NONCE, parsed.sealed, parsed.bound
        )
    except InvalidTag:
        raise EscrowError(
            "the hybrid wrapped key does not open: its RSA or ML-KEM part was tampered "
            "with, or parts of two blocks were mixed"
        ) from None


def _kek(secret: bytes, shared: bytes, bound: bytes) -> bytes:
    salt = hashlib.sha256(bound).digest()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=LABEL).derive(secret + shared)
