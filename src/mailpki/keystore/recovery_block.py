"""Key recovery blocks: how a private key is escrowed before it is delivered.

For each private key:
  1. a fresh random AES-256 key encrypts the PKCS#8 key with AES-GCM; the associated
     data binds the ciphertext to the key's own public key (SubjectPublicKeyInfo hash),
     so a block moved to another certificate fails to open;
  2. that AES key, followed by the same public-key hash, is encrypted with RSA-OAEP to
     the Key Recovery Service's transport key. The KRS checks the hash against the
     certificate it is asked to recover before it releases the AES key, so it cannot
     be tricked into releasing one user's key under another user's name.

The Key Manager holds only the transport PUBLIC key: nothing here can open a block
without the AES key the KRS returns after an approved recovery.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mailpki.errors import ConfigError, EscrowError

BLOCK_VERSION = b"mailpki-key-recovery-block-v1"
AES_KEY_BYTES = 32
SPKI_HASH_BYTES = 32
OAEP_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def oaep(hash_name: str) -> padding.OAEP:
    """RSA-OAEP with MGF1 over the same hash and no label."""
    try:
        algorithm = OAEP_HASHES[hash_name]()
    except KeyError:
        raise ConfigError(
            f"unknown OAEP hash {hash_name!r}: choose one of {', '.join(OAEP_HASHES)}"
        ) from None
    return padding.OAEP(mgf=padding.MGF1(algorithm), algorithm=algorithm, label=None)


def spki_sha256(public_key: PublicKeyTypes) -> str:
    """SHA-256 (hex) of the DER SubjectPublicKeyInfo: what a block is bound to."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


@dataclass(frozen=True)
class TransportKey:
    """The Key Recovery Service's public transport key, as the Key Manager pins it."""

    public_key: rsa.RSAPublicKey
    oaep_hash: str

    def __post_init__(self) -> None:
        if not isinstance(self.public_key, rsa.RSAPublicKey) or self.public_key.key_size < 3072:
            raise ConfigError(
                "the recovery service's transport key must be RSA of 3072 bits or more"
            )
        oaep(self.oaep_hash)  # ConfigError for an unknown hash

    @property
    def key_id(self) -> str:
        return spki_sha256(self.public_key)

    @classmethod
    def from_pem(cls, pem: bytes, oaep_hash: str) -> TransportKey:
        try:
            key = serialization.load_pem_public_key(pem)
        except ValueError as exc:
            raise ConfigError(
                f"the recovery service's public key is not a PEM public key: {exc}"
            ) from None
        if not isinstance(key, rsa.RSAPublicKey):
            raise ConfigError("the recovery service's transport key must be an RSA key")
        return cls(key, oaep_hash)

    def to_pem(self) -> bytes:
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


@dataclass(frozen=True)
class RecoveryBlock:
    """One escrowed private key: the AES-GCM ciphertext and its wrapped AES key."""

    key_type: str
    spki_sha256: str
    krs_key_id: str
    oaep_hash: str
    wrapped_key: bytes
    nonce: bytes
    ciphertext: bytes


def _associated_data(spki_hash: str, key_type: str) -> bytes:
    return b"\x00".join((BLOCK_VERSION, bytes.fromhex(spki_hash), key_type.encode()))


def seal(private_key: PrivateKey, key_type: str, transport: TransportKey) -> RecoveryBlock:
    """Escrow `private_key`: the returned block is all the KRS and the store ever see."""
    spki_hash = spki_sha256(private_key.public_key())
    aes_key = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(12)
    pkcs8 = private_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    ciphertext = AESGCM(aes_key).encrypt(nonce, pkcs8, _associated_data(spki_hash, key_type))
    wrapped = transport.public_key.encrypt(
        aes_key + bytes.fromhex(spki_hash), oaep(transport.oaep_hash)
    )
    return RecoveryBlock(
        key_type=key_type,
        spki_sha256=spki_hash,
        krs_key_id=transport.key_id,
        oaep_hash=transport.oaep_hash,
        wrapped_key=wrapped,
        nonce=nonce,
        ciphertext=ciphertext,
    )


def split_unwrapped(plain: bytes) -> tuple[bytes, str]:
    """(AES key, bound public-key hash) from what RSA-OAEP decryption of a block gave."""
    if len(plain) != AES_KEY_BYTES + SPKI_HASH_BYTES:
        raise EscrowError("the wrapped key of the recovery block has the wrong length")
    return plain[:AES_KEY_BYTES], plain[AES_KEY_BYTES:].hex()


def open_block(
    block: RecoveryBlock, aes_key: bytes, expected_public_key: PublicKeyTypes
) -> PrivateKey:
    """The private key inside `block`, checked against the certificate's public key."""
    expected = spki_sha256(expected_public_key)
    if not hmac.compare_digest(expected, block.spki_sha256):
        raise EscrowError("the recovery block belongs to another key than this certificate's")
    if len(aes_key) != AES_KEY_BYTES:
        raise EscrowError("the recovered AES key has the wrong length")
    try:
        pkcs8 = AESGCM(aes_key).decrypt(
            block.nonce, block.ciphertext, _associated_data(block.spki_sha256, block.key_type)
        )
    except InvalidTag:
        raise EscrowError(
            "the recovery block does not decrypt: it was tampered with, or the key "
            "returned by the recovery service is not its key"
        ) from None
    # Authenticated by AES-GCM and checked against the certificate below: skip the
    # costly RSA consistency check (~40 ms) that guards against untrusted key files.
    key = serialization.load_der_private_key(
        pkcs8, password=None, unsafe_skip_rsa_key_validation=True
    )
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise EscrowError("the recovery block holds a key of an unsupported type")
    if not hmac.compare_digest(spki_sha256(key.public_key()), expected):
        raise EscrowError("the key inside the recovery block does not match its certificate")
    return key
