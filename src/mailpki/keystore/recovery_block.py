"""Key recovery blocks: how a private key is escrowed before it is delivered.

For each private key:
  1. a fresh random AES-256 key encrypts the PKCS#8 key with AES-GCM; the associated
     data binds the ciphertext to the key's own public key (SubjectPublicKeyInfo hash),
     so a block moved to another certificate fails to open;
  2. that AES key, followed by the same public-key hash, is wrapped to the Key Recovery
     Service's transport key: with RSA-OAEP alone (`rsa-oaep`, the first format), or
     with RSA-OAEP and ML-KEM-768 together (`hybrid-mlkem768`, see `hybrid_wrap.py`).
     The KRS checks the hash against the certificate it is asked to recover before it
     releases the AES key, so it cannot be tricked into releasing one user's key under
     another user's name.

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
from cryptography.hazmat.primitives.asymmetric import ec, mlkem, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mailpki.errors import ConfigError, EscrowError
from mailpki.keystore.hybrid_wrap import hybrid_wrap

# How the AES key of a block is wrapped; stored with the block (`wrap` column).
WRAP_RSA = "rsa-oaep"
WRAP_HYBRID = "hybrid-mlkem768"
WRAPS: tuple[str, ...] = (WRAP_RSA, WRAP_HYBRID)

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
    return hashlib.sha256(_spki_der(public_key)).hexdigest()


def _spki_der(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def generation_id(rsa_key: PublicKeyTypes, mlkem_key: mlkem.MLKEM768PublicKey | None) -> str:
    """The id of a transport key generation (hex): SHA-256 of the RSA key's DER
    SubjectPublicKeyInfo, followed by the ML-KEM key's when the generation has one.

    An RSA-only generation's id is therefore the plain `spki_sha256` of its key, as
    it always was; a hybrid one's id covers both keys, so pinning the id pins both.
    """
    if mlkem_key is None:
        return spki_sha256(rsa_key)
    return hashlib.sha256(_spki_der(rsa_key) + _spki_der(mlkem_key)).hexdigest()


@dataclass(frozen=True)
class TransportKey:
    """The Key Recovery Service's public transport key(s), as the Key Manager pins them.

    `wrap` says how new blocks are made: `rsa-oaep` uses the RSA key alone,
    `hybrid-mlkem768` needs the ML-KEM-768 key of the same key generation too.
    """

    public_key: rsa.RSAPublicKey
    oaep_hash: str
    mlkem_key: mlkem.MLKEM768PublicKey | None = None
    wrap: str = WRAP_RSA

    def __post_init__(self) -> None:
        if not isinstance(self.public_key, rsa.RSAPublicKey) or self.public_key.key_size < 3072:
            raise ConfigError(
                "the recovery service's transport key must be RSA of 3072 bits or more"
            )
        oaep(self.oaep_hash)  # ConfigError for an unknown hash
        if self.wrap not in WRAPS:
            raise ConfigError(
                f"unknown recovery.wrap {self.wrap!r}: choose one of {', '.join(WRAPS)}"
            )
        if self.wrap == WRAP_HYBRID and self.mlkem_key is None:
            raise ConfigError(
                "recovery.wrap is hybrid-mlkem768 but the recovery service's ML-KEM-768 key "
                "is not pinned: run 'mailpki recovery-service rotate-key' and then "
                "'mailpki keys rewrap' (or set recovery.wrap to rsa-oaep)"
            )

    @property
    def key_id(self) -> str:
        """The key generation's id (see `generation_id`): what an instance pins."""
        return generation_id(self.public_key, self.mlkem_key)

    @classmethod
    def from_pem(
        cls,
        pem: bytes,
        oaep_hash: str,
        *,
        mlkem_pem: bytes | None = None,
        wrap: str = WRAP_RSA,
    ) -> TransportKey:
        try:
            key = serialization.load_pem_public_key(pem)
            ml = None if mlkem_pem is None else serialization.load_pem_public_key(mlkem_pem)
        except ValueError as exc:
            raise ConfigError(
                f"the recovery service's public key is not a PEM public key: {exc}"
            ) from None
        if not isinstance(key, rsa.RSAPublicKey):
            raise ConfigError("the recovery service's transport key must be an RSA key")
        if ml is not None and not isinstance(ml, mlkem.MLKEM768PublicKey):
            raise ConfigError("the recovery service's ML-KEM key is not an ML-KEM-768 key")
        return cls(key, oaep_hash, ml, wrap)

    def to_pem(self) -> bytes:
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def mlkem_pem(self) -> bytes | None:
        if self.mlkem_key is None:
            return None
        return self.mlkem_key.public_bytes(
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
    wrap: str = WRAP_RSA


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
    return RecoveryBlock(
        key_type=key_type,
        spki_sha256=spki_hash,
        krs_key_id=transport.key_id,
        oaep_hash=transport.oaep_hash,
        wrapped_key=wrap_key(aes_key + bytes.fromhex(spki_hash), transport),
        nonce=nonce,
        ciphertext=ciphertext,
        wrap=transport.wrap,
    )


def wrap_key(payload: bytes, transport: TransportKey) -> bytes:
    """`payload` (AES key + bound public-key hash) wrapped as `transport.wrap` says."""
    if transport.wrap == WRAP_HYBRID:
        assert transport.mlkem_key is not None  # checked by TransportKey
        return hybrid_wrap(
            payload,
            rsa_key=transport.public_key,
            rsa_padding=oaep(transport.oaep_hash),
            mlkem_key=transport.mlkem_key,
            key_id=bytes.fromhex(transport.key_id),
        )
    return transport.public_key.encrypt(payload, oaep(transport.oaep_hash))


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
