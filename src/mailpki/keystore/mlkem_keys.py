"""ML-KEM-768 private keys at rest: encrypted files, whatever holds the RSA keys.

PKCS#11 tokens (SoftHSM2 2.6 and most HSMs in service today) cannot make or use
ML-KEM keys, so the Key Recovery Service keeps its ML-KEM-768 decapsulation key as an
encrypted file in its keys folder in every case, beside the token when the RSA
transport key is in one. The file holds the 64-byte seed of the key, sealed with
AES-256-GCM under a key derived with PBKDF2-HMAC-SHA-256 (600,000 iterations) from
the store's secret: the key-file passphrase, or the token PIN. Its label and public
key are the associated data, so a file cannot be swapped for another.

This is safe in the hybrid wrap because the ML-KEM key alone opens nothing: the RSA
half of every wrap still needs the (token) RSA key.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import mlkem
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from mailpki.base.files import write_atomically
from mailpki.errors import KeyStoreError
from mailpki.keystore.keys import PBKDF2_ITERATIONS, validate_label

FORMAT = "mailpki-mlkem768-key/1"
SUFFIX = ".mlkem.json"


class MLKEMKeyFiles:
    """ML-KEM-768 keys as encrypted files <dir>/<label>.mlkem.json (0600)."""

    def __init__(self, directory: Path, secret: bytes) -> None:
        if not secret:
            raise KeyStoreError("the ML-KEM key files need a non-empty passphrase or PIN")
        self.directory = Path(directory)
        self._secret = bytes(secret)

    def __repr__(self) -> str:  # never show the secret
        return f"MLKEMKeyFiles({str(self.directory)!r})"

    def path_for(self, label: str) -> Path:
        return self.directory / f"{validate_label(label)}{SUFFIX}"

    def exists(self, label: str) -> bool:
        return self.path_for(label).is_file()

    def generate(self, label: str) -> mlkem.MLKEM768PrivateKey:
        path = self.path_for(label)
        if path.exists():
            raise KeyStoreError(f"an ML-KEM key labelled {label!r} already exists")
        key = mlkem.MLKEM768PrivateKey.generate()
        salt = secrets.token_bytes(16)
        nonce = secrets.token_bytes(12)
        public = _public_der(key.public_key())
        sealed = AESGCM(self._kek(salt, PBKDF2_ITERATIONS)).encrypt(
            nonce, key.private_bytes_raw(), _aad(label, public)
        )
        document = {
            "format": FORMAT,
            "label": label,
            "kdf": "pbkdf2-hmac-sha256",
            "iterations": PBKDF2_ITERATIONS,
            "salt": salt.hex(),
            "nonce": nonce.hex(),
            "sealed_seed": base64.b64encode(sealed).decode(),
            "public_key": base64.b64encode(public).decode(),
        }
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomically(path, json.dumps(document, indent=1).encode(), private=True)
        return key

    def load(self, label: str) -> mlkem.MLKEM768PrivateKey:
        path = self.path_for(label)
        try:
            document = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise KeyStoreError(f"no ML-KEM key labelled {label!r} in {self.directory}") from None
        except (OSError, ValueError) as exc:
            raise KeyStoreError(f"cannot read the ML-KEM key file {path}: {exc}") from None
        try:
            if document["format"] != FORMAT or document["label"] != label:
                raise KeyStoreError(f"{path} is not the ML-KEM key {label!r}")
            iterations = int(document["iterations"])
            salt = bytes.fromhex(document["salt"])
            nonce = bytes.fromhex(document["nonce"])
            sealed = base64.b64decode(document["sealed_seed"], validate=True)
            public = base64.b64decode(document["public_key"], validate=True)
        except (KeyError, TypeError, ValueError):
            raise KeyStoreError(f"the ML-KEM key file {path} is damaged") from None
        try:
            seed = AESGCM(self._kek(salt, iterations)).decrypt(nonce, sealed, _aad(label, public))
        except InvalidTag:
            raise KeyStoreError(
                f"cannot unlock the ML-KEM key {label!r}: wrong passphrase/PIN or damaged file"
            ) from None
        key = mlkem.MLKEM768PrivateKey.from_seed_bytes(seed)
        if _public_der(key.public_key()) != public:
            raise KeyStoreError(f"the ML-KEM key file {path} does not match its public key")
        return key

    def remove(self, label: str) -> None:
        try:
            os.unlink(self.path_for(label))
        except FileNotFoundError:
            raise KeyStoreError(f"no ML-KEM key labelled {label!r}") from None

    def _kek(self, salt: bytes, iterations: int) -> bytes:
        if not 100_000 <= iterations <= 10_000_000:
            raise KeyStoreError("the ML-KEM key file names an implausible PBKDF2 cost")
        return PBKDF2HMAC(hashes.SHA256(), 32, salt, iterations).derive(self._secret)


def _public_der(key: mlkem.MLKEM768PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _aad(label: str, public: bytes) -> bytes:
    return FORMAT.encode() + b"\x00" + label.encode() + b"\x00" + public


def load_mlkem_public_pem(pem: bytes) -> mlkem.MLKEM768PublicKey:
    """An ML-KEM-768 public key from PEM; KeyStoreError for anything else."""
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise KeyStoreError(f"not a PEM public key: {exc}") from None
    if not isinstance(key, mlkem.MLKEM768PublicKey):
        raise KeyStoreError("the public key is not an ML-KEM-768 key")
    return key


def mlkem_public_pem(key: mlkem.MLKEM768PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
